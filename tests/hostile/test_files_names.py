"""File names that only look like paths or like other names.

One rule (docs/protocol.md §10.2): a name is taken in NFC; a character that is
invisible (control, format, bidi, zero-width), a line break, a space other than
U+0020, or one that looks like ``/``, ``\\`` or ``.`` without being one is refused
with ``invalid_message`` naming it, wherever a name arrives (upload, URL,
``job_start``).
"""

from __future__ import annotations

import json
import unicodedata
from urllib.parse import quote

from tests.conftest import connect, receive_json, receive_until
from tests.hostile._files_support import assert_no_traceback, assert_serving, part, raw_post
from tests.test_jobs import CONTROL, MONITOR, job_gateway

__all__ = ["job_gateway"]  # the fixture, re-used

LOOKALIKES = [
    "\u2024",  # ONE DOT LEADER
    "\u2025",  # TWO DOT LEADER
    "\u2026",  # HORIZONTAL ELLIPSIS
    "\uff0e",  # FULLWIDTH FULL STOP
    "\u2215",  # DIVISION SLASH
    "\u2044",  # FRACTION SLASH
    "\uff0f",  # FULLWIDTH SOLIDUS
    "\uff3c",  # FULLWIDTH REVERSE SOLIDUS
    "\u29f8",  # BIG SOLIDUS
    "\u2028",  # LINE SEPARATOR
    "\u2029",  # PARAGRAPH SEPARATOR
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u2066",  # LEFT-TO-RIGHT ISOLATE
    "\u200f",  # RIGHT-TO-LEFT MARK
    "\u200b",  # ZERO WIDTH SPACE
    "\u00a0",  # NO-BREAK SPACE
]


async def _raw_upload(client, name: str, data: bytes) -> tuple[int, bytes]:
    """The name as UTF-8 in the part header, as browsers and slicers send it (aiohttp's
    client would percent-encode it)."""
    body = part("B", "file", data, filename=name) + b"\r\n--B--\r\n"
    return await raw_post(client, "/api/files", "B", body)


async def test_a_name_that_looks_like_a_path_or_another_name_is_refused_naming_the_character(
    job_gateway, caplog, tmp_path
):
    _, client, _, _ = job_gateway
    ws = await connect(client)
    await receive_json(ws)
    for char in LOOKALIKES:
        code = f"U+{ord(char):04X}"
        name = f"models{char}..{char}cube.gcode"
        status, payload = await _raw_upload(client, name, b"G28\n")  # byte for byte
        assert status == 400, f"{code}: accepted as {payload!r}"
        error = json.loads(payload)["error"]
        assert error["code"] == "invalid_message", f"{code}: {error}"
        assert code in error["message"] and unicodedata.name(char) in error["message"], error
        assert error["details"]["character"] == code
        assert char not in error["details"]["name"], f"{code}: shown with it escaped"
        stored = [p for p in (tmp_path / "files").iterdir() if not p.name.startswith(".")]
        assert stored == [], code

        response = await client.get(f"/api/files/{quote(name)}", headers=MONITOR)
        assert response.status == 400, code
        assert code in (await response.json())["error"]["message"]
        await ws.send_json({"type": "job_start", "printer": "sim", "file": name, "id": code})
        reply = await receive_until(ws, lambda f, code=code: f.get("id") == code)
        assert reply["error"]["code"] == "invalid_message", f"{code}: {reply}"
        assert code in reply["error"]["message"], f"{code}: {reply}"
    await ws.close()
    assert_no_traceback(caplog, "lookalikes")
    await assert_serving(client, "lookalikes")


async def test_a_name_is_one_name_in_nfc_whatever_form_it_arrives_in(job_gateway, caplog, tmp_path):
    _, client, _, sim = job_gateway
    composed, decomposed = "caf\u00e9.gcode", "cafe\u0301.gcode"
    status, payload = await _raw_upload(client, decomposed, b"G28\n")
    assert status == 201
    assert json.loads(payload)["file"]["name"] == composed
    assert (await _raw_upload(client, composed, b"G28\nG1 X1\n"))[0] == 201
    listing = (await (await client.get("/api/files", headers=MONITOR)).json())["files"]
    assert [f["name"] for f in listing] == [composed]  # one file, shown composed
    content = await client.get(f"/api/files/{quote(decomposed)}/content", headers=MONITOR)
    assert await content.read() == b"G28\nG1 X1\n"

    # a job on it keeps it, whichever form the delete names it in
    sim.time_scale = 1.0
    await _raw_upload(client, composed, b"G4 P500\n" * 20)
    start = await client.post(
        "/api/printers/sim/job", json={"action": "start", "file": decomposed}, headers=CONTROL
    )
    assert start.status == 201, await start.text()
    assert (await start.json())["file"] == composed
    for form in (decomposed, composed):
        response = await client.delete(f"/api/files/{quote(form)}", headers=CONTROL)
        assert response.status == 409, form
    await client.post("/api/printers/sim/job", json={"action": "cancel"}, headers=CONTROL)

    # a file copied in by hand under a name that is not its own NFC form could not be
    # fetched by the name shown: it is not listed at all
    (tmp_path / "files" / "tile\u0301.gcode").write_bytes(b"G28\n")
    listing = (await (await client.get("/api/files", headers=MONITOR)).json())["files"]
    for listed in listing:
        response = await client.get(f"/api/files/{quote(listed['name'])}", headers=MONITOR)
        assert response.status == 200, listed["name"]
    assert [f["name"] for f in listing] == [composed]
    assert_no_traceback(caplog, "nfc")
