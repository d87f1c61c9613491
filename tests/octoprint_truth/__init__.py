"""OctoPrint's answers, as shapes: what Hydrogen's OctoPrint adapter is diffed against."""
