"""Who is calling an OctoPrint path: the key as OctoPrint's clients send it.

``X-Api-Key`` (every client), ``Authorization: Bearer <key>`` (OctoPrint's form),
Hydrogen's own ``Authorization: Key <key>``, and ``?apikey=`` in the URL (OctoPrint
accepts it everywhere). The key (or a token) becomes an :class:`Identity` in the one
place every transport uses, :func:`hydrogen.server.auth.identify_credential`. A wrong
or missing key is OctoPrint's 403, not Hydrogen's 401: OctoPrint's clients take a
403 as "ask for a key again".
"""

from __future__ import annotations

import math

from aiohttp import web

from hydrogen.identity import Identity
from hydrogen.server import auth
from hydrogen.server.errors import ErrorResponse
from hydrogen.server.keys import CREDENTIALS

#: OctoPrint's words for a refused request (its clients show them).
FORBIDDEN = (
    "You don't have the permission to access the requested resource. "
    "It is either read-protected or not readable by the server."
)


def presented_key(request: web.Request) -> tuple[str, str] | None:
    """(key, how it came) or None."""
    api_key = request.headers.get("X-Api-Key", "").strip()
    if api_key:
        return api_key, "header"
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "key") and value.strip():
        return value.strip(), "header"
    query = request.query.get("apikey", "").strip()
    if query:
        return query, "query"
    return None


async def identify(request: web.Request) -> Identity | None:
    """The caller, or None. Wrong keys count against the address as on Hydrogen's own
    API, and an address past the limit is refused (429) whatever it presents: the
    OctoPrint paths are no side door for guessing keys."""
    found = presented_key(request)
    if found is None:
        return None
    credentials = request.app.get(CREDENTIALS)
    if credentials is not None:
        wait = auth.retry_after(request)
        if wait:
            raise ErrorResponse(
                web.json_response(
                    {"error": "Too many failed authentications from this address"},
                    status=429,
                    headers={"Retry-After": str(math.ceil(wait))},
                )
            )
        # a stored key's slow hash, off the event loop (as auth.prepare does for ours)
        await credentials.keyring.warm(found[0])
    identity = auth.identify_credential(request.app, found[0], via=found[1])
    if identity is None and credentials is not None:
        auth.note_failure(request, "invalid_key")
    return identity


def forbidden(message: str = FORBIDDEN) -> web.Response:
    return web.json_response({"error": message}, status=403)
