"""HTTP endpoints: health, info, and the Prometheus exposition (checked by promtool)."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from hydrogen.config import MetricsConfig
from tests.conftest import CONTROL_KEY, MONITOR_KEY, connect, receive_json

AUTH = {"Authorization": f"Key {MONITOR_KEY}"}


async def test_health_needs_no_key_and_is_cheap(gateway_client):
    _, client = await gateway_client()
    response = await client.get("/api/system/health")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok" and body["uptime_seconds"] >= 0


async def test_info_needs_a_key_and_matches_the_status_frame(gateway_client):
    _, client = await gateway_client()
    assert (await client.get("/api/system/info")).status == 401
    response = await client.get("/api/system/info", headers={"X-Api-Key": MONITOR_KEY})
    assert response.status == 200
    info = await response.json()
    assert {"server_start_time", "active_connections", "system", "status", "host"} <= set(info)
    assert info["status"]["running"] is True


async def test_unknown_path_is_a_json_404(gateway_client):
    _, client = await gateway_client()
    response = await client.get("/api/nothing-here")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_metrics_need_a_key_unless_public(gateway_client):
    _, client = await gateway_client()
    response = await client.get("/metrics")
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "auth_failed"
    assert (
        await client.get("/metrics", headers={"Authorization": "Key wrong-key-xyz"})
    ).status == 401
    assert (await client.get("/metrics", headers=AUTH)).status == 200


async def test_metrics_public_switch(gateway_client):
    _, client = await gateway_client(metrics=MetricsConfig(public=True))
    assert (await client.get("/metrics")).status == 200


async def _families(client) -> dict:
    text = await (await client.get("/metrics", headers=AUTH)).text()
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def _value(family, **labels) -> float:
    for sample in family.samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()) and not sample.name.endswith(
            "_created"
        ):
            return sample.value
    raise AssertionError(f"no sample {labels} in {family.name}")


async def test_metrics_count_connections_requests_and_errors(gateway_client):
    _, client = await gateway_client()
    ws = await connect(client, CONTROL_KEY)
    await receive_json(ws)
    await ws.send_json({"type": "ping"})
    await ws.send_json({"type": "ping"})
    await ws.send_str("garbage")
    await ws.send_json({"type": "frobnicate"})
    for _ in range(10):
        frame = await receive_json(ws)
        if frame["type"] == "error" and frame["error"]["code"] == "unknown_type":
            break
    families, _ = await _families(client)
    assert _value(families["hydrogen_connections_active"]) == 1
    assert _value(families["hydrogen_connections"]) == 1
    assert _value(families["hydrogen_requests"], type="ping") == 2
    assert _value(families["hydrogen_requests"], type="invalid") == 1
    assert _value(families["hydrogen_errors"], code="invalid_message") == 1
    assert _value(families["hydrogen_errors"], code="unknown_type") == 1
    assert _value(families["hydrogen_frames_sent"]) >= 3
    from hydrogen import __version__

    assert _value(families["hydrogen_build_info"], version=__version__) == 1
    await ws.close()


async def test_host_metrics_come_from_the_cached_sample(gateway_client):
    gateway, client = await gateway_client()
    snapshot = gateway.sampler.latest
    families, _ = await _families(client)
    assert _value(families["hydrogen_host_memory_total_bytes"]) == snapshot.memory.total_bytes
    assert _value(families["hydrogen_host_sample_timestamp_seconds"]) == snapshot.taken_at
    # a scrape does not sample anew: two scrapes in a row report the same sample time
    families_again, _ = await _families(client)
    assert _value(families_again["hydrogen_host_sample_timestamp_seconds"]) in (
        snapshot.taken_at,
        gateway.sampler.latest.taken_at,
    )
    assert "process_resident_memory_bytes" in families


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
async def test_exposition_passes_promtool_without_warnings(gateway_client):
    _, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_str("garbage")  # make labelled series exist
    await receive_json(ws)
    _, text = await _families(client)
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""
    await ws.close()


async def test_openmetrics_and_gzip_when_asked(gateway_client):
    _, client = await gateway_client()
    response = await client.get(
        "/metrics",
        headers=AUTH | {"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await response.text()
    assert text.rstrip().endswith("# EOF")
    names = {f.name for f in parse_om(text)}
    assert "hydrogen_connections" in names
    raw = await client.get(
        "/metrics", headers=AUTH | {"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert raw.headers["Content-Encoding"] == "gzip"
    assert b"hydrogen_build_info" in gzip.decompress(await raw.read())


async def test_shutdown_sends_last_status_then_closes_1001(gateway_client):
    gateway, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    await client.server.runner.shutdown()  # what SIGTERM triggers in `hydrogen serve`
    last = None
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type.name != "TEXT":
            break
        frame = msg.json()
        if frame["type"] == "status":
            last = frame
    assert last is not None and last["status"]["shutting_down"] is True
    assert last["status"]["running"] is False
    assert ws.close_code == 1001
    assert gateway.shutting_down
