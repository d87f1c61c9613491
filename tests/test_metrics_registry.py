"""The metrics registry: every collector built by name, each run isolated.

A collector that raises must not fail the scrape (node_exporter's pattern): the others'
families are still exported and ``hydrogen_scrape_collector_success{collector}`` says
which one failed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from hydrogen.gateway import Gateway
from hydrogen.metrics import registry as metrics_registry
from hydrogen.metrics.families import FamilySpec
from hydrogen.metrics.instruments import PrometheusInstruments
from hydrogen.metrics.jobs import JobCollector
from hydrogen.metrics.registry import COLLECTORS, ScrapeCollector, build_registry
from tests.conftest import MONITOR_KEY, make_config

AUTH = {"Authorization": f"Key {MONITOR_KEY}"}


def _by_collector(families: dict[str, object], name: str) -> dict[str, float]:
    family = families[name]
    return {s.labels["collector"]: s.value for s in family.samples}  # type: ignore[attr-defined]


async def _scrape(client) -> tuple[int, str]:
    response = await client.get("/metrics", headers=AUTH)
    return response.status, await response.text()


def _promtool_clean(text: str) -> None:
    if shutil.which("promtool") is None:
        return
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


async def test_every_collector_reports_success_and_duration(gateway_client):
    _, client = await gateway_client()
    status, text = await _scrape(client)
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    success = _by_collector(families, "hydrogen_scrape_collector_success")
    duration = _by_collector(families, "hydrogen_scrape_collector_duration_seconds")
    expected = {"process", "gateway", "host", "printers", "jobs", "connections"}
    assert expected - {"process"} <= set(success) <= expected
    assert all(value == 1.0 for value in success.values()), success
    assert set(duration) == set(success)
    assert all(value >= 0 for value in duration.values())
    _promtool_clean(text)


async def test_a_collector_that_raises_leaves_the_scrape_up(gateway_client, monkeypatch, caplog):
    def broken(self: JobCollector) -> Iterator[Metric]:
        family = GaugeMetricFamily("hydrogen_job_printing", "half-built", labels=["printer"])
        family.add_metric(["x"], 1)
        yield family  # a family already yielded is dropped with the rest of the run
        raise RuntimeError("job state went away")

    monkeypatch.setattr(JobCollector, "collect", broken)
    _, client = await gateway_client()
    for _ in range(2):  # the second scrape fails the same way and is still served
        status, text = await _scrape(client)
        assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    success = _by_collector(families, "hydrogen_scrape_collector_success")
    assert success["jobs"] == 0.0
    assert all(value == 1.0 for name, value in success.items() if name != "jobs")
    assert "jobs" in _by_collector(families, "hydrogen_scrape_collector_duration_seconds")
    # The other collectors' families are all there; the broken one's are not.
    assert {"hydrogen_build_info", "hydrogen_requests", "hydrogen_printer_state"} <= set(families)
    assert "hydrogen_connection_limit" in families
    assert not {"hydrogen_jobs", "hydrogen_job_printing", "hydrogen_job_progress_ratio"} & set(
        families
    )
    failures = [r for r in caplog.records if "metrics collector jobs failed" in r.getMessage()]
    assert len(failures) == 2
    assert failures[0].exc_info and not failures[1].exc_info
    _promtool_clean(text)


async def test_a_collector_added_by_name_is_isolated_too(gateway_client, monkeypatch):
    class Exploding(Collector):
        def collect(self) -> Iterator[Metric]:
            raise ZeroDivisionError

    monkeypatch.setitem(COLLECTORS, "exploding", lambda sources: Exploding())
    _, client = await gateway_client()
    status, text = await _scrape(client)
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    success = _by_collector(families, "hydrogen_scrape_collector_success")
    assert success["exploding"] == 0.0 and success["printers"] == 1.0
    assert "hydrogen_printer_connected" in families


def test_every_collector_declares_what_it_exports(tmp_path):
    """``describe`` (from each module's FamilySpec table) names every family a scrape
    has, with the same type, and a family two collectors would export is refused."""
    gateway = Gateway(make_config(tmp_path))
    registry = build_registry(gateway)
    (scrape,) = registry._collector_to_names  # one collector: the scrape collector
    declared = {f.name: f.type for f in scrape.describe()}
    for family in registry.collect():
        if family.name.startswith("process_"):
            continue  # prometheus-client's own collector
        assert declared.get(family.name) == family.type, family.name

    class Clash(Collector):
        def describe(self) -> list[Metric]:
            return [FamilySpec("hydrogen_build", "info", "again").family()]

        def collect(self) -> Iterator[Metric]:
            return iter(())

    with pytest.raises(ValueError, match="hydrogen_build is exported by both gateway and clash"):
        ScrapeCollector(
            {"gateway": metrics_registry.COLLECTORS["gateway"](_sources(gateway)), "clash": Clash()}
        )


def _sources(gateway: Gateway) -> metrics_registry.Sources:
    return metrics_registry.Sources(gateway, PrometheusInstruments())


def test_instruments_are_plugged_into_the_gateway_once(tmp_path):
    """Managers report through ``gateway.instruments``; every registry built on the same
    gateway exports the same observations."""
    gateway = Gateway(make_config(tmp_path))
    gateway.instruments.observe_command("mk3", 1.0)  # no registry yet: goes nowhere
    first = build_registry(gateway)
    instruments = gateway.instruments
    assert isinstance(instruments, PrometheusInstruments)
    instruments.observe_command("mk3", 0.2)
    second = build_registry(gateway)
    assert gateway.instruments is instruments
    families = {f.name: f for f in instruments.command_families()}
    count = [
        s
        for s in families["hydrogen_printer_command_duration_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert [(s.labels["printer"], s.value) for s in count] == [("mk3", 1.0)]
    assert first is not second
