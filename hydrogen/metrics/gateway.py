"""Gateway metrics: connections, requests, frames, errors.

A custom collector that reads the counters the gateway keeps anyway, so a
scrape costs no bookkeeping on the hot path and never disagrees with the
status frames.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hydrogen import __version__
from hydrogen.gateway import Gateway
from hydrogen.metrics.families import FamilySpec, describe
from hydrogen.protocol import Role
from hydrogen.server.gate import ConnectionGate

BUILD = FamilySpec("hydrogen_build", "info", "Version of the running gateway.")
START_TIME = FamilySpec("hydrogen_start_time_seconds", "gauge", "Unix time the gateway started.")
CONNECTIONS_ACTIVE = FamilySpec(
    "hydrogen_connections_active", "gauge", "Open WebSocket connections."
)
CONNECTIONS_BY_ROLE = FamilySpec(
    "hydrogen_connections_active_by_role",
    "gauge",
    "Open WebSocket connections by the role of the identity that opened them.",
    ("role",),
)
CONNECTIONS = FamilySpec(
    "hydrogen_connections", "counter", "WebSocket connections accepted since start."
)
AUTH_FAILURES = FamilySpec(
    "hydrogen_auth_failures",
    "counter",
    "Failed authentications (HTTP and WebSocket handshakes), by reason: missing, invalid_key,"
    " invalid_token, expired_token, revoked, used_token, invalid_cookie, rate_limited.",
    ("reason",),
)
CONNECTIONS_REFUSED = FamilySpec(
    "hydrogen_connections_refused",
    "counter",
    "WebSocket handshakes refused, by reason.",
    ("reason",),
)
REQUESTS = FamilySpec(
    "hydrogen_requests", "counter", "Client frames processed, by request type.", ("type",)
)
ERRORS = FamilySpec("hydrogen_errors", "counter", "Error replies sent, by error code.", ("code",))
FRAMES_PUBLISHED = FamilySpec(
    "hydrogen_frames_published", "counter", "Frames published to the hub."
)
FRAMES_SENT = FamilySpec("hydrogen_frames_sent", "counter", "Frames written to WebSocket clients.")
FRAMES_DROPPED = FamilySpec(
    "hydrogen_frames_dropped", "counter", "Frames dropped for clients that read too slowly."
)
SLOW_DISCONNECTS = FamilySpec(
    "hydrogen_slow_client_disconnects",
    "counter",
    "Clients disconnected because their backlog overflowed.",
)
STATUS_SAMPLE_DURATION = FamilySpec(
    "hydrogen_status_sample_duration_seconds", "gauge", "Seconds the last host sample took."
)

#: Every family :class:`GatewayCollector` exports, in exposition order.
FAMILIES: tuple[FamilySpec, ...] = (
    BUILD,
    START_TIME,
    CONNECTIONS_ACTIVE,
    CONNECTIONS_BY_ROLE,
    CONNECTIONS,
    CONNECTIONS_REFUSED,
    AUTH_FAILURES,
    REQUESTS,
    ERRORS,
    FRAMES_PUBLISHED,
    FRAMES_SENT,
    FRAMES_DROPPED,
    SLOW_DISCONNECTS,
    STATUS_SAMPLE_DURATION,
)

TCP_CONNECTIONS = FamilySpec(
    "hydrogen_tcp_connections",
    "gauge",
    "Open TCP connections (WebSocket, HTTP and waiting ones), by state.",
    ("state",),
)
TCP_ACCEPTED = FamilySpec(
    "hydrogen_tcp_connections_accepted",
    "counter",
    "TCP connections admitted by the gate since start.",
)
TCP_EVICTED = FamilySpec(
    "hydrogen_tcp_connections_evicted",
    "counter",
    "Waiting connections closed to make room for a newcomer from another address.",
)
CONNECTION_LIMIT = FamilySpec(
    "hydrogen_connection_limit",
    "gauge",
    "Connection caps in force, derived from the open files limit.",
    ("limit",),
)

#: Every family :class:`ConnectionGateCollector` exports, in exposition order.
GATE_FAMILIES: tuple[FamilySpec, ...] = (
    TCP_CONNECTIONS,
    TCP_ACCEPTED,
    TCP_EVICTED,
    CONNECTION_LIMIT,
)


def _single(spec: FamilySpec, value: float) -> Metric:
    family = spec.family()
    family.add_metric([], value)
    return family


def _by_label(spec: FamilySpec, counts: dict[str, int]) -> Metric:
    family = spec.family()
    for label, count in sorted(counts.items()):
        family.add_metric([label], count)
    return family


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def describe(self) -> Iterable[Metric]:
        return describe(FAMILIES)

    def collect(self) -> Iterator[Metric]:
        g = self._gateway
        info = BUILD.family()
        info.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield info
        yield _single(START_TIME, g.started_at)
        yield _single(CONNECTIONS_ACTIVE, g.connections.active)
        # Every role, 0 included: a dashboard's "admins connected" panel is never empty.
        by_role = {role.label: 0 for role in Role} | dict(g.connections.active_by_role)
        yield _by_label(CONNECTIONS_BY_ROLE, by_role)
        yield _single(CONNECTIONS, g.connections.total)
        yield _by_label(CONNECTIONS_REFUSED, g.connections.refused_by_reason)
        yield _by_label(AUTH_FAILURES, g.connections.auth_failures)
        yield _by_label(REQUESTS, g.dispatcher.stats.requests_by_type)
        yield _by_label(ERRORS, g.dispatcher.stats.errors_by_code)
        hub = g.hub.stats
        yield _single(FRAMES_PUBLISHED, hub.published)
        yield _single(FRAMES_SENT, hub.sent)
        yield _single(FRAMES_DROPPED, hub.dropped)
        yield _single(SLOW_DISCONNECTS, hub.disconnected_slow)
        snapshot = g.sampler.latest
        if snapshot is not None:
            yield _single(STATUS_SAMPLE_DURATION, snapshot.sample_duration_seconds)


class ConnectionGateCollector(Collector):
    """Every TCP connection the gate holds, and the caps derived from the file budget."""

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate

    def describe(self) -> Iterable[Metric]:
        return describe(GATE_FAMILIES)

    def collect(self) -> Iterator[Metric]:
        gate = self._gate
        budget = gate.budget
        open_ = TCP_CONNECTIONS.family()
        open_.add_metric(["waiting"], gate.waiting_total)
        open_.add_metric(["busy"], gate.open - gate.waiting_total)
        yield open_
        yield _single(TCP_ACCEPTED, gate.accepted)
        yield _single(TCP_EVICTED, gate.evicted)
        limits = CONNECTION_LIMIT.family()
        for name, value in (
            ("open_files", budget.open_files),
            ("reserved_files", budget.reserve),
            ("max_connections_total", budget.connections),
            ("max_connections", budget.websockets),
            ("max_pending_connections", budget.pending),
            ("max_pending_per_ip", budget.pending_per_ip),
        ):
            limits.add_metric([name], value)
        yield limits
