"""Hostile input against the OctoPrint-compatible API (docs/octoprint.md).

Every route under ``/octoprint/{printer}`` is taken from the app's router, so a new
route is walked without being listed here. Each gets requests without a key, with a
wrong one, with a monitor key where it acts; bodies that are not JSON, JSON of the
wrong type, every known member with wrong types (huge numbers, NaN, Infinity, deep
nesting, megabyte strings), unknown commands; oversized bodies and bodies cut in
pieces; file and printer names that play with paths; query strings with garbage.
Each answer must be below 500, OctoPrint's ``{"error": "..."}`` from 400 on (or what
the recorded OctoPrint answered, tests/octoprint_truth/octoprint.json), without an
ERROR record, a traceback or a key in the log; after the walk the gateway serves,
the printer is operational, the files and the job are as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from hydrogen.octoprint.adapter import MAX_BODY_BYTES
from hydrogen.printers.printer import PrinterState
from tests.conftest import ADMIN_KEY, CONTROL_KEY
from tests.hostile._octoprint_support import (
    CONTROL,
    KEPT,
    MEMBERS,
    MONITOR,
    adapter_of,
    check_log,
    fill,
    octo,
    state_of,
)
from tests.octoprint_truth.cases import CASES, GCODE
from tests.test_octoprint_api import truth

__all__ = ["octo"]  # the fixture, re-used

ACTING = {
    ("POST", "/api/connection"): {"command": "connect"},
    ("POST", "/api/printer/tool"): {"command": "target", "targets": {"tool0": 0}},
    ("POST", "/api/printer/bed"): {"command": "target", "target": 0},
    ("POST", "/api/printer/printhead"): {"command": "feedrate", "factor": 100},
    ("POST", "/api/printer/command"): {"command": "M105"},
    ("POST", "/api/job"): {"command": "start"},
    ("POST", "/api/files/local/{name}"): {"command": "select"},
    ("DELETE", "/api/files/local/{name}"): None,
    ("POST", "/api/files/local"): None,
}
#: Routes that answer without a key (OctoPrint's too).
ANONYMOUS = ("/api/currentuser", "/sockjs/websocket", "/plugin/appkeys/", "/{tail")

#: No key, wrong keys in every form a key comes in (also long, and a token's shape).
BAD_KEYS = (
    {},
    {"X-Api-Key": "wrong"},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Key " + "k" * 6000},
    {"X-Api-Key": "a.b.c"},
    {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJjdGwifQ."},
    {"Authorization": "Basic Y3RsOmN0bA=="},
    {"X-Api-Key": " ", "Authorization": "Bearer "},
)
NESTED = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
MIB = 1024 * 1024


def wrong_values() -> list[bytes]:
    """JSON texts of values no member expects (NaN and Infinity as Python's json and
    OctoPrint's reader take them)."""
    return [
        b'"hot"',
        b"1e308",
        b"-1e308",
        b"1" + b"0" * 30,
        b"1e999",
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"[]",
        b"{}",
        b"null",
        b"false",
        b'[{"x": 1}]',
        b'{"tool\xc2\xb2": 1, "tool' + b"9" * 5000 + b'": 2}',
        b'"tool\xc2\xb2"',
        b'"tool' + b"9" * 5000 + b'"',
        b'["q", {"x": 1}]',
        b'"' + b"x" * 60_000 + b'"',
        b'"\\u0000M112"',
        NESTED[: 5 * 1000] + b"1" + b"}" * 1000,
    ]


def raw_bodies() -> list[tuple[str, bytes, str]]:
    """(what, body, content type) sent to every route that takes a body."""
    json_type = "application/json"
    return [
        ("empty", b"", json_type),
        ("not json", b"{nope", json_type),
        ("array", b"[1]", json_type),
        ("string", b'"start"', json_type),
        ("number", b"5", json_type),
        ("null", b"null", json_type),
        ("object", b"{}", json_type),
        ("nested 10000", NESTED, json_type),
        ("NaN", b'{"command": NaN}', json_type),
        ("invalid utf-8", b'{"command": "\xff\xfe"}', json_type),
        ("unknown command", b'{"command": "explode"}', json_type),
        ("command list", b'{"command": ["start"]}', json_type),
        ("command object", b'{"command": {"start": 1}}', json_type),
        ("1 MiB string", b'{"command": "' + b"x" * MIB + b'"}', json_type),
        ("over 64 KiB", b'{"command": "M105", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}', json_type),
        ("over client_max_size", b'{"pad": "' + b"x" * (MIB + 4096) + b'"}', json_type),
        ("text/plain", b'{"command": "explode"}', "text/plain"),
        ("no content type", b'{"command": "explode"}', ""),
        (
            "multipart",
            b'--B\r\nContent-Disposition: form-data; name="command"\r\n\r\nstart\r\n--B--\r\n',
            "multipart/form-data; boundary=B",
        ),
    ]


NAMES = [
    "..%2F..%2Fetc%2Fpasswd",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd.gcode",
    "%2e%2e",
    "..",
    "%00",
    "keep.gcode%00.txt",
    "a%0Ab.gcode",
    "x" * 4000 + ".gcode",
    quote("caf\u00e9\u202e.gcode"),
    quote("\U0001f5a8.gcode"),
    "keep.gcode%2F..%2Fkeep.gcode",
    "%2Fetc%2Fpasswd",
    ".meta",
    "%5C..%5Cwin.ini",
    "%FF%FE.gcode",
]
#: Names an upload must refuse (sent byte for byte in the part's header).
UPLOAD_NAMES = [
    "../../etc/passwd",
    "../keep.gcode",
    "a/b.gcode",
    "..",
    ".",
    "",
    "x\x00.gcode",
    "x" * 4000 + ".gcode",
    ".meta",
    "keep.gcode\r\nX-Injected: 1",
    "\u202egcode.exe",
    "C:\\Windows\\win.ini",
]


def multipart(name: str, data: bytes = b"G28\n") -> bytes:
    head = f'--B\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
    return head.encode("utf-8", "surrogateescape") + data + b"\r\n--B--\r\n"


PRINTERS = ["nope", "%00", "..", "mk3%2F..", "%2e%2e", quote("m\u00fcnchen"), "p" * 3000, "MK3"]
QUERIES = [
    f"?apikey=wrong&apikey={CONTROL_KEY}",
    f"?apikey={CONTROL_KEY}&apikey=wrong",
    "?apikey=",
    "?history=true&limit=-1",
    "?history=true&limit=0",
    "?history=true&limit=99999999999999999999",
    "?history=true&limit=" + "9" * 5000,
    "?history=true&limit=%C2%B2",
    "?history=true&limit=%D9%A3",
    "?history=%00&limit=1.5",
    "?exclude=" + "%00,,%FF," * 50,
    "?exclude=temperature,state,sd",
    "?recursive=maybe&force=%ZZ",
    "?" + "&".join(f"k{i}=v" for i in range(500)),
]


def truth_cases() -> Iterator[tuple[str, str, str, Any, dict[str, str]]]:
    """The recorded cases that are hostile (no key, wrong key, malformed bodies...)."""
    names = {
        "wrong_key": {"X-Api-Key": "wrong"},
        "no_key": {},
        "version_no_key": {},
        "login_no_key": {},
        "command_malformed_json": CONTROL,
        "command_json_list": CONTROL,
        "command_missing": CONTROL,
        "tool_unknown_command": CONTROL,
        "tool_target_not_number": CONTROL,
        "bed_target_not_number": CONTROL,
        "home_bad_axis": CONTROL,
        "job_unknown_command": CONTROL,
        "file_missing": CONTROL,
        "file_select_missing": CONTROL,
        "appkeys_request_no_app": {},
        "appkeys_poll_unknown": {},
        "viewer_command": MONITOR,
        "viewer_job_start": MONITOR,
    }
    for case in CASES:
        if case.name in names:
            body = case.raw if case.raw is not None else json.dumps(case.body).encode()
            yield case.name, case.method, case.path, body, names[case.name]


def octoprint_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path below /octoprint/{printer}) of every route the router has there."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path") or ""
        if not path.startswith("/octoprint/{printer}") or route.method == "HEAD":
            continue
        below = path.removeprefix("/octoprint/{printer}").replace("//", "/")
        found.add(("GET" if route.method == "*" else route.method, below))
    return sorted(found)


