"""The audit trail: who did what, through a real gateway on a real socket and real SQLite.

Each test acts as a user would (WebSocket and HTTP requests, an upload, the
dashboard's sign-in form) and then reads the trail the way an administrator does
(``audit_query``, ``GET /api/audit``, the live ``audit`` topic).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hydrogen.audit import AuditRecord, AuditStore
from hydrogen.config import ApiKey
from hydrogen.gateway import Gateway
from hydrogen.jobs.manager import JobManager
from hydrogen.printers.manager import PrinterManager
from hydrogen.printers.printer import PrinterState
from hydrogen.protocol import Role
from hydrogen.server.app import create_app
from tests.conftest import connect, make_config, receive_json, receive_until
from tests.test_printers import sim_printer, wait_state

ADMIN = "audit-admin-secret-5a1c9e"
OPS = "audit-ops-secret-77d20b"
CTL = "audit-control-secret-0f3e41"
MON = "audit-monitor-secret-c2b8aa"
WRONG = "audit-wrong-guess-9d9d9d"
KEYS = (
    ApiKey(ADMIN, Role.ADMIN, "root-admin"),
    ApiKey(OPS, Role.CONTROL, "night-ops"),
    ApiKey(CTL, Role.CONTROL, "day-shift"),
    ApiKey(MON, Role.MONITOR, "wallboard"),
)
SLOW = b"G4 P200\n" * 100  # about 20 s: always still printing when cancelled


def h(key: str) -> dict[str, str]:
    return {"X-Api-Key": key}


async def start_gateway(aiohttp_client: Any, state: Path, **changes: Any) -> Any:
    config = dataclasses.replace(
        make_config(state, printers=(sim_printer(),), **changes), keys=KEYS
    )
    gateway = Gateway(config)
    printers = PrinterManager(gateway)
    jobs = JobManager(gateway, printers)
    client = await aiohttp_client(create_app(gateway, printers, jobs))
    client.printers = printers
    client.jobs = jobs
    await wait_state(printers.printers["sim"], PrinterState.READY)
    return client


async def upload(client: Any, name: str, data: bytes, key: str = CTL) -> None:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    response = await client.post("/api/files", data=form, headers=h(key))
    assert response.status == 201, await response.text()


async def audit(client: Any, key: str = ADMIN, **query: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/audit", params=query, headers=h(key))
    assert response.status == 200, await response.text()
    return (await response.json())["records"]


async def ws_request(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send_json(frame)
    return await receive_until(ws, lambda f: f.get("id") == frame["id"])


async def job_state(client: Any, *states: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            payload = client.jobs.job_payload("sim")
            if payload["state"] in states:
                return payload
            await asyncio.sleep(0.02)


@pytest.fixture
async def farm(aiohttp_client: Any, tmp_path: Path) -> Any:
    return await start_gateway(aiohttp_client, tmp_path)


async def test_who_cancelled_a_job_is_in_the_trail_the_history_and_the_job(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """The 3 a.m. question: the day shift started the print, who cancelled it?"""
    client = await start_gateway(aiohttp_client, tmp_path)
    await upload(client, "part.gcode", SLOW)
    day = await connect(client, CTL)
    await receive_json(day)
    started = await ws_request(
        day, {"type": "job_start", "printer": "sim", "file": "part.gcode", "id": "s"}
    )
    assert started["started_by"] == "day-shift"
    await job_state(client, "printing")
    response = await client.post("/api/printers/sim/job", json={"action": "cancel"}, headers=h(OPS))
    assert response.status == 200
    assert (await response.json())["cancelled_by"] == "night-ops"
    # a wallboard cannot cancel, and trying is on the record too
    refused = await client.post("/api/printers/sim/job", json={"action": "cancel"}, headers=h(MON))
    assert refused.status == 403
    payload = await job_state(client, "cancelled")
    assert (payload["started_by"], payload["cancelled_by"]) == ("day-shift", "night-ops")

    history = await client.get("/api/jobs/history", headers=h(MON))
    (job,) = (await history.json())["jobs"]
    assert (job["outcome"], job["started_by"], job["cancelled_by"]) == (
        "cancelled",
        "day-shift",
        "night-ops",
    )

    admin = await connect(client, ADMIN)
    await receive_json(admin)
    reply = await ws_request(admin, {"type": "audit_query", "printer": "sim", "id": "q"})
    assert reply["type"] == "audit_query"
    actions = [(r["identity"], r["action"], r["outcome"]) for r in reply["records"]]
    assert actions[:3] == [
        ("wallboard", "job_cancel", "forbidden"),
        ("night-ops", "job_cancel", "ok"),
        ("day-shift", "job_start", "ok"),
    ]
    cancel = reply["records"][1]
    assert cancel["transport"] == "http"
    assert cancel["role"] == "control"
    assert cancel["remote"] == "127.0.0.1"
    assert cancel["printer"] == "sim"
    assert reply["records"][2]["transport"] == "websocket"
    assert reply["records"][2]["target"] == "part.gcode"

    # The history keeps who started and cancelled across a restart, and so does the trail.
    await client.close()
    again = await start_gateway(aiohttp_client, tmp_path)
    restored = again.jobs.job_payload("sim")
    assert (restored["started_by"], restored["cancelled_by"]) == ("day-shift", "night-ops")
    records = await audit(again, printer="sim", identity="night-ops")
    assert [(r["action"], r["outcome"]) for r in records] == [("job_cancel", "ok")]
    assert records[0]["seq"] == cancel["seq"]
    await day.close()
    await admin.close()


async def test_uploads_and_sign_ins_are_recorded_and_no_secret_is_stored(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start_gateway(aiohttp_client, tmp_path)
    await upload(client, "bracket.gcode", b"G28\n", key=OPS)
    bad = aiohttp.FormData()
    bad.add_field("file", b"G28\n", filename="../etc/passwd", content_type="text/plain")
    refused = await client.post("/api/files", data=bad, headers=h(OPS))
    assert refused.status == 400
    origin = str(client.make_url("")).rstrip("/")
    for key, status in ((WRONG, 401), (CTL, 303)):
        response = await client.post(
            "/login", data={"key": key}, headers={"Origin": origin}, allow_redirects=False
        )
        assert response.status == status
    # a token used for an action, and a key made at run time (its secret is in the reply)
    made = await client.post("/api/auth/token", headers=h(OPS))
    token = (await made.json())["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    response = await client.post(
        "/api/printers/sim/command", json={"gcode": "M105"}, headers=bearer
    )
    assert response.status == 200
    added = await client.post(
        "/api/keys", json={"name": "temp-contractor", "role": "monitor"}, headers=h(ADMIN)
    )
    assert added.status == 201
    new_secret = (await added.json())["secret"]
    records = await audit(client)
    seen = [(r["identity"], r["action"], r["outcome"], r["transport"]) for r in records]
    assert seen[:6] == [
        ("root-admin", "key_add", "ok", "http"),
        ("night-ops", "command", "ok", "http"),
        ("day-shift", "sign_in", "ok", "dashboard"),
        ("", "sign_in", "auth_failed", "dashboard"),
        ("night-ops", "upload", "invalid_message", "http"),
        ("night-ops", "upload", "ok", "http"),
    ]
    assert records[0]["target"] == "temp-contractor"
    assert records[5]["target"] == "bracket.gcode"

    await client.close()  # the store's writes are done once the gateway has stopped
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("audit.sqlite3*"))
    assert b"night-ops" in stored  # the names are there (the check below would be vacuous)
    signature = token.rsplit(".", 1)[1]
    for secret in (ADMIN, OPS, CTL, MON, WRONG, token, signature, new_secret):
        assert secret.encode() not in stored, secret
    assert (tmp_path / "audit.sqlite3").stat().st_mode & 0o077 == 0


async def test_audit_query_filters_and_pages(farm: Any) -> None:
    client = farm
    for name in ("a.gcode", "b.gcode", "c.gcode"):
        await upload(client, name, b"G28\n", key=CTL)
    middle = time.time()
    await asyncio.sleep(0.01)
    for name in ("d.gcode", "e.gcode"):
        await upload(client, name, b"G28\n", key=OPS)
    response = await client.post(
        "/api/printers/sim/command", json={"gcode": "M105"}, headers=h(OPS)
    )
    assert response.status == 200

    everything = await audit(client)
    assert [r["target"] for r in everything] == [
        "M105", "e.gcode", "d.gcode", "c.gcode", "b.gcode", "a.gcode"
    ]  # fmt: skip
    assert [r["target"] for r in await audit(client, identity="day-shift")] == [
        "c.gcode", "b.gcode", "a.gcode"
    ]  # fmt: skip
    assert [r["target"] for r in await audit(client, since=str(middle))] == [
        "M105", "e.gcode", "d.gcode"
    ]  # fmt: skip
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(middle - 3600)) + "Z"
    assert len(await audit(client, since=iso)) == 6
    assert [r["action"] for r in await audit(client, printer="sim")] == ["command"]
    assert await audit(client, printer="no-such-printer") == []

    page = await client.get("/api/audit", params={"limit": "2"}, headers=h(ADMIN))
    body = await page.json()
    assert [r["target"] for r in body["records"]] == ["M105", "e.gcode"]
    older = await audit(client, limit=2, before=body["next_before"])
    assert [r["target"] for r in older] == ["d.gcode", "c.gcode"]
    last = await client.get("/api/audit", params={"limit": "100"}, headers=h(ADMIN))
    assert (await last.json())["next_before"] is None


@pytest.mark.parametrize(
    ("query", "member"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "nan"}, "since"),
        ({"since": "1e300"}, "since"),
        ({"since": "-5"}, "since"),
        ({"identity": "x" * 1000}, "identity"),
        ({"before": "0"}, "before"),
        ({"before": "abc"}, "before"),
        ({"limit": "many"}, "limit"),
    ],
)
async def test_hostile_audit_queries_are_refused_clearly(
    farm: Any, query: dict[str, str], member: str
) -> None:
    response = await farm.get("/api/audit", params=query, headers=h(ADMIN))
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["code"], error["details"]["member"]) == ("invalid_message", member)


async def test_huge_and_tiny_limits_are_brought_into_range(farm: Any) -> None:
    for _ in range(3):
        await upload(farm, "x.gcode", b"G28\n")
    assert len(await audit(farm, limit=str(10**30))) == 3
    assert len(await audit(farm, limit="0")) == 1
    ws = await connect(farm, ADMIN)
    await receive_json(ws)
    reply = await ws_request(ws, {"type": "audit_query", "since": [1], "id": "bad"})
    assert reply["error"]["code"] == "invalid_message"
    reply = await ws_request(ws, {"type": "audit_query", "limit": 10**400, "id": "big"})
    assert reply["type"] == "error" or len(reply["records"]) == 3
    await ws.close()


async def test_only_admins_read_the_trail(farm: Any) -> None:
    await upload(farm, "x.gcode", b"G28\n")
    for key in (CTL, MON):
        response = await farm.get("/api/audit", headers=h(key))
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "forbidden"
        ws = await connect(farm, key)
        welcome = await receive_json(ws)
        assert "audit_query" not in welcome["features"]
        reply = await ws_request(ws, {"type": "audit_query", "id": "q"})
        assert reply["error"]["code"] == "forbidden"
        reply = await ws_request(ws, {"type": "subscribe", "topics": ["audit"], "id": "s"})
        assert reply["error"]["code"] == "forbidden"
        await ws.close()
    assert (await farm.get("/api/audit")).status == 401


async def test_the_live_audit_topic_reaches_admins_only(farm: Any) -> None:
    admin = await connect(farm, ADMIN)
    await receive_json(admin)
    await ws_request(admin, {"type": "subscribe", "topics": ["audit"], "id": "s"})
    nosy = await connect(farm, CTL)  # '#' is every topic it may see: not the audit's
    await receive_json(nosy)
    await ws_request(nosy, {"type": "subscribe", "topics": ["#"], "id": "s"})

    await upload(farm, "live.gcode", b"G28\n", key=OPS)
    frame = await receive_until(admin, lambda f: f.get("type") == "audit")
    assert frame["topic"] == "audit"
    assert (frame["identity"], frame["action"], frame["target"]) == (
        "night-ops",
        "upload",
        "live.gcode",
    )
    (stored,) = await audit(farm, identity="night-ops")
    assert stored["seq"] == frame["seq"]
    # The audit frame was published before the upload was answered, so anything the
    # hub queued for this client comes before the reply to a ping sent now.
    await nosy.send_json({"type": "ping", "id": "barrier"})
    nosy_frames = []
    while not nosy_frames or nosy_frames[-1].get("id") != "barrier":
        nosy_frames.append(await receive_json(nosy))
    assert any(f.get("type") == "printer_state" for f in nosy_frames)  # it does get "#"
    assert all(f.get("type") != "audit" for f in nosy_frames)
    await admin.close()
    await nosy.close()


async def test_retention_keeps_the_newest_records(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.sqlite3", max_rows=5)
    await store.open()
    for i in range(12):
        store.append(AuditRecord(time=float(i), identity=f"u{i}", role="control",
                                 transport="http", action="upload"))  # fmt: skip
    assert [r.identity for r in await store.query(limit=100)] == [f"u{i}" for i in range(11, 6, -1)]
    await store.close()
    smaller = AuditStore(tmp_path / "audit.sqlite3", max_rows=2)  # audit.max_rows lowered
    await smaller.open()
    assert [r.seq for r in await smaller.query(limit=100)] == [12, 11]
    numbered = smaller.append(AuditRecord(time=99.0, identity="x", role="admin",
                                          transport="cli", action="key_add"))  # fmt: skip
    assert numbered.seq == 13  # ids go on from the stored ones: a page never repeats
    assert await smaller.count() == 2
    await smaller.close()


def test_audit_max_rows_is_validated(tmp_path: Path) -> None:
    from hydrogen.config import ConfigError, load_config

    path = tmp_path / "hydrogen.toml"
    path.write_text("[audit]\nmax_rows = 5\n")
    with pytest.raises(ConfigError, match=r"audit\.max_rows"):
        load_config(path, environ={})
    path.write_text("[audit]\nmax_rows = 250\n")
    assert load_config(path, environ={}).audit.max_rows == 250
    assert json.dumps(dataclasses.asdict(load_config(None, environ={}).audit)) == (
        '{"max_rows": 100000}'
    )


async def test_a_stored_record_comes_back_member_for_member(tmp_path: Path) -> None:
    """Every member in its own column (the insert lists them by hand, in order)."""
    store = AuditStore(tmp_path / "audit.sqlite3", max_rows=10)
    await store.open()
    sent = AuditRecord(time=12.5, identity="who", role="control", transport="octoprint",
                       action="job_start", outcome="conflict", remote="192.0.2.7",
                       printer="mk3", target="part.gcode")  # fmt: skip
    numbered = store.append(sent)
    assert numbered == AuditRecord(**{**sent.as_dict(), "seq": 1})
    assert await store.query(limit=10) == [numbered]
    await store.close()
