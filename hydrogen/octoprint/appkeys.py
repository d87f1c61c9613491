"""OctoPrint's application keys: an app asks for a key, a person approves, the app gets one.

Home Assistant, Cura and phone apps ask this way instead of having a key typed in:
``GET /plugin/appkeys/probe`` (204: the workflow exists), ``POST
/plugin/appkeys/request`` ``{"app": ..., "user": ...}`` (201, a token), then they poll
``GET /plugin/appkeys/request/<token>``: 202 while no one has decided, 200
``{"api_key": ...}`` once, after an approval, 404 after a denial or when the request
is unknown or expired.

The decision is a request of the one dispatch, ``appkey_decide`` (with
``appkey_requests`` to list what waits), for the admin role: approving creates a key,
and creating keys is an admin's (``key_add``, which the approval calls with the
approver's identity, so the key store's rules, the scope check and the audit are
those of any new key). The key is named after the app and the printer, has the
control role and is scoped to that one printer.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from hydrogen.api import Api, Call, Definition, HttpRoute, Param
from hydrogen.protocol import ErrorCode, ProtocolError, Role, utc_iso

#: How long an undecided request (or an approved key not yet fetched) is kept.
PENDING_SECONDS = 600.0
MAX_PENDING = 32
MAX_APP_CHARS = 64


@dataclass
class Pending:
    token: str
    app: str
    user: str | None
    printer: str
    remote: str
    asked_at: float
    decision: str | None = None
    secret: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "app": self.app,
            "user": self.user,
            "printer": self.printer,
            "remote": self.remote,
            "asked_at": utc_iso(self.asked_at),
            "text": f"{self.app} on {self.remote} asks for access to {self.printer}",
        }


def key_name(app: str, printer: str, token: str) -> str:
    """A key name the store accepts: letters, digits, '_', '-', '.', at most 64."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", app).strip("-._") or "app"
    return f"{slug[:32]}.{printer[:20]}.{token[:8]}"


class AppKeys:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.pending: dict[str, Pending] = {}

    def _expire(self, now: float) -> None:
        for token, entry in list(self.pending.items()):
            if now - entry.asked_at > PENDING_SECONDS:
                del self.pending[token]

    def ask(self, app: str, user: str | None, printer: str, remote: str) -> Pending:
        now = time.time()
        self._expire(now)
        while len(self.pending) >= MAX_PENDING:  # the oldest request gives way
            self.pending.pop(next(iter(self.pending)))
        entry = Pending(secrets.token_urlsafe(24), app, user, printer, remote, now)
        self.pending[entry.token] = entry
        return entry

    def poll(self, token: str, printer: str) -> Pending | None:
        """The request, if it is this printer's and still kept; a fetched or denied
        one is gone after this answer."""
        self._expire(time.time())
        entry = self.pending.get(token)
        if entry is None or entry.printer != printer:
            return None
        if entry.decision is not None:
            del self.pending[token]
        return entry

    def definitions(self) -> tuple[Definition, ...]:
        async def waiting(call: Call) -> dict[str, Any]:
            self._expire(time.time())
            return {
                "requests": [
                    e.describe()
                    for e in self.pending.values()
                    if e.decision is None and call.identity.sees(e.printer)
                ]
            }

        async def decide(call: Call) -> dict[str, Any]:
            self._expire(time.time())
            entry = self.pending.get(call["token"])
            if entry is None or entry.decision is not None or not call.identity.sees(entry.printer):
                raise ProtocolError(
                    ErrorCode.NOT_FOUND, "no application key request with that token", {}
                )
            answer = {"token": entry.token, "app": entry.app, "printer": entry.printer}
            if not call["approve"]:
                entry.decision = "denied"
                return {**answer, "decision": "denied"}
            name = key_name(entry.app, entry.printer, entry.token)
            added = await self.api.call(
                "key_add",
                {"name": name, "role": "control", "printers": [entry.printer]},
                call.identity,
            )
            assert added is not None
            entry.decision, entry.secret = "approved", added["secret"]
            return {**answer, "decision": "approved", "key": name}

        return (
            Definition(
                "appkey_requests",
                waiting,
                role=Role.ADMIN,
                http=(HttpRoute("GET", "/api/appkeys"),),
                summary="application key requests waiting for a decision (OctoPrint's app keys)",
            ),
            Definition(
                "appkey_decide",
                decide,
                role=Role.ADMIN,
                params=(
                    Param("token", str, required=True, max_length=64),
                    Param("approve", bool, required=True),
                ),
                http=(HttpRoute("POST", "/api/appkeys/{token}"),),
                summary="approve (a control key for that printer) or deny an app's request",
            ),
        )