class Walk:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.seen = 0
        self.problems: list[str] = []

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        expect: int | None = None,
    ) -> tuple[int, Any]:
        sent = dict(CONTROL if headers is None else headers)
        if body is not None and content_type:
            sent["Content-Type"] = content_type
        url = self.client.make_url("/").with_path(path, encoded=True)
        async with self.client.session.request(method, url, data=body, headers=sent) as response:
            text = await response.text()
            status = response.status
        self.seen += 1
        what = f"{method} {path[:120]} {(body or b'')[:60]!r} -> {status} {text[:200]}"
        payload = None
        if status >= 500 or (expect is not None and status != expect):
            self.problems.append(what)
        elif status >= 400:
            try:
                payload = json.loads(text)
            except ValueError:
                payload = None
            if not (isinstance(payload, dict) and isinstance(payload.get("error"), str)):
                self.problems.append(f"not OctoPrint's error: {what}")
        return status, payload


# an upload name with a line break: aiohttp warns of the header, and the upload is refused
@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")
async def test_every_route_refuses_hostile_requests_with_octoprints_error(octo, caplog, seed):
    caplog.set_level(logging.DEBUG)
    client = octo
    walk = Walk(client)
    routes = octoprint_routes(client.app_)
    assert ("POST", "/api/job") in routes and ("GET", "/sockjs/websocket") in routes
    before = await state_of(client)
    kept = (client.jobs.files.directory / KEPT).read_bytes()
    rng = random.Random(seed)

    for name, method, path, body, headers in truth_cases():
        recorded = truth()[name]
        status, payload = await walk.send(
            method, "/octoprint/mk3" + path, body=body, headers=headers
        )
        if status != recorded["status"] or (payload is not None) != ("error" in recorded):
            walk.problems.append(f"{name}: {status} {payload}, OctoPrint {recorded}")

    for method, path in routes:
        anonymous = any(part in path for part in ANONYMOUS)
        url = "/octoprint/mk3" + fill(path)
        for headers in BAD_KEYS:
            expect = None if anonymous else 403
            await walk.send(method, url, headers=headers, body=b"{}", expect=expect)
        if (method, path) in ACTING:
            acting = ACTING[(method, path)]
            body = None if acting is None else json.dumps(acting).encode()
            await walk.send(method, url, headers=MONITOR, body=body, expect=403)
        # (what acts with the right key acts on a file that is not there)
        target = "/octoprint/mk3" + fill(path, KEPT if method == "GET" else "absent.gcode")
        for query in QUERIES:
            await walk.send(method, target + query, body=b"{}" if method != "GET" else None)
        for printer in PRINTERS:
            await walk.send(method, f"/octoprint/{printer}" + fill(path, "absent.gcode"))
        if "{name}" in path and method != "DELETE":
            for name in NAMES:  # none of them is a stored file, whatever it resolves to
                status, _ = await walk.send(method, "/octoprint/mk3" + fill(path, name), body=b"{}")
                if status < 400:
                    walk.problems.append(f"{method} {path} {name[:60]}: {status}")
        if method in ("GET", "DELETE"):
            continue
        for _what, body, content_type in raw_bodies():
            await walk.send(method, target, body=body, content_type=content_type)
        for command, members in MEMBERS.get(path, {}).items():
            for member in members:
                values = wrong_values()
                rng.shuffle(values)
                for value in values:
                    prefix = f'{{"command": "{command}", ' if command else "{"
                    body = prefix.encode() + f'"{member}": '.encode() + value + b"}"
                    await walk.send(method, target, body=body)
            if command:  # every member missing
                await walk.send(method, target, body=json.dumps({"command": command}).encode())
    for method in ("PUT", "PATCH", "OPTIONS"):
        await walk.send(method, "/octoprint/mk3/api/job", body=b"{}")
    # the default printer's roots take the same
    for method, path in routes:
        if path.startswith("/api/") and method != "GET":
            for root in ("", "/"):
                await walk.send(method, root + fill(path, "absent.gcode"), body=b"{nope")
                await walk.send(method, root + fill(path, "absent.gcode"), headers={}, expect=403)
    for name in UPLOAD_NAMES:
        await walk.send(
            "POST",
            "/octoprint/mk3/api/files/local",
            body=multipart(name),
            content_type="multipart/form-data; boundary=B",
            expect=400,
        )

    assert not walk.problems, f"HYDROGEN_TEST_SEED={seed}:\n" + "\n".join(walk.problems)
    assert walk.seen > 1000, walk.seen
    check_log(caplog, f"the walk (HYDROGEN_TEST_SEED={seed})")
    assert (await client.get("/api/version", headers=CONTROL)).status == 200
    assert client.printers.printers["mk3"].state in (PrinterState.READY, PrinterState.BUSY)
    assert await state_of(client) == before
    assert (client.jobs.files.directory / KEPT).read_bytes() == kept


