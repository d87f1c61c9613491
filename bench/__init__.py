"""Benchmarks for the Hydrogen gateway (run them as scripts; see ``fanout.py``)."""
