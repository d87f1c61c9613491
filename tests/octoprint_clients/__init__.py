"""Real OctoPrint client libraries, driven against a running gateway from a venv of their own."""
