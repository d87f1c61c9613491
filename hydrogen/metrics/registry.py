"""One registry per gateway (no global state, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector

from hydrogen.gateway import Gateway
from hydrogen.metrics.gateway import GatewayCollector
from hydrogen.metrics.host import HostCollector


def build_registry(gateway: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    # prometheus-client's own process collector: standard process_* names that
    # every Grafana process dashboard already understands.
    ProcessCollector(registry=registry)
    registry.register(GatewayCollector(gateway))
    registry.register(HostCollector(gateway.sampler))
    for collector in gateway.metric_collectors:
        registry.register(collector)
    return registry
