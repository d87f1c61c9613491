"""Gateway metrics: connections, requests, frames, errors.

A custom collector that reads the counters the gateway keeps anyway, so a
scrape costs no bookkeeping on the hot path and never disagrees with the
status frames.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from hydrogen import __version__
from hydrogen.gateway import Gateway
from hydrogen.server.gate import ConnectionGate


class GatewayCollector:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        g = self._gateway
        info = InfoMetricFamily("hydrogen_build", "Version of the running gateway.")
        info.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield info
        yield GaugeMetricFamily(
            "hydrogen_start_time_seconds", "Unix time the gateway started.", value=g.started_at
        )
        yield GaugeMetricFamily(
            "hydrogen_connections_active", "Open WebSocket connections.", value=g.connections.active
        )
        yield CounterMetricFamily(
            "hydrogen_connections",
            "WebSocket connections accepted since start.",
            value=g.connections.total,
        )
        refused = CounterMetricFamily(
            "hydrogen_connections_refused",
            "WebSocket handshakes refused, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(g.connections.refused_by_reason.items()):
            refused.add_metric([reason], count)
        yield refused
        requests = CounterMetricFamily(
            "hydrogen_requests", "Client frames processed, by request type.", labels=["type"]
        )
        for frame_type, count in sorted(g.dispatcher.stats.requests_by_type.items()):
            requests.add_metric([frame_type], count)
        yield requests
        errors = CounterMetricFamily(
            "hydrogen_errors", "Error replies sent, by error code.", labels=["code"]
        )
        for code, count in sorted(g.dispatcher.stats.errors_by_code.items()):
            errors.add_metric([code], count)
        yield errors
        hub = g.hub.stats
        yield CounterMetricFamily(
            "hydrogen_frames_published", "Frames published to the hub.", value=hub.published
        )
        yield CounterMetricFamily(
            "hydrogen_frames_sent", "Frames written to WebSocket clients.", value=hub.sent
        )
        yield CounterMetricFamily(
            "hydrogen_frames_dropped",
            "Frames dropped for clients that read too slowly.",
            value=hub.dropped,
        )
        yield CounterMetricFamily(
            "hydrogen_slow_client_disconnects",
            "Clients disconnected because their backlog overflowed.",
            value=hub.disconnected_slow,
        )
        snapshot = g.sampler.latest
        if snapshot is not None:
            yield GaugeMetricFamily(
                "hydrogen_status_sample_duration_seconds",
                "Seconds the last host sample took.",
                value=snapshot.sample_duration_seconds,
            )


class ConnectionGateCollector:
    """Every TCP connection the gate holds, and the caps derived from the file budget."""

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate

    def collect(self) -> Iterator[Metric]:
        gate = self._gate
        budget = gate.budget
        open_ = GaugeMetricFamily(
            "hydrogen_tcp_connections",
            "Open TCP connections (WebSocket, HTTP and waiting ones), by state.",
            labels=["state"],
        )
        open_.add_metric(["waiting"], gate.waiting_total)
        open_.add_metric(["busy"], gate.open - gate.waiting_total)
        yield open_
        yield CounterMetricFamily(
            "hydrogen_tcp_connections_accepted",
            "TCP connections admitted by the gate since start.",
            value=gate.accepted,
        )
        yield CounterMetricFamily(
            "hydrogen_tcp_connections_evicted",
            "Waiting connections closed to make room for a newcomer from another address.",
            value=gate.evicted,
        )
        limits = GaugeMetricFamily(
            "hydrogen_connection_limit",
            "Connection caps in force, derived from the open files limit.",
            labels=["limit"],
        )
        limits.add_metric(["open_files"], budget.open_files)
        limits.add_metric(["reserved_files"], budget.reserve)
        limits.add_metric(["max_connections_total"], budget.connections)
        limits.add_metric(["max_connections"], budget.websockets)
        limits.add_metric(["max_pending_connections"], budget.pending)
        limits.add_metric(["max_pending_per_ip"], budget.pending_per_ip)
        yield limits
