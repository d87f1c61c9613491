"""The audit trail service: collects records, stores them, publishes them live, answers queries.

Every request whose definition needs the control role or more is recorded through
the dispatch's observer (:meth:`hydrogen.api.Api.observe`), whatever the transport,
refusals included (``forbidden``, ``not_found``, ...); reads that need a high role
(``audit_query``, ``keys``) are not actions and are not recorded. Routes that are
not request definitions (uploads, the dashboard's sign-in) call :meth:`AuditTrail.record`.

A record is published at once on the ``audit`` topic (admin identities only, see
:mod:`hydrogen.scope`) and stored by the worker thread of :class:`AuditStore`.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from hydrogen import protocol
from hydrogen.api import Call, Definition, HttpRoute, Param
from hydrogen.audit import inbox
from hydrogen.audit.record import OK, AuditRecord, clip
from hydrogen.audit.store import AuditStore
from hydrogen.gateway import Gateway
from hydrogen.identity import Identity
from hydrogen.protocol import ErrorCode, ProtocolError, Role
from hydrogen.scope import AUDIT_TOPIC, narrow_audit

log = logging.getLogger(__name__)

__all__ = ["AUDIT_TOPIC", "MAX_QUERY_LIMIT", "AuditTrail", "audit_requests"]

#: Requests that need a high role but change nothing.
READS = frozenset({"audit_query", "keys", "appkey_requests"})
#: The members that name what an action was about besides its printer, in order of
#: preference; nothing else of a request is ever kept (it might be a secret).
TARGET_MEMBERS = ("file", "job_id", "name", "appkey", "gcode")
#: Records kept in memory for a store that is not open yet (before start).
MAX_EARLY = 10_000
MAX_QUERY_LIMIT = 1000


class AuditTrail:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.store = AuditStore(
            gateway.config.state_dir / "audit.sqlite3", max_rows=gateway.config.audit.max_rows
        )
        self._early: list[AuditRecord] = []
        self.recorded = 0
        gateway.api.observe(self.observe)
        # Started before and stopped after the printers and jobs, whose actions it records.
        gateway.add_service(self, first=True)

    async def start(self) -> None:
        await self.store.open()
        early, self._early = self._early, []
        for record in early:
            self._append(record)
        await self.take_inbox()

    async def take_inbox(self) -> None:
        """Records the command line posted (``hydrogen keys``), into the trail."""
        try:
            posted = await asyncio.to_thread(inbox.take, self.gateway.config.state_dir)
        except OSError:
            log.exception("audit: could not read the inbox of the command line's records")
            return
        for record in posted:
            self._append(record)

    async def stop(self) -> None:
        await self.store.close()

    # -- collecting ----------------------------------------------------------------------
    def observe(self, definition: Definition, call: Call, error: ProtocolError | None) -> None:
        """The dispatch's observer: every action (control role and above), ok or refused."""
        if definition.role < Role.CONTROL or definition.name in READS:
            return
        source: Mapping[str, Any] = call.params or call.members  # refused before validation
        printer = source.get(definition.printer or "printer")
        target = next(
            (source[m] for m in TARGET_MEMBERS if isinstance(source.get(m), str | int)), None
        )
        transport = call.transport or (
            "websocket"
            if call.session is not None
            else "internal"
            if call.identity.via == "internal"
            else "http"
        )
        self.record(
            call.identity,
            definition.name,
            transport=transport,
            remote=call.remote,
            printer=printer if isinstance(printer, str) else None,
            target=target,
            outcome=OK if error is None else str(error.code),
        )

    def record(
        self,
        identity: Identity | None,
        action: str,
        *,
        transport: str,
        remote: str | None = None,
        printer: str | None = None,
        target: Any = None,
        outcome: str = OK,
    ) -> None:
        """Record one action; never waits, never raises. ``identity`` None: not signed in."""
        try:
            record = AuditRecord(
                time=time.time(),
                identity=identity.name if identity is not None else "",
                role=identity.role.label if identity is not None else "",
                transport=transport,
                action=action,
                outcome=outcome,
                remote=clip(remote),
                printer=clip(printer),
                target=clip(target),
            )
            if self.store.is_open:
                self._append(record)
            elif len(self._early) < MAX_EARLY:
                self._early.append(record)
        except Exception:  # the audit trail must never turn an action into an error
            log.exception("audit: could not record %r", action)

    def _append(self, record: AuditRecord) -> None:
        stored = self.store.append(record)
        self.recorded += 1
        if self.gateway.hub.has_subscribers(AUDIT_TOPIC):
            self.gateway.hub.publish(
                AUDIT_TOPIC,
                protocol.push(protocol.Push.AUDIT, AUDIT_TOPIC, stored.as_dict()),
                narrow=narrow_audit,
            )

    # -- reading -------------------------------------------------------------------------
    async def query(self, caller: Identity, **filters: Any) -> list[AuditRecord]:
        """Records newest first, only those about the printers ``caller`` may see."""
        await self.take_inbox()
        return await self.store.query(scope=caller.printers, **filters)


def parse_since(value: Any) -> float | None:
    """``since``: Unix seconds (a number, or its text) or an ISO 8601 time."""
    if value is None or value == "":
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            number = float(value)
        except ValueError:
            try:
                parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                number = None
            else:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=datetime.UTC)
                number = parsed.timestamp()
    if number is None or not math.isfinite(number) or not 0 <= number < 1e11:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            "'since' must be Unix seconds or an ISO 8601 time",
            {"member": "since"},
        )
    return number


def audit_requests(trail: AuditTrail) -> tuple[Definition, ...]:
    async def audit_query(call: Call) -> dict[str, Any]:
        limit = call["limit"]
        printer = call.get("printer")
        if printer is not None and not call.identity.sees(printer):
            # as the dispatch answers for a printer outside the scope; a printer no
            # longer configured (or misspelt) is not an error: its records may be kept
            raise ProtocolError(
                ErrorCode.NOT_FOUND, f"no printer named {printer!r}", {"printer": printer}
            )
        records = await trail.query(
            call.identity,
            since=parse_since(call.get("since")),
            identity=call.get("identity"),
            printer=printer,
            before=call.get("before"),
            limit=limit,
        )
        return {
            "records": [r.as_dict() for r in records],
            # the next (older) page: pass it as 'before' (null when this page was the last)
            "next_before": records[-1].seq if len(records) == limit else None,
        }

    return (
        Definition(
            "audit_query",
            audit_query,
            role=Role.ADMIN,
            params=(
                Param("since", object, doc="Unix seconds or an ISO 8601 time"),
                Param("identity", str, max_length=128, doc="an identity's name"),
                Param("printer", str, max_length=128, doc="a printer's name"),
                Param("before", int, minimum=1, maximum=2**62, doc="older than this seq"),
                Param("limit", int, minimum=1, maximum=MAX_QUERY_LIMIT, clamp=True, default=100),
            ),
            http=(HttpRoute("GET", "/api/audit"),),
            summary="the audit trail, newest first (admin)",
        ),
    )