async def test_a_key_scoped_to_another_printer_reaches_nothing_of_this_one(octo, caplog):
    """A control key for ``ghost`` only, on every route of mk3 (its root, the bare
    and the doubled one), with bodies that would act: 404 (403 where OctoPrint
    refuses first), nothing changed; its session opens no push socket of mk3."""
    caplog.set_level(logging.INFO)
    client = octo
    admin = {"X-Api-Key": ADMIN_KEY}
    added = await client.post(
        "/api/keys", json={"name": "g", "role": "control", "printers": ["ghost"]}, headers=admin
    )
    secret = (await added.json())["secret"]
    scoped = {"X-Api-Key": secret}
    before = await state_of(client)
    walk = Walk(client)
    for method, path in octoprint_routes(client.app_):
        if any(part in path for part in ANONYMOUS):
            continue
        acting = ACTING.get((method, path)) or {"command": "select", "print": True}
        body = json.dumps(acting).encode() if method == "POST" else None
        for root in ("/octoprint/mk3", "", "/"):
            if root != "/octoprint/mk3" and not path.startswith("/api/"):
                continue
            if root == "" and path == "/api/files":
                continue  # Hydrogen's own listing (docs/octoprint.md)
            status, _ = await walk.send(method, root + fill(path), body=body, headers=scoped)
            if status not in (403, 404):
                walk.problems.append(f"{method} {root}{path}: {status}")
    assert not walk.problems, "\n".join(walk.problems)
    assert await state_of(client) == before
    login_answer = await client.post(
        "/octoprint/ghost/api/login", json={"passive": True}, headers=scoped
    )
    answer = await login_answer.json()
    session = f"{answer['name']}:{answer['session']}"
    ws = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
    await ws.receive_json(timeout=5)
    await ws.send_str(json.dumps({"auth": session}))
    closing = await ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4003, closing
    await ws.close()
    check_log(caplog, "a key of another printer", secret, answer["session"])


