"""The aiohttp application factory: one port for WebSocket, HTTP API and metrics."""

from __future__ import annotations

import asyncio
import gzip
import time
import weakref
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from hydrogen import __version__, octoprint
from hydrogen.audit import AuditTrail, audit_requests
from hydrogen.gateway import Gateway
from hydrogen.jobs.manager import JobManager
from hydrogen.jobs.requests import file_requests, job_requests
from hydrogen.metrics.registry import build_registry
from hydrogen.printers.manager import PrinterManager
from hydrogen.printers.requests import printer_requests
from hydrogen.protocol import ErrorCode, Role
from hydrogen.server import auth, dashboard, http_api, jobs_api
from hydrogen.server.audit_edge import AUDIT
from hydrogen.server.errors import ErrorResponse, error_middleware, json_error
from hydrogen.server.gate import (
    GATE,
    ConnectionGate,
    file_budget,
    gate_middleware,
    open_files_limit,
)
from hydrogen.server.key_requests import key_requests
from hydrogen.server.keys import GATEWAY, LIMITER, SOCKETS
from hydrogen.server.limits import ConnectionLimiter
from hydrogen.server.ws import close_all, is_websocket_upgrade, websocket_handler

REGISTRY = web.AppKey("registry", object)

#: Seconds writers get to flush the final status frame before sockets close.
SHUTDOWN_FLUSH_SECONDS = 0.5


async def index(request: web.Request) -> web.StreamResponse:
    if is_websocket_upgrade(request):
        return await websocket_handler(request)
    return await dashboard.index(request)


async def health(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    return web.json_response(
        {
            "status": "shutting_down" if gateway.shutting_down else "ok",
            "version": __version__,
            "uptime_seconds": round(time.time() - gateway.started_at, 3),
        },
        status=503 if gateway.shutting_down else 200,
    )


async def metrics(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    if not gateway.config.metrics.public:
        identity = auth.require(request, Role.MONITOR)
        if identity.printers is not None:
            # Every printer is a label in the scrape: a scoped identity would learn of
            # the others. Scrapers use an unscoped key (docs/protocol.md, scoping).
            raise ErrorResponse(
                json_error(
                    403,
                    ErrorCode.FORBIDDEN,
                    "the metrics name every printer; a key scoped to printers may not read them",
                    {"printers": sorted(identity.printers)},
                )
            )
    encoder, content_type = choose_encoder(request.headers.get("Accept"))
    body = encoder(request.app[REGISTRY])
    headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    await gateway.start()
    yield
    await gateway.stop()


async def _on_shutdown(app: web.Application) -> None:
    """Last status frame with shutting_down=true, then close every socket with 1001."""
    app[GATEWAY].begin_shutdown()
    # The set holds the connections whose handlers still run (ws.py leaves it on the way out).
    await asyncio.sleep(SHUTDOWN_FLUSH_SECONDS if app[SOCKETS] else 0)
    await close_all(app)


def create_app(
    gateway: Gateway, printers: PrinterManager | None = None, jobs: JobManager | None = None
) -> web.Application:
    # The gate's middleware first: it sees every request, refused ones included.
    app = web.Application(middlewares=[gate_middleware, error_middleware], client_max_size=1024**2)
    limits = gateway.config.limits
    budget = file_budget(limits, len(gateway.config.printers), open_files_limit())
    gate = ConnectionGate(budget, refused=gateway.connections.refused_by_reason)
    app[GATEWAY] = gateway
    app[GATE] = gate
    app[LIMITER] = ConnectionLimiter(budget.websockets, limits.max_connections_per_ip)
    app[SOCKETS] = weakref.WeakSet()
    # One registry (and gate) per app: a second app on the same gateway has its own figures.
    app[REGISTRY] = build_registry(gateway, printers=printers, jobs=jobs, gate=gate)
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/system/health", health)
    # The audit trail first: it records what the requests defined below do.
    app[AUDIT] = AuditTrail(gateway)
    gateway.api.define(*audit_requests(app[AUDIT]))
    # The requests of the managers this app serves, then every transport built from them.
    credentials = auth.setup(app)  # keys, tokens and the brute-force limit, before any route
    gateway.api.define(*key_requests(credentials, [p.name for p in gateway.config.printers]))
    if printers is not None:
        gateway.api.define(*printer_requests(printers))
    if jobs is not None:
        gateway.api.define(*job_requests(jobs), *file_requests(jobs))
    if printers is not None and jobs is not None:
        # before http_api: it defines the app-key requests the HTTP routes are built from
        octoprint.setup(app, gateway.api, jobs, [p.name for p in gateway.config.printers])
    http_api.setup(app, gateway.api)
    if jobs is not None:
        jobs_api.setup(app, jobs)
    dashboard.setup(app)
    app.cleanup_ctx.append(_gateway_ctx)
    app.on_shutdown.append(_on_shutdown)
    return app
