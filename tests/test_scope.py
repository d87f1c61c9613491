"""A key scoped to printers never learns of another printer, by any path.

Two simulated printers, ``sim`` and ``secret-mk4``; identities scoped to ``sim``
(monitor, control and admin) and an unscoped admin whose view proves that the
other printer's frames, jobs, notifications and audit records really exist. Each
scoped identity subscribes to everything, asks every list and history over
WebSocket and HTTP, and the name ``secret-mk4`` must appear nowhere in what it
gets (except in the refusals of the requests that named it themselves).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hydrogen.config import ApiKey
from hydrogen.gateway import Gateway
from hydrogen.hub import Hub
from hydrogen.identity import Identity
from hydrogen.jobs.manager import JobManager
from hydrogen.printers.manager import PrinterManager
from hydrogen.printers.printer import PrinterState
from hydrogen.protocol import Role
from hydrogen.scope import narrow_notification, narrow_status, topic_filter
from hydrogen.server.app import create_app
from tests.conftest import connect, make_config, receive_json
from tests.test_printers import sim_printer, wait_state

OTHER = "secret-mk4"
ROOT = "scope-root-key-31f0"
KEYS = {
    "root": ApiKey(ROOT, Role.ADMIN, "root"),
    "viewer": ApiKey("scope-viewer-key-8a2c", Role.MONITOR, "viewer", frozenset({"sim"})),
    "contractor": ApiKey(
        "scope-contractor-key-77e1", Role.CONTROL, "contractor", frozenset({"sim"})
    ),
    "lead": ApiKey("scope-lead-key-c0d4", Role.ADMIN, "lead", frozenset({"sim"})),
}
SCOPED = ("viewer", "contractor", "lead")
TOPICS = [
    "#",
    "status",
    "notifications",
    "printer/+/state",
    "printer/+/job",
    "printer/+/temperature",
]


def h(name: str) -> dict[str, str]:
    return {"X-Api-Key": KEYS[name].key}


@pytest.fixture
async def farm(aiohttp_client: Any, tmp_path: Path) -> Any:
    config = dataclasses.replace(
        make_config(tmp_path, printers=(sim_printer(), sim_printer(OTHER))),
        keys=tuple(KEYS.values()),
    )
    gateway = Gateway(config)
    printers = PrinterManager(gateway)
    jobs = JobManager(gateway, printers)
    client = await aiohttp_client(create_app(gateway, printers, jobs))
    client.jobs = jobs
    for printer in printers.printers.values():
        await wait_state(printer, PrinterState.READY)
    async with asyncio.timeout(20):  # both charts have something to send a newcomer
        while not all(len(p.history) for p in printers.printers.values()):
            await asyncio.sleep(0.05)
    form = aiohttp.FormData()
    form.add_field("file", b"M105\nM114\n", filename="tiny.gcode")
    assert (await client.post("/api/files", data=form, headers=h("root"))).status == 201
    return client


async def ws_request(
    ws: Any, frame: dict[str, Any], seen: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Send ``frame`` and return its reply; the frames before the reply go to ``seen``."""
    await ws.send_json(frame)
    while True:
        got = await receive_json(ws)
        if got.get("id") == frame["id"]:
            return got
        if seen is not None:
            seen.append(got)


async def print_on(client: Any, printer: str) -> None:
    """root prints on ``printer`` until it completes: state, job, notification, audit."""
    response = await client.post(
        f"/api/printers/{printer}/job", json={"action": "start", "file": "tiny.gcode"},
        headers=h("root"),
    )  # fmt: skip
    assert response.status == 201, await response.text()
    async with asyncio.timeout(30):
        while client.jobs.job_payload(printer)["state"] != "completed":
            await asyncio.sleep(0.02)


async def frames_until(ws: Any, rid: str) -> list[dict[str, Any]]:
    """Every frame up to the reply to a ping sent now (all that was queued before it)."""
    await ws.send_json({"type": "ping", "id": rid})
    frames = [await receive_json(ws)]
    while frames[-1].get("id") != rid:
        frames.append(await receive_json(ws))
    return frames


