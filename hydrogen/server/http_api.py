"""The HTTP transport of the one dispatch: routes built from the request definitions.

Every definition that declares an :class:`~hydrogen.api.HttpRoute` becomes an
aiohttp route here. Members come from the path (``{printer}``), the query string
and a JSON object body, in that order of precedence; the payload is the JSON
body of the answer, and a refusal is the protocol's error object with the HTTP
status of its code (one table, :data:`STATUS_FOR`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from hydrogen.api import Api, Definition, HttpRoute
from hydrogen.protocol import ErrorCode, ProtocolError
from hydrogen.server import auth
from hydrogen.server.errors import json_error

#: The HTTP status of each error code, for every HTTP route built from a definition
#: (OctoPrint's API answers the same but for a few: hydrogen.octoprint.adapter).
STATUS_FOR: Mapping[ErrorCode, int] = {
    ErrorCode.INVALID_MESSAGE: 400,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNKNOWN_TYPE: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.UNAVAILABLE: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.SERVER_ERROR: 500,
    ErrorCode.PRINTER_ERROR: 502,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.TOO_MANY_CONNECTIONS: 503,
}

#: Bodies of requests with members are small JSON objects; uploads have their own routes.
MAX_BODY_BYTES = 64 * 1024

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: ProtocolError) -> web.Response:
    return json_error(STATUS_FOR.get(exc.code, 400), exc.code, exc.message, exc.details)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.method in ("GET", "HEAD", "DELETE") or not request.can_read_body:
        return {}
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"body larger than {MAX_BODY_BYTES} bytes",
            {"limit": MAX_BODY_BYTES},
        )
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "the body must be a JSON object")
    return body


def _handler(api: Api, routes: list[tuple[Definition, HttpRoute]]) -> RouteHandler:
    """One aiohttp handler for a method and path; several definitions share it by ``action``."""
    by_action = {route.action: (definition, route) for definition, route in routes}

    async def handle(request: web.Request) -> web.StreamResponse:
        await auth.prepare(request)  # a stored key's first slow hash, off the event loop
        identity = auth.authenticate(request)
        try:
            body = await _body(request)
            found = by_action.get(body.get("action") if None not in by_action else None)
            if found is None:
                actions = "|".join(f'"{a}"' for a in by_action if a)
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE,
                    f'body must be {{"action": {actions}}}',
                )
            definition, route = found
            members = {**body, **request.query, **request.match_info}
            payload = await api.call(
                definition,
                members,
                identity,
                from_text=True,
                transport="http",
                remote=request.remote,
            )
        except ProtocolError as exc:
            return error_response(exc)
        if route.status == 204 or payload is None:
            return web.Response(status=204)
        return web.json_response(payload, status=route.status, dumps=_dumps)

    return handle


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


def setup(app: web.Application, api: Api) -> None:
    """Add a route for every (method, path) the definitions declare, in definition order."""
    grouped: dict[tuple[str, str], list[tuple[Definition, HttpRoute]]] = defaultdict(list)
    for definition in api:
        for route in definition.http:
            grouped[(route.method, route.path)].append((definition, route))
    for (method, path), routes in grouped.items():
        app.router.add_route(method, path, _handler(api, routes))
