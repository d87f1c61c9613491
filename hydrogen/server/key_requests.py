"""Key management and tokens as requests: one definition each, for every transport.

``keys``, ``key_add``, ``key_revoke`` and ``key_rotate`` need the admin role;
``auth_token`` and ``auth_oneshot`` any role (the token is never more than the
caller); ``auth_refresh`` renews the token of a WebSocket connection in place.
An admin scoped to some printers manages only keys within that scope. Store edits
(a file lock, a slow hash) run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hydrogen.api import Call, Definition, HttpRoute, Param
from hydrogen.identity import Identity
from hydrogen.keyring import KeyRecord
from hydrogen.keystore import KeyStoreError
from hydrogen.protocol import ErrorCode, ProtocolError, Role, utc_iso
from hydrogen.server.credentials import Credentials
from hydrogen.tokens import ONESHOT_TTL_SECONDS, TokenError, narrowest

log = logging.getLogger(__name__)

_STORE_ERRORS = {
    "exists": ErrorCode.CONFLICT,
    "not_found": ErrorCode.NOT_FOUND,
    "invalid": ErrorCode.INVALID_MESSAGE,
    "broken": ErrorCode.SERVER_ERROR,
}


def key_requests(credentials: Credentials, printers: list[str]) -> list[Definition]:
    requests = _KeyRequests(credentials, printers)
    name = Param("name", str, required=True, max_length=64, doc="the key's name")
    scope = Param("printers", object, doc="printer names (default: all the caller's)")
    role = Param("role", str, max_length=16, doc="monitor, control or admin")
    ttl_max = credentials.config.auth.token_ttl_seconds
    return [
        Definition(
            "keys",
            requests.keys,
            role=Role.ADMIN,
            http=(HttpRoute("GET", "/api/keys"),),
            summary="every key: name, role, printers, source (never a secret)",
        ),
        Definition(
            "key_add",
            requests.add,
            role=Role.ADMIN,
            params=(name, Param("role", str, required=True, max_length=16), scope),
            http=(HttpRoute("POST", "/api/keys", 201),),
            summary="make a stored key; its secret is in this reply and nowhere else",
        ),
        Definition(
            "key_revoke",
            requests.revoke,
            role=Role.ADMIN,
            params=(name,),
            http=(HttpRoute("DELETE", "/api/keys/{name}"),),
            summary="delete a stored key; its connections, tokens and sessions end at once",
        ),
        Definition(
            "key_rotate",
            requests.rotate,
            role=Role.ADMIN,
            params=(name,),
            http=(HttpRoute("POST", "/api/keys/{name}/rotate"),),
            summary="a new secret for a stored key; everything the old one opened ends",
        ),
        Definition(
            "auth_token",
            requests.token,
            params=(role, scope, Param("ttl", int, minimum=1, maximum=ttl_max)),
            http=(HttpRoute("POST", "/api/auth/token"),),
            summary="a signed token (JWT) for the caller's key, optionally narrowed",
        ),
        Definition(
            "auth_oneshot",
            requests.oneshot,
            params=(role, scope, Param("ttl", int, minimum=1, maximum=ONESHOT_TTL_SECONDS)),
            http=(HttpRoute("POST", "/api/auth/oneshot"),),
            summary="a token good for one GET within a minute (a download link)",
        ),
        Definition(
            "auth_refresh",
            requests.refresh,
            params=(Param("token", str, required=True, max_length=4096),),
            reply="auth_status",
            http=(),
            summary="continue this connection with a new token of the same identity",
        ),
    ]


async def store_key(
    credentials: Credentials, name: str, role: Role, printers: frozenset[str] | None
) -> tuple[dict[str, Any], str]:
    """Make a stored key: its description and its secret (shown once, kept nowhere).

    The one way a key is made, whoever asks: ``key_add`` (an admin) and an approved
    application key request (:mod:`hydrogen.octoprint.appkeys`) both come here, so
    the store's name rules and the configuration's reserved names hold for both.
    """
    entry, secret = await _edit(
        credentials,
        credentials.store.add,
        name,
        role,
        printers,
        reserved=credentials.keyring.config_names(),
    )
    record = await asyncio.to_thread(credentials.keyring.by_name, entry.name)
    return _describe(record, entry.name), secret


async def _edit(credentials: Credentials, function: Any, *args: Any, **kwargs: Any) -> Any:
    """A key store edit in a worker thread (a file lock, a slow hash), then a fresh keyring."""
    try:
        result = await asyncio.to_thread(function, *args, **kwargs)
    except KeyStoreError as exc:
        raise ProtocolError(_STORE_ERRORS[exc.kind], exc.message) from None
    await asyncio.to_thread(credentials.keyring.refresh, force=True)
    return result


class _KeyRequests:
    def __init__(self, credentials: Credentials, printers: list[str]) -> None:
        self.credentials = credentials
        self.keyring = credentials.keyring
        self.store = credentials.store
        self.printers = printers

    # -- keys --------------------------------------------------------------------------
    async def keys(self, call: Call) -> dict[str, Any]:
        records = await asyncio.to_thread(self.keyring.records)
        return {"keys": [r.describe() for r in records if _within(call.identity, r.printers)]}

    async def add(self, call: Call) -> dict[str, Any]:
        role = _role(call.get("role"))
        printers = self._scope(call.identity, call.get("printers"), default_caller=True)
        if role > call.identity.role:
            raise _forbidden("a key cannot be given a role above the caller's")
        key, secret = await store_key(self.credentials, call["name"], role, printers)
        log.info("key %r added (role %s) by %r", key["name"], role.label, call.identity.name)
        return {"key": key, "secret": secret}

    async def revoke(self, call: Call) -> dict[str, Any]:
        self._manageable(call)
        entry = await _edit(self.credentials, self.store.revoke, call["name"])
        closed = await self.credentials.end_revoked()
        log.info("key %r revoked by %r", entry.name, call.identity.name)
        return {"revoked": entry.name, "closed_connections": closed}

    async def rotate(self, call: Call) -> dict[str, Any]:
        self._manageable(call)
        entry, secret = await _edit(self.credentials, self.store.rotate, call["name"])
        closed = await self.credentials.end_revoked()
        record = await asyncio.to_thread(self.keyring.by_name, entry.name)
        log.info("key %r rotated by %r", entry.name, call.identity.name)
        return {
            "key": _describe(record, entry.name),
            "secret": secret,
            "closed_connections": closed,
        }

    def _manageable(self, call: Call) -> None:
        record = self.keyring.by_name(call["name"])
        if record is None or not _within(call.identity, record.printers):
            raise ProtocolError(
                ErrorCode.NOT_FOUND, f"no stored key named {call['name']!r}", {"name": call["name"]}
            )
        if record.source == "config":
            raise ProtocolError(
                ErrorCode.CONFLICT,
                f"{record.name!r} is a key from the configuration; remove it there",
                {"name": record.name, "source": "config"},
            )

    # -- tokens ------------------------------------------------------------------------
    async def token(self, call: Call) -> dict[str, Any]:
        return self._issue(call, self.credentials.config.auth.token_ttl_seconds, oneshot=False)

    async def oneshot(self, call: Call) -> dict[str, Any]:
        return self._issue(call, ONESHOT_TTL_SECONDS, oneshot=True)

    def _issue(self, call: Call, default_ttl: int, *, oneshot: bool) -> dict[str, Any]:
        identity = call.identity
        if identity.by_token:
            raise _forbidden("a token cannot make tokens; ask with the key (or the dashboard)")
        if identity.via == "internal" or not identity.name:
            raise _forbidden("only a named key can have tokens")
        role = _role(call.get("role")) if call.get("role") is not None else identity.role
        if role > identity.role:
            raise _forbidden(f"a token cannot have a role above the key's ({identity.role.label})")
        printers = self._scope(identity, call.get("printers"), default_caller=True)
        ttl = call.get("ttl", default_ttl)
        token, claims = self.credentials.tokens.issue(
            identity, role=role, printers=printers, ttl=ttl, oneshot=oneshot
        )
        reply: dict[str, Any] = {
            "token": token,
            "token_type": "Bearer",
            "name": claims.name,
            "role": role.label,
            "printers": sorted(printers) if printers is not None else None,
            "expires_at": utc_iso(claims.expires_at),
            "expires_in": ttl,
        }
        if oneshot:
            reply["use"] = "oneshot"
        return reply

    async def refresh(self, call: Call) -> dict[str, Any]:
        login = self.credentials.logins.get(call.session.id) if call.session else None
        if login is None or login.expires_at is None:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                "this connection was not opened with a token; there is nothing to refresh",
            )
        try:
            fresh, claims = self.credentials.tokens.verify(call["token"])
        except TokenError as exc:
            raise ProtocolError(
                ErrorCode.AUTH_FAILED, f"the new token is not valid ({exc.reason})"
            ) from None
        current = login.identity
        if (fresh.name, fresh.role, fresh.printers) != (
            current.name,
            current.role,
            current.printers,
        ):
            raise _forbidden(
                "a refresh continues the same identity: same key, role and printers",
                name=current.name,
            )
        login.session.identity = Identity(
            fresh.role, current.via, fresh.name, fresh.printers, fresh.generation
        )
        login.expires_at = float(claims.expires_at)
        login.changed.set()
        return {
            "status": "refreshed",
            "expires_at": utc_iso(claims.expires_at),
            "expires_in": max(0, round(claims.expires_at - time.time())),
        }

    # -- scopes ------------------------------------------------------------------------
    def _scope(
        self, caller: Identity, value: Any, *, default_caller: bool
    ) -> frozenset[str] | None:
        """The printers asked for, checked: each exists and is within the caller's scope."""
        if value is None:
            return caller.printers if default_caller else None
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                "'printers' must be a list of printer names",
                {"member": "printers"},
            )
        for name in value:
            if name not in self.printers or not caller.sees(name):
                raise ProtocolError(
                    ErrorCode.NOT_FOUND, f"no printer named {name!r}", {"printer": name}
                )
        return narrowest(caller.printers, frozenset(value))


def _within(caller: Identity, printers: frozenset[str] | None) -> bool:
    """Is a key with ``printers`` no broader than the caller (who may then manage it)?"""
    if caller.printers is None:
        return True
    return printers is not None and printers <= caller.printers


def _role(value: Any) -> Role:
    try:
        return Role.parse(str(value))
    except ValueError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, str(exc), {"member": "role"}) from None


def _forbidden(message: str, **details: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.FORBIDDEN, message, details)


def _describe(record: KeyRecord | None, name: str) -> dict[str, Any]:
    return record.describe() if record is not None else {"name": name}
