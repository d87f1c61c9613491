"""Who is calling: keys and tokens from headers (and, for WebSocket upgrades, the URL
and the subprotocol list), else the dashboard's session cookie.

The one place a request's credential becomes an :class:`Identity`, for every
transport: the HTTP routes and the WebSocket handshake call :func:`authenticate` /
:func:`check`, the OctoPrint adapter calls :func:`identify_credential`. Keys are
looked up in the keyring (:mod:`hydrogen.keyring`: the config's keys compared in
constant time, stored keys by their slow hash behind a keyed cache), tokens are
checked by :mod:`hydrogen.tokens`. Wrong credentials count against the caller's
address (:class:`~hydrogen.server.limits.FailureLimiter`): past the limit it gets
``429`` with ``Retry-After``, and the log says so once per burst.

Browsers cannot set headers on a WebSocket, hence ``?key=``, ``?token=`` and the
``access_token.<jwt>`` subprotocol for upgrades; the access logger and the log
redaction mask them all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from hydrogen.identity import Identity
from hydrogen.protocol import ErrorCode, Role
from hydrogen.server import session
from hydrogen.server.credentials import Credentials, watch_ctx
from hydrogen.server.errors import ErrorResponse, json_error
from hydrogen.server.keys import CREDENTIALS, GATEWAY
from hydrogen.tokens import TokenError, looks_like_jwt

__all__ = [
    "Authenticated",
    "Identity",
    "auth_failed",
    "authenticate",
    "check",
    "identify",
    "identify_credential",
    "prepare",
    "presented_key",
    "require",
    "setup",
]

log = logging.getLogger(__name__)

#: The subprotocol prefix that carries a token for browsers (``access_token.<jwt>``).
TOKEN_SUBPROTOCOL_PREFIX = "access_token."
#: How to present a credential, told with every 401 (``details.expected``).
EXPECTED = "Authorization: Key <key>, X-Api-Key: <key> or Authorization: Bearer <token>"
EXPECTED_UPGRADE = EXPECTED + (
    " or ?key=<key>, ?token=<token> or the subprotocol access_token.<token>"
)
_TOKEN_VIAS = frozenset({"token", "token_query", "token_subprotocol", "oneshot"})
#: Every reason an authentication fails (the metric's label values; a bounded set).
FAILURE_REASONS = (
    "missing",
    "invalid_key",
    "invalid_token",
    "expired_token",
    "revoked",
    "used_token",
    "invalid_cookie",
    "rate_limited",
)
_MESSAGES = {
    "missing": "an API key is required",
    "invalid_key": "invalid API key",
    "invalid_token": "invalid token",
    "expired_token": "the token has expired",
    "revoked": "the token's key has been revoked or rotated",
    "used_token": "this one-shot token has already been used",
    "invalid_cookie": "the session has expired or is no longer valid; sign in again",
}


@dataclass(frozen=True, slots=True)
class Authenticated:
    identity: Identity
    #: Unix time the token expires (None for a key or a cookie).
    expires_at: float | None = None


def _offered(request: web.Request) -> list[str]:
    header = ",".join(request.headers.getall("Sec-WebSocket-Protocol", []))
    return [p.strip() for p in header.split(",") if p.strip()]


def presented_key(request: web.Request, *, allow_query: bool = False) -> tuple[str, str] | None:
    """The credential the request presents and how: ``(secret, via)``, or None.

    ``allow_query``: a WebSocket upgrade, where ``?key=``, ``?token=`` and the
    subprotocol are accepted. Elsewhere ``?token=`` is only a one-shot token on a GET.
    The first one found counts, in this order.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "key" and value.strip():
        return value.strip(), "header"
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "token"
    api_key = request.headers.get("X-Api-Key", "").strip()
    if api_key:
        return api_key, "header"
    if allow_query:
        if request.query.get("key"):
            return request.query["key"], "query"
        if request.query.get("token"):
            return request.query["token"], "token_query"
        for offered in _offered(request):
            if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX):
                return offered[len(TOKEN_SUBPROTOCOL_PREFIX) :], "token_subprotocol"
    elif request.method in ("GET", "HEAD") and request.query.get("token"):
        return request.query["token"], "oneshot"
    return None


def _credentials(app: web.Application) -> Credentials:
    return app[CREDENTIALS]


def _resolve(credentials: Credentials, secret: str, via: str) -> tuple[Authenticated | None, str]:
    """``(who, "")`` or ``(None, reason)``."""
    if via in _TOKEN_VIAS:
        try:
            identity, claims = credentials.tokens.verify(secret, oneshot=via == "oneshot")
        except TokenError as exc:
            reason = {"expired": "expired_token", "used": "used_token"}.get(exc.reason)
            return None, reason or ("revoked" if exc.reason == "revoked" else "invalid_token")
        return Authenticated(Identity(identity.role, via, *_rest(identity)), claims.expires_at), ""
    record = credentials.keyring.lookup(secret)
    if record is None:
        return None, "invalid_key"
    return Authenticated(record.identity(via)), ""


def _rest(identity: Identity) -> tuple[str, frozenset[str] | None, str]:
    return identity.name, identity.printers, identity.generation


