"""Prometheus collectors that read state the gateway already keeps (never sampling anew)."""
