"""The one dispatch: every transport's request is validated, authorised and run here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hydrogen.api.definition import Call, Connection, Definition, Payload
from hydrogen.identity import Identity
from hydrogen.protocol import ErrorCode, ProtocolError, RequestId, Role

log = logging.getLogger(__name__)

#: Told of every request once it is answered: its call and the refusal, if any (the
#: audit trail records who did what, and who was refused, whatever the transport).
Observer = Callable[[Definition, Call, ProtocolError | None], None]


class Api:
    """Every request the gateway answers, by name.

    The managers that own a feature define its requests; the transports only look
    them up. The role rule, the printer scope and the parameter validation are
    checked in :meth:`call` and nowhere else.
    """

    def __init__(self) -> None:
        self._definitions: dict[str, Definition] = {}
        self._observers: list[Observer] = []

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def define(self, *definitions: Definition) -> None:
        for definition in definitions:
            if definition.name in self._definitions:
                raise ValueError(f"request type {definition.name!r} registered twice")
            self._definitions[definition.name] = definition

    def get(self, name: str) -> Definition | None:
        return self._definitions.get(name)

    def __iter__(self) -> Iterable[Definition]:
        return iter(list(self._definitions.values()))

    def names(self, role: Role | None = None, *, websocket: bool | None = None) -> list[str]:
        """Request names, optionally only those ``role`` may use (and a transport serves)."""
        return sorted(
            d.name
            for d in self._definitions.values()
            if (role is None or role >= d.role) and (websocket is None or d.websocket == websocket)
        )

    def authorize(self, definition: Definition, identity: Identity) -> None:
        if identity.role < definition.role:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"'{definition.name}' needs the {definition.role.label} role",
                {"required_role": definition.role.label, "role": identity.role.label},
            )

    async def call(
        self,
        name: str | Definition,
        members: Mapping[str, Any],
        identity: Identity,
        *,
        session: Connection | None = None,
        request_id: RequestId | None = None,
        from_text: bool = False,
        transport: str = "",
        remote: str | None = None,
    ) -> Payload | None:
        """Authorise, validate and run one request; raise :class:`ProtocolError` when refused."""
        definition = name if isinstance(name, Definition) else self._definitions.get(name)
        if definition is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown request type {name!r}")
        params: dict[str, Any] = {}
        try:
            try:
                self.authorize(definition, identity)
                params = definition.validate(members, from_text=from_text)
                if definition.printer is not None:
                    printer = params.get(definition.printer)
                    if isinstance(printer, str) and not identity.sees(printer):
                        # Outside the caller's scope is as if it did not exist.
                        raise ProtocolError(
                            ErrorCode.NOT_FOUND,
                            f"no printer named {printer!r}",
                            {"printer": printer},
                        )
            finally:
                # One Call, refused or not: a refusal is told to the observers too.
                call = Call(
                    definition.name,
                    params,
                    identity,
                    session=session,
                    request_id=request_id,
                    members=members,
                    transport=transport,
                    remote=remote,
                )
        except ProtocolError as exc:
            self._tell(definition, call, exc)
            raise
        if not self._observers:
            return await definition.handler(call)
        try:
            payload = await definition.handler(call)
        except ProtocolError as exc:
            self._tell(definition, call, exc)
            raise
        self._tell(definition, call, None)
        return payload

    def _tell(self, definition: Definition, call: Call, error: ProtocolError | None) -> None:
        """Refusals are told too (a forbidden attempt belongs in an audit trail)."""
        for observer in self._observers:
            try:
                observer(definition, call, error)
            except Exception:  # an observer's bug must not turn a done request into an error
                log.exception("request observer failed on %r", definition.name)
