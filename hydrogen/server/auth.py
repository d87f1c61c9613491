"""Who is calling: API keys from headers (and, for WebSocket upgrades, the URL).

Browsers cannot set headers on a WebSocket, hence ``?key=`` for upgrades; the
access logger redacts it. Keys are compared in constant time by
:meth:`hydrogen.config.Config.role_for`.
"""

from __future__ import annotations

from aiohttp import web

from hydrogen.identity import Identity
from hydrogen.protocol import ErrorCode, Role
from hydrogen.server import session
from hydrogen.server.errors import ErrorResponse, json_error
from hydrogen.server.keys import GATEWAY

__all__ = ["Identity", "auth_failed", "authenticate", "identify", "presented_key", "require"]


def presented_key(request: web.Request, *, allow_query: bool = False) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "key" and value.strip():
        return value.strip(), "header"
    api_key = request.headers.get("X-Api-Key", "").strip()
    if api_key:
        return api_key, "header"
    if allow_query and request.query.get("key"):
        return request.query["key"], "query"
    return None


def identify(request: web.Request, *, allow_query: bool = False) -> Identity | None:
    found = presented_key(request, allow_query=allow_query)
    if found is None:
        # No key at all: the dashboard's session cookie (a presented key always wins).
        role = session.cookie_role(request)
        return Identity(role, "cookie") if role is not None else None
    entry = request.app[GATEWAY].config.key_for(found[0])
    return Identity(entry.role, found[1], entry.name) if entry is not None else None


def auth_failed(request: web.Request, *, allow_query: bool = False) -> web.Response:
    presented = presented_key(request, allow_query=allow_query) is not None
    if presented:
        message = "invalid API key"
    elif session.has_cookie(request):
        message = "the session has expired or is no longer valid; sign in again"
    else:
        message = "an API key is required"
    return json_error(
        401,
        ErrorCode.AUTH_FAILED,
        message,
        {
            "expected": "Authorization: Key <key> or X-Api-Key: <key>"
            + (" or ?key=<key>" if allow_query else "")
        },
        headers={"WWW-Authenticate": 'Key realm="hydrogen"'},
    )


def authenticate(request: web.Request) -> Identity:
    """The caller's identity, or raise a JSON 401 (or the cross-site refusal) response.

    What the identity may do is the dispatch's decision (:meth:`hydrogen.api.Api.call`);
    :func:`require` is for the few routes that are not requests (downloads, uploads).
    """
    identity = identify(request)
    if identity is None:
        raise ErrorResponse(auth_failed(request))
    if (
        identity.via == "cookie"
        and request.method not in session.SAFE_METHODS
        and not session.origin_allowed(request, allow_referer=True)
    ):
        # A browser sends the cookie with cross-site requests too (CSRF).
        raise ErrorResponse(session.origin_refused(request))
    return identity


def require(request: web.Request, role: Role = Role.MONITOR) -> Identity:
    """The caller's identity if it holds ``role``, or raise a JSON 401/403 response."""
    identity = authenticate(request)
    if identity.role < role:
        raise ErrorResponse(
            json_error(
                403,
                ErrorCode.FORBIDDEN,
                f"this needs the {role.label} role",
                {"required_role": role.label, "role": identity.role.label},
            )
        )
    return identity
