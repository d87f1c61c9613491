"""Hydrogen: a host-side gateway for 3D printers.

The package is layered (see docs/architecture.md): pure protocol cores
(`protocol`, `printers.marlin`), an asyncio hub that knows nothing of aiohttp,
and thin I/O edges (`server`, `printers.link`) around them.
"""

__version__ = "0.1.0"
