"""OctoPrint's application keys: an app asks for a key, a person approves, the app gets one.

Home Assistant, Cura and phone apps ask this way instead of having a key typed in:
``GET /plugin/appkeys/probe`` (204: the workflow exists), ``POST
/plugin/appkeys/request`` ``{"app": ..., "user": ...}`` (201, a token), then they poll
``GET /plugin/appkeys/request/<token>``: 202 while no one has decided, 200
``{"api_key": ...}`` once, after an approval, 404 after a denial or when the request
is unknown or expired.

A person decides on the dashboard: every waiting request is pushed on the topic
``printer/<name>/appkey`` (control role and above, that printer in scope) as an
``appkey_request`` frame, and decided with ``appkey_decide`` (``appkey_requests``
lists what waits). Two handles, so that seeing a request never lets anyone collect
its key: the app polls with its ``token``, which only the app ever learns; people
see and decide by the request's ``appkey``.

Who may approve: anyone who may control that printer, as OctoPrint lets a user
approve keys for themselves. The key made is never more than the approver: role
control, scoped to that one printer, made by :func:`hydrogen.server.key_requests.store_key`
(the key store's rules, as ``key_add``), and the decision is in the audit trail with
the approver's identity. A signed token cannot approve (it would turn an hour's
token into a key that does not expire), as it cannot make tokens.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from hydrogen.api import Call, Definition, HttpRoute, Param
from hydrogen.protocol import ErrorCode, ProtocolError, Push, Role, push, utc_iso
from hydrogen.server.credentials import Credentials
from hydrogen.server.key_requests import store_key

#: How long an undecided request (or an approved key not yet fetched) is kept.
PENDING_SECONDS = 600.0
MAX_PENDING = 32
#: Requests from one address waiting at once: a flood from one address pushes out
#: its own oldest request, not everyone else's.
MAX_PENDING_PER_REMOTE = 4
MAX_APP_CHARS = 64
#: The decision of a request whose key is being made.
DECIDING = "deciding"

#: Publishes a frame on a topic (the hub's ``publish``).
Publish = Callable[[str, dict[str, Any]], object]


def appkey_topic(printer: str) -> str:
    return f"printer/{printer}/appkey"


@dataclass
class Pending:
    #: The app's handle: it polls with it, and whoever has it collects the key.
    token: str
    #: The people's handle: shown on the dashboard, decided by.
    handle: str
    app: str
    user: str | None
    printer: str
    remote: str
    asked_at: float
    decision: str | None = None
    secret: str | None = None

    @property
    def state(self) -> str:
        return self.decision or "waiting"

    def describe(self) -> dict[str, Any]:
        return {
            "appkey": self.handle,
            "app": self.app,
            "user": self.user,
            "printer": self.printer,
            "remote": self.remote,
            "asked_at": utc_iso(self.asked_at),
            "expires_at": utc_iso(self.asked_at + PENDING_SECONDS),
            "state": self.state,
            "text": f"{self.app} on {self.remote} asks for access to {self.printer}",
        }


def key_name(app: str, printer: str, handle: str) -> str:
    """A key name the store accepts: letters, digits, '_', '-', '.', at most 64."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", app).strip("-._") or "app"
    return f"{slug[:32]}.{printer[:20]}.{handle[:8]}"


def clean_text(value: str) -> str:
    """An app's or user's name as a person will read it: no control characters."""
    return "".join(c if c.isprintable() else " " for c in value).strip()


class UnknownPrinter(LookupError):
    pass