@pytest.mark.parametrize("name", SCOPED)
async def test_a_scoped_identity_never_sees_another_printer(farm: Any, name: str) -> None:
    """Over WebSocket (topics, status, replies) and HTTP (lists, history, metrics)."""
    client = farm
    root = await connect(client, ROOT)
    await receive_json(root)
    await ws_request(root, {"type": "subscribe", "topics": TOPICS, "id": "sub"})
    ws = await connect(client, KEYS[name].key)
    welcome = await receive_json(ws)
    assert (welcome["name"], welcome["printers"]) == (name, ["sim"])
    seen = [welcome, await receive_json(ws)]  # the first status frame
    reply = await ws_request(ws, {"type": "subscribe", "topics": TOPICS, "id": "sub"}, seen)
    assert reply["type"] == "subscribed"
    await print_on(client, OTHER)
    await print_on(client, "sim")

    asked_about_it = {}
    for frame in (
        {"type": "status"},
        {"type": "printers"},
        {"type": "jobs"},
        {"type": "job_history"},
        {"type": "job_history", "printer": "sim"},
        {"type": "audit_query"},
    ):
        seen.append(await ws_request(ws, {**frame, "id": f"ask-{len(seen)}"}, seen))
    for frame in (
        {"type": "printer", "printer": OTHER},
        {"type": "job", "printer": OTHER},
        {"type": "job_history", "printer": OTHER},
        {"type": "temperature_history", "printer": OTHER},
        {"type": "job_start", "printer": OTHER, "file": "tiny.gcode"},
        {"type": "command", "printer": OTHER, "gcode": "M105"},
        {"type": "audit_query", "printer": OTHER},
    ):
        rid = f"other-{frame['type']}-{len(asked_about_it)}"
        asked_about_it[rid] = await ws_request(ws, {**frame, "id": rid}, seen)
    seen += await frames_until(ws, "barrier")
    seen = [f for f in seen if f.get("id") not in asked_about_it]

    for reply in asked_about_it.values():
        error = reply["error"]["code"]
        # unknown to it, or beyond its role; never an answer
        assert error in ("not_found", "forbidden"), reply
        if error == "not_found":
            assert reply["error"]["details"].get("printers", ["sim"]) == ["sim"]
    leaks = [f for f in seen if OTHER in json.dumps(f)]
    assert not leaks, leaks[:3]
    kinds = {f.get("type") for f in seen}
    # it did get the live view of its own printer, through the same subscriptions
    assert {"status", "printer_state", "job", "temperature_history", "notification"} <= kinds
    statuses = [f for f in seen if f.get("type") == "status"]
    assert all([p["printer"] for p in f["printers"]] == ["sim"] for f in statuses)
    assert all(list(f["jobs"]) == ["sim"] for f in statuses)
    history = next(f for f in seen if f.get("type") == "job_history")
    assert [j["printer"] for j in history["jobs"]] == ["sim"]
    if name == "lead":  # a scoped admin reads the trail, without the other printer's records
        audits = [f for f in seen if f.get("type") in ("audit", "audit_query")]
        assert audits and any(f.get("printer") == "sim" for f in audits if f["type"] == "audit")

    # and the unscoped admin did see all of it, over the same subscriptions
    everything = await frames_until(root, "barrier")
    assert any(OTHER in json.dumps(f) for f in everything if f.get("type") == "notification")
    assert any(f.get("type") == "audit" and f.get("printer") == OTHER for f in everything)
    await ws.close()
    await root.close()

    # HTTP: the lists and histories leave it out, a direct ask is a 404
    for path in ("/api/printers", "/api/jobs", "/api/jobs/history", "/api/system/info"):
        response = await client.get(path, headers=h(name))
        assert response.status == 200, path
        text = await response.text()
        assert OTHER not in text, path
        assert "sim" in text, path
    for path in (f"/api/printers/{OTHER}", f"/api/printers/{OTHER}/job"):
        assert (await client.get(path, headers=h(name))).status == 404, path
    audit = await client.get("/api/audit", headers=h(name))
    if name == "lead":
        assert audit.status == 200 and OTHER not in await audit.text()
    else:
        assert audit.status == 403
    # the metrics label every printer: a scoped key may not read them (an unscoped one may)
    metrics = await client.get("/metrics", headers=h(name))
    assert metrics.status == 403
    assert OTHER not in await metrics.text()
    assert OTHER in await (await client.get("/metrics", headers=h("root"))).text()


# -- the rules themselves, in process ---------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "topic", "allowed"),
    [
        (Identity(Role.MONITOR, printers=frozenset({"a"})), "printer/a/state", True),
        (Identity(Role.MONITOR, printers=frozenset({"a"})), "printer/b/state", False),
        (Identity(Role.MONITOR, printers=frozenset({"a"})), "printer/ab/job", False),
        (Identity(Role.MONITOR, printers=frozenset({"a"})), "status", True),
        (Identity(Role.MONITOR), "audit", False),
        (Identity(Role.CONTROL), "audit", False),
        (Identity(Role.ADMIN, printers=frozenset({"a"})), "audit", True),
        (Identity(Role.ADMIN, printers=frozenset()), "printer/a/state", False),
    ],
)
def test_topic_rules(identity: Identity, topic: str, allowed: bool) -> None:
    rule = topic_filter(identity)
    assert rule is not None and rule(topic) is allowed
    assert topic_filter(Identity(Role.ADMIN)) is None  # nothing to check: the fast path


def test_status_and_notifications_are_narrowed_per_scope() -> None:
    hub = Hub()
    unscoped = hub.attach()
    a = [hub.attach(scope=frozenset({"a"})) for _ in range(3)]
    none = hub.attach(scope=frozenset())
    for s in (unscoped, *a, none):
        hub.subscribe(s, ["status", "notifications"])
    status = {"type": "status", "topic": "status", "printers": [{"printer": "a"}, {"printer": "b"}],
              "jobs": {"a": {}, "b": {}}}  # fmt: skip
    calls = []

    def counting(frame: Any, scope: Any) -> Any:
        calls.append(scope)
        return narrow_status(frame, scope)

    assert hub.publish("status", status, coalesce=True, narrow=counting) == 5
    assert calls == [frozenset({"a"}), frozenset()] or sorted(map(len, calls)) == [0, 1]
    assert json.loads(unscoped.take()[0])["jobs"] == {"a": {}, "b": {}}
    texts = {s.take()[0] for s in a}
    assert len(texts) == 1  # one encoding shared by the subscribers of one scope
    assert json.loads(texts.pop())["printers"] == [{"printer": "a"}]
    assert json.loads(none.take()[0])["printers"] == []
    note = {"type": "notification", "details": {"printer": "b"}}
    hub.publish("notifications", note, narrow=narrow_notification)
    assert unscoped.take() and not a[0].take() and not none.take()
    several = {"type": "notification", "details": {"printers": ["a", "b"]}}
    hub.publish("notifications", several, narrow=narrow_notification)
    assert json.loads(a[0].take()[0])["details"]["printers"] == ["a"]
    assert not none.take()
