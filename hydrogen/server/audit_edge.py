"""The audit trail at the HTTP edge: routes that are not request definitions record here.

Request definitions are recorded by the dispatch's observer whatever their transport;
an upload or a dashboard sign-in is a route of its own and calls :func:`record`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hydrogen.audit import AuditTrail
from hydrogen.audit.record import OK
from hydrogen.identity import Identity

AUDIT = web.AppKey("audit", AuditTrail)

#: Paths of the OctoPrint-compatible API (slicers' uploads), told apart in the trail.
_OCTOPRINT_PATHS = ("/api/files/local", "/octoprint/")


def transport(request: web.Request) -> str:
    return "octoprint" if request.path.startswith(_OCTOPRINT_PATHS) else "http"


def record(
    request: web.Request,
    identity: Identity | None,
    action: str,
    *,
    outcome: str = OK,
    printer: str | None = None,
    target: Any = None,
    via: str | None = None,
) -> None:
    """Record ``action`` by ``identity`` (None: nobody signed in) from this request."""
    trail = request.app.get(AUDIT)
    if trail is not None:
        trail.record(
            identity,
            action,
            transport=via or transport(request),
            remote=request.remote,
            printer=printer,
            target=target,
            outcome=outcome,
        )