class AppKeys:
    def __init__(
        self,
        credentials: Credentials | None,
        printers: Collection[str],
        publish: Publish | None = None,
    ) -> None:
        self.credentials = credentials
        self.printers = frozenset(printers)
        self.publish = publish
        self.pending: dict[str, Pending] = {}

    # -- the app's side --------------------------------------------------------------------
    def ask(self, app: str, user: str | None, printer: str, remote: str) -> Pending:
        if printer not in self.printers:
            raise UnknownPrinter(printer)
        now = time.time()
        self._expire(now)
        mine = [e for e in self.pending.values() if e.remote == remote and e.decision is None]
        if len(mine) >= MAX_PENDING_PER_REMOTE:
            self._drop(mine[0])
        while len(self.pending) >= MAX_PENDING:  # the oldest request gives way
            self._drop(next(iter(self.pending.values())))
        entry = Pending(
            secrets.token_urlsafe(24),
            secrets.token_hex(6),
            clean_text(app)[:MAX_APP_CHARS] or "app",
            clean_text(user)[:MAX_APP_CHARS] if user else None,
            printer,
            remote,
            now,
        )
        self.pending[entry.token] = entry
        self._tell(entry)
        return entry

    def poll(self, token: str, printer: str) -> Pending | None:
        """The request, if it is this printer's and still kept; a fetched or denied
        one is gone after this answer."""
        self._expire(time.time())
        entry = self.pending.get(token)
        if entry is None or entry.printer != printer:
            return None
        if entry.decision in ("approved", "denied"):
            del self.pending[token]
        return entry

    # -- keeping -------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        for entry in list(self.pending.values()):
            if now - entry.asked_at > PENDING_SECONDS and entry.decision != DECIDING:
                self._drop(entry)

    def _drop(self, entry: Pending) -> None:
        del self.pending[entry.token]
        if entry.decision is None:
            entry.decision = "expired"
            self._tell(entry)

    def _tell(self, entry: Pending, **extra: Any) -> None:
        if self.publish is not None:
            topic = appkey_topic(entry.printer)
            self.publish(topic, push(Push.APPKEY_REQUEST, topic, {**entry.describe(), **extra}))

    def _by_handle(self, handle: str, call: Call) -> Pending:
        self._expire(time.time())
        for entry in self.pending.values():
            if entry.handle == handle and entry.decision is None:
                if call.identity.sees(entry.printer):
                    return entry
                break
        raise ProtocolError(
            ErrorCode.NOT_FOUND, "no application key request waits with that handle", {}
        )

    # -- the people's side -----------------------------------------------------------------
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
            entry = self._by_handle(call["appkey"], call)
            if call.identity.by_token:
                raise ProtocolError(
                    ErrorCode.FORBIDDEN,
                    "a token cannot approve application keys; sign in with a key",
                    {},
                )
            answer = {"appkey": entry.handle, "app": entry.app, "printer": entry.printer}
            if not call["approve"]:
                entry.decision = "denied"
                self._tell(entry, by=call.identity.name)
                return {**answer, "decision": "denied"}
            if self.credentials is None:
                raise ProtocolError(ErrorCode.SERVER_ERROR, "no key store on this gateway", {})
            entry.decision = DECIDING  # a second approver finds nothing waiting
            try:
                key, secret = await store_key(
                    self.credentials,
                    key_name(entry.app, entry.printer, entry.handle),
                    Role.CONTROL,
                    frozenset({entry.printer}),
                )
            except BaseException:
                entry.decision = None
                raise
            entry.decision, entry.secret = "approved", secret
            self._tell(entry, by=call.identity.name, key=key["name"])
            return {**answer, "decision": "approved", "key": key["name"]}

        return (
            Definition(
                "appkey_requests",
                waiting,
                role=Role.CONTROL,
                http=(HttpRoute("GET", "/api/appkeys"),),
                summary="application key requests waiting for a decision (OctoPrint's app keys)",
            ),
            Definition(
                "appkey_decide",
                decide,
                role=Role.CONTROL,
                params=(
                    Param("appkey", str, required=True, max_length=64, doc="the request's handle"),
                    Param("approve", bool, required=True),
                ),
                http=(HttpRoute("POST", "/api/appkeys/{appkey}"),),
                summary="approve (a control key for that printer alone) or deny an app's request",
            ),
        )
