"""aiohttp typed application keys shared by the server modules."""

from __future__ import annotations

import weakref

from aiohttp import web

from hydrogen.gateway import Gateway
from hydrogen.server.credentials import Credentials
from hydrogen.server.limits import ConnectionLimiter

GATEWAY = web.AppKey("gateway", Gateway)
LIMITER = web.AppKey("limiter", ConnectionLimiter)
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
CREDENTIALS = web.AppKey("credentials", Credentials)
