"""The gateway service: hub, host sampler, request handlers and the status loop.

This is the product minus its network edge. ``hydrogen.server`` wraps it in
aiohttp; tests and the benchmark can drive it directly. It owns no sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hydrogen import __version__, protocol
from hydrogen.api import Api, Call, Definition, HttpRoute, Param
from hydrogen.api.definition import Connection
from hydrogen.config import Config
from hydrogen.dispatch import Dispatcher, Session
from hydrogen.host import HostSampler, HostSnapshot
from hydrogen.hub import MAX_PATTERNS, Hub, Subscriber
from hydrogen.identity import Identity
from hydrogen.protocol import ErrorCode, ProtocolError, Role
from hydrogen.scope import is_audit_topic, narrow_notification, narrow_status, topic_filter

log = logging.getLogger(__name__)

STATUS_TOPIC = "status"
NOTIFICATIONS_TOPIC = "notifications"


@dataclass
class ConnectionStats:
    active: int = 0
    total: int = 0
    refused_by_reason: Counter[str] = field(default_factory=Counter)
    #: Open WebSocket connections by the role of their identity.
    active_by_role: Counter[str] = field(default_factory=Counter)
    #: Failed authentications (HTTP and WebSocket) by a bounded reason.
    auth_failures: Counter[str] = field(default_factory=Counter)


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


#: Something that adds a member to the status frame (e.g. the printers summary).
StatusContributor = Callable[[], tuple[str, Any]]


class Instruments(Protocol):
    """What a manager bumps for metrics. Managers reach it as ``gateway.instruments`` and
    never import ``hydrogen.metrics``; ``build_registry`` plugs in the one it exports."""

    def observe_command(self, printer: str, seconds: float) -> None: ...


class NoInstruments:
    """Until a metrics registry is built: observations go nowhere."""

    def observe_command(self, printer: str, seconds: float) -> None:
        pass


class Gateway:
    def __init__(self, config: Config, *, sampler: HostSampler | None = None) -> None:
        self.config = config
        self.started_at = time.time()
        self.hub = Hub(queue_limit=config.limits.queue_limit, drop_limit=config.limits.drop_limit)
        self.api = Api()
        self.dispatcher = Dispatcher(self.api)
        self.sampler = sampler or HostSampler(slow_interval=config.status.slow_interval)
        self.connections = ConnectionStats()
        self.shutting_down = False
        self._contributors: list[StatusContributor] = []
        #: Counters and timings managers report (see :class:`Instruments`).
        self.instruments: Instruments = NoInstruments()
        self._status_task: asyncio.Task[None] | None = None
        self._services: list[Service] = []
        self._define_core_requests()

    # -- extension points used by printers and jobs -----------------------------
    def add_status_contributor(self, contributor: StatusContributor) -> None:
        self._contributors.append(contributor)

    def add_service(self, service: Service, *, first: bool = False) -> None:
        """Something started after the core and stopped before it (printers, jobs).

        ``first``: started before the others and stopped after them (the audit trail
        records what the others do while they start and stop).
        """
        if first:
            self._services.insert(0, service)
        else:
            self._services.append(service)

    def attach(self, identity: Identity) -> Subscriber:
        """A hub subscriber for a connection of ``identity``: it receives only the topics
        and the parts of frames that identity may see (:mod:`hydrogen.scope`)."""
        return self.hub.attach(topic_filter=topic_filter(identity), scope=identity.printers)

    def notify(self, level: str, event: str, message: str, **details: Any) -> None:
        """Publish a gateway-wide notification (printer connected, thermal error, ...)."""
        self.hub.publish(
            NOTIFICATIONS_TOPIC,
            protocol.push(
                protocol.Push.NOTIFICATION,
                NOTIFICATIONS_TOPIC,
                {
                    "level": level,
                    "event": event,
                    "message": message,
                    "details": details,
                    "time": protocol.utc_iso(time.time()),
                },
            ),
            narrow=narrow_notification,
        )

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        await self.sample_and_publish()
        self._status_task = asyncio.create_task(self._status_loop(), name="hydrogen-status")
        started: list[Service] = []
        try:
            for service in self._services:
                await service.start()
                started.append(service)
        except BaseException:
            # A failed start (say, an unreadable job database) must not leave the
            # services before it running: the caller will not call stop() for us.
            await self._stop_services(started)
            await self._stop_status()
            raise

    async def stop(self) -> None:
        await self._stop_services(self._services)
        await self._stop_status()

    async def _stop_services(self, services: list[Service]) -> None:
        for service in reversed(services):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", type(service).__name__)

    async def _stop_status(self) -> None:
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
            self._status_task = None

    def begin_shutdown(self) -> None:
        """Tell every subscriber we are going, with a last status frame."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.publish_status()

    # -- status -----------------------------------------------------------------
    async def _status_loop(self) -> None:
        interval = self.config.status.interval
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += interval
            if next_at < loop.time():  # we fell behind (suspended host): do not burst
                next_at = loop.time() + interval
            try:
                await self.sample_and_publish()
            except Exception:
                log.exception("status sample failed; will retry next interval")

    async def sample_and_publish(self) -> HostSnapshot:
        snapshot = await self.sampler.sample()
        self.publish_status()
        return snapshot

    def publish_status(self) -> None:
        # Scoped subscribers get a copy with only their printers; the rest share one text.
        self.hub.publish(STATUS_TOPIC, self.status_frame(), coalesce=True, narrow=narrow_status)

    def status_frame(self, identity: Identity | None = None) -> dict[str, Any]:
        return protocol.push(protocol.Push.STATUS, STATUS_TOPIC, self.status_payload(identity))

    def status_payload(self, identity: Identity | None = None) -> dict[str, Any]:
        """The status as plain data; ``identity`` narrows the printer parts to its scope."""
        snapshot = self.sampler.latest
        payload: dict[str, Any] = {
            "server_start_time": protocol.utc_iso(self.started_at),
            "server_version": __version__,
            "active_connections": self.connections.active,
            "total_connections": self.connections.total,
            "total_requests": self.dispatcher.stats.total_requests,
            "system": snapshot.system_dict() if snapshot else {},
            "status": snapshot.process_dict(
                running=not self.shutting_down, shutting_down=self.shutting_down
            )
            if snapshot
            else {"running": not self.shutting_down, "shutting_down": self.shutting_down},
            "host": snapshot.host_dict() if snapshot else {},
        }
        for contributor in self._contributors:
            name, value = contributor()
            payload[name] = value
        if identity is not None and identity.printers is not None:
            payload = narrow_status(payload, identity.printers)
        return payload

    # -- core requests ---------------------------------------------------------------
    def _define_core_requests(self) -> None:
        self.api.define(
            Definition(
                "status",
                self._on_status,
                topic=lambda _payload: STATUS_TOPIC,
                http=(HttpRoute("GET", "/api/system/info"),),
                summary="the latest status: host, process, connections, printers, jobs",
            ),
            Definition(
                "subscribe",
                self._on_subscribe,
                params=(Param("topics", object),),
                summary="add topic patterns to this connection",
            ),
            Definition(
                "unsubscribe",
                self._on_unsubscribe,
                params=(Param("topics", object),),
                reply="unsubscribed",
                summary="remove topic patterns from this connection",
            ),
            Definition(
                "ping",
                self._on_ping,
                params=(Param("payload", object), Param("timestamp", object)),
                reply="pong",
                summary="a round trip, echoing payload and timestamp",
            ),
        )

    async def _on_status(self, call: Call) -> dict[str, Any]:
        return self.status_payload(call.identity)

    async def _on_subscribe(self, call: Call) -> None:
        session = _session(call)
        topics = protocol.topic_list(call.get("topics"))
        if call.identity.role < Role.ADMIN and any(is_audit_topic(t) for t in topics):
            # (a wildcard like '#' is accepted: the hub leaves the audit topic out of it)
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                "the audit topic needs the admin role",
                {"required_role": Role.ADMIN.label, "role": call.identity.role.label},
            )
        if len(session.subscriber.patterns.union(topics)) > MAX_PATTERNS:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"at most {MAX_PATTERNS} subscriptions per connection",
                {"limit": MAX_PATTERNS, "subscriptions": len(session.subscriber.patterns)},
            )
        # The reply goes first, then the retained frames the new topics bring.
        active = sorted(session.subscriber.patterns.union(topics))
        frame = {"type": "subscribed", "topics": topics, "subscriptions": active}
        if call.request_id is not None:
            frame["id"] = call.request_id
        session.send(frame)
        self.hub.subscribe(session.subscriber, topics)
        return None

    async def _on_unsubscribe(self, call: Call) -> dict[str, Any]:
        topics = protocol.topic_list(call.get("topics"))
        active = self.hub.unsubscribe(_session(call).subscriber, topics)
        return {"topics": topics, "subscriptions": active}

    async def _on_ping(self, call: Call) -> dict[str, Any]:
        members: dict[str, Any] = {"server_time": protocol.utc_iso(time.time())}
        for name in ("payload", "timestamp"):
            if name in call.members:
                members[name] = call.members[name]
        return members

    def welcome_frame(self, session: Session) -> dict[str, Any]:
        limits = self.config.limits
        return protocol.welcome_frame(
            {
                "connection_id": session.id,
                "server_time": protocol.utc_iso(time.time()),
                "server_version": __version__,
                "protocol": protocol.SUBPROTOCOL,
                "protocol_version": protocol.PROTOCOL_VERSION,
                "role": session.role.label,
                "name": session.identity.name,
                "printers": None
                if session.identity.printers is None
                else sorted(session.identity.printers),
                "subscriptions": sorted(session.subscriber.patterns),
                "features": self.dispatcher.features(session.role),
                "limits": {
                    "max_frame_bytes": limits.max_frame_bytes,
                    "messages_per_second": limits.messages_per_second,
                    "message_burst": limits.message_burst,
                    "queue_limit": limits.queue_limit,
                    "drop_limit": limits.drop_limit,
                    "heartbeat_seconds": limits.heartbeat_seconds,
                },
            }
        )


def _session(call: Call) -> Connection:
    """The WebSocket session of a connection-bound request (subscribe, unsubscribe)."""
    if call.session is None:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"'{call.name}' needs a WebSocket connection"
        )
    return call.session