def identify_credential(
    app: web.Application, secret: str, *, via: str = "header"
) -> Identity | None:
    """The identity a presented key or token (a JWT, not a one-shot one) grants, or None.

    For transports that find the credential themselves (the OctoPrint adapter's
    ``X-Api-Key``, later MQTT). Stable: it will keep this signature.
    """
    if not secret:
        return None
    credentials = _credentials(app)
    if looks_like_jwt(secret):
        found, _ = _resolve(credentials, secret, "token")
    else:
        found, _ = _resolve(credentials, secret, via)
    return found.identity if found is not None else None


async def prepare(request: web.Request, *, allow_query: bool = False) -> None:
    """Check a stored key's slow hash off the event loop before :func:`check` runs.

    :func:`check` is synchronous; after this it finds the key in the keyring's cache.
    """
    found = presented_key(request, allow_query=allow_query)
    credentials = request.app.get(CREDENTIALS)
    if found is None or credentials is None or found[1] in _TOKEN_VIAS:
        return
    if credentials.failures.retry_after(request.remote or ""):
        return
    await credentials.keyring.warm(found[0])


def check(request: web.Request, *, allow_query: bool = False) -> Authenticated:
    """The caller, or raise :class:`ErrorResponse` (401, or 429 for an address that
    has used up its failures). Counts and logs failures; no CSRF check (see
    :func:`authenticate`)."""
    credentials = _credentials(request.app)
    gateway = request.app[GATEWAY]
    ip = request.remote or ""
    found = presented_key(request, allow_query=allow_query)
    if found is None:
        identity = session.cookie_identity(request)
        if identity is not None:
            return Authenticated(identity)
        reason = "invalid_cookie" if session.has_cookie(request) else "missing"
        gateway.connections.auth_failures[reason] += 1
        raise ErrorResponse(auth_failed(request, allow_query=allow_query, reason=reason))
    wait = credentials.failures.retry_after(ip)
    if wait:
        gateway.connections.auth_failures["rate_limited"] += 1
        raise ErrorResponse(_too_many(wait))
    result, reason = _resolve(credentials, *found)
    if result is not None:
        return result
    note_failure(request, reason)
    raise ErrorResponse(auth_failed(request, allow_query=allow_query, reason=reason))


def retry_after(request: web.Request) -> float:
    """Seconds this address must wait after too many failed authentications (0: none).

    For transports that check credentials themselves (the OctoPrint adapter): the
    limit is per address, whichever door the guesses come through.
    """
    wait = _credentials(request.app).failures.retry_after(request.remote or "")
    if wait:
        request.app[GATEWAY].connections.auth_failures["rate_limited"] += 1
    return wait


def note_failure(request: web.Request, reason: str) -> None:
    """Count a failed authentication against its address; log once per burst."""
    credentials = _credentials(request.app)
    ip = request.remote or ""
    request.app[GATEWAY].connections.auth_failures[reason] += 1
    count = credentials.failures.fail(ip)
    if count == 1:
        log.info("authentication failed from %s (%s)", ip, reason)
    elif count == credentials.failures.limit:
        log.warning(
            "%d failed authentications from %s within %.0f s (last: %s); refusing it until"
            " the window ends",
            count,
            ip,
            credentials.failures.window,
            reason,
        )


def identify(request: web.Request, *, allow_query: bool = False) -> Identity | None:
    """The caller's identity, or None (no failure counted: for pages that only look)."""
    found = presented_key(request, allow_query=allow_query)
    if found is None:
        return session.cookie_identity(request)
    result, _ = _resolve(_credentials(request.app), *found)
    return result.identity if result is not None else None


def _too_many(wait: float) -> web.Response:
    return json_error(
        429,
        ErrorCode.RATE_LIMITED,
        "too many failed authentications from this address; try again later",
        {"retry_after": math.ceil(wait)},
        headers={"Retry-After": str(math.ceil(wait))},
    )


def auth_failed(
    request: web.Request, *, allow_query: bool = False, reason: str | None = None
) -> web.Response:
    if reason is None:
        if presented_key(request, allow_query=allow_query) is not None:
            reason = "invalid_key"
        elif session.has_cookie(request):
            reason = "invalid_cookie"
        else:
            reason = "missing"
    return json_error(
        401,
        ErrorCode.AUTH_FAILED,
        _MESSAGES.get(reason, "authentication failed"),
        {"expected": EXPECTED_UPGRADE if allow_query else EXPECTED},
        headers={"WWW-Authenticate": 'Key realm="hydrogen"'},
    )


def authenticate(request: web.Request) -> Identity:
    """The caller's identity, or raise a JSON 401/429 (or the cross-site refusal) response.

    What the identity may do is the dispatch's decision (:meth:`hydrogen.api.Api.call`);
    :func:`require` is for the few routes that are not requests (downloads, uploads).
    """
    identity = check(request).identity
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


def setup(app: web.Application) -> Credentials:
    """Keys, tokens and the failure limit for this app; the key store watcher runs with it."""
    credentials = Credentials(app[GATEWAY].config)
    app[CREDENTIALS] = credentials

    async def watch(_app: web.Application) -> AsyncIterator[None]:
        async for _ in watch_ctx(credentials):
            yield

    app.cleanup_ctx.append(watch)
    return credentials