async def test_a_body_in_pieces_is_read_whole(octo, caplog):
    """A command body that arrives in several TCP segments (a slow link, a proxy) is
    one body: the JSON is read whole, and a body past the limit is 413 however it
    arrives."""
    caplog.set_level(logging.INFO)
    client = octo
    for size, expected in ((1_000, 204), (40_000, 204), (MAX_BODY_BYTES + 10, 413)):
        body = json.dumps({"command": "M105", "pad": "x" * size}).encode()
        head = (
            f"POST /octoprint/mk3/api/printer/command HTTP/1.1\r\nHost: x\r\n"
            f"X-Api-Key: {CONTROL_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(head + body[:100])
        await writer.drain()
        for start in range(100, len(body), 8192):
            await asyncio.sleep(0.01)
            writer.write(body[start : start + 8192])
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status = int(answer.split(b" ", 2)[1])
        assert status == expected, (size, answer[:300])
    # chunked, without a Content-Length: the limit holds as well
    for size, expected in ((30_000, 204), (MAX_BODY_BYTES + 10, 413)):
        body = json.dumps({"command": "M105", "pad": "x" * size}).encode()
        head = (
            f"POST /octoprint/mk3/api/printer/command HTTP/1.1\r\nHost: x\r\n"
            f"X-Api-Key: {CONTROL_KEY}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(head)
        with contextlib.suppress(ConnectionError):  # a 413 may close before the end
            for start in range(0, len(body), 5000):
                piece = body[start : start + 5000]
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.005)
            writer.write(b"0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert int(answer.split(b" ", 2)[1]) == expected, (size, answer[:300])
    check_log(caplog, "bodies in pieces")


async def test_digits_that_int_cannot_read_are_refused_not_crashed(octo, caplog):
    """``str.isdigit`` takes ``²`` and 5000 digits; ``int`` refuses both."""
    caplog.set_level(logging.INFO)
    client = octo
    for limit in ("%C2%B2", "9" * 5000, "99999999999999999999", "-1", "%D9%A3"):
        for path in ("/api/printer", "/api/printer/tool", "/api/printer/bed"):
            response = await client.get(
                f"/octoprint/mk3{path}?history=true&limit={limit}", headers=CONTROL
            )
            assert response.status == 200, (path, limit[:20], await response.text())
    for tool in ("tool\u00b2", "tool" + "9" * 5000, "tool\u0663", "tool-1", "tool 1"):
        for body in (
            {"command": "select", "tool": tool},
            {"command": "target", "targets": {tool: 0}},
            {"command": "offset", "offsets": {tool: 0}},
        ):
            response = await client.post(
                "/octoprint/mk3/api/printer/tool", json=body, headers=CONTROL
            )
            assert response.status == 400, (body["command"], tool[:20], await response.text())
            assert isinstance((await response.json())["error"], str)
    check_log(caplog, "digits")


async def test_a_body_cut_off_by_a_dropped_link_is_no_server_error(octo, caplog, seed):
    """A client that announces a body and vanishes halfway: nothing logged as an
    error, nothing done, the gateway serving on."""
    caplog.set_level(logging.INFO)
    client = octo
    rng = random.Random(seed)
    before = await state_of(client)
    posts = [path for method, path in octoprint_routes(client.app_) if method == "POST"]
    for path in posts:
        body = json.dumps({"command": "M105", "pad": "x" * rng.randrange(10, 30_000)}).encode()
        content_type = (
            "multipart/form-data; boundary=B"
            if path == "/api/files/local"
            else ("application/json")
        )
        if path == "/api/files/local":
            body = multipart("cut.gcode", GCODE)
        head = (
            f"POST /octoprint/mk3{fill(path, 'absent.gcode')} HTTP/1.1\r\nHost: x\r\n"
            f"X-Api-Key: {CONTROL_KEY}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) + 1000}\r\n\r\n"
        ).encode()
        _, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(head + body[: rng.randrange(1, len(body))])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()
    await asyncio.sleep(0.2)
    check_log(caplog, f"bodies cut off (HYDROGEN_TEST_SEED={seed})")
    assert await state_of(client) == before
    assert (await client.get("/api/version", headers=CONTROL)).status == 200


async def test_a_flood_of_passive_logins_keeps_a_bounded_number_of_sessions(octo):
    client = octo
    adapter = adapter_of(client)
    answers = await asyncio.gather(
        *(
            client.post("/octoprint/mk3/api/login", json={"passive": True}, headers=MONITOR)
            for _ in range(1100)
        )
    )
    assert {a.status for a in answers} == {200}
    assert len(adapter.sessions) <= 1024


# -- the push socket ------------------------------------------------------------------
