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

Then the push socket (garbage frames, wrong sessions, throttles, dropped handshakes,
a client that never reads) and races (uploads of the file being started, starts,
select against delete). Random input comes from the ``seed`` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from hydrogen.config import AuthConfig, OctoPrintConfig
from hydrogen.gateway import Gateway
from hydrogen.jobs.manager import JobManager
from hydrogen.octoprint import push
from hydrogen.octoprint.adapter import MAX_BODY_BYTES, OctoPrintAdapter
from hydrogen.printers.manager import PrinterManager
from hydrogen.printers.printer import PrinterState
from hydrogen.server.accesslog import RedactingAccessLogger
from hydrogen.server.app import create_app
from hydrogen.server.keys import GATEWAY
from tests.conftest import ADMIN_KEY, CONTROL_KEY, MONITOR_KEY, make_config
from tests.octoprint_truth.cases import CASES, GCODE
from tests.test_octoprint_api import GHOST, truth
from tests.test_printers import sim_printer, wait_state

CONTROL = {"X-Api-Key": CONTROL_KEY}
MONITOR = {"X-Api-Key": MONITOR_KEY}
KEPT = "keep.gcode"
SECRETS = (CONTROL_KEY, MONITOR_KEY, ADMIN_KEY)

#: Each command route's commands and the members each reads.
MEMBERS: dict[str, dict[str, tuple[str, ...]]] = {
    "/api/login": {"": ("passive",)},
    "/api/connection": {"connect": ("port", "baudrate"), "fake_ack": ()},
    "/api/printer/tool": {
        "target": ("targets",),
        "offset": ("offsets",),
        "select": ("tool",),
        "extrude": ("amount", "speed"),
        "flowrate": ("factor",),
    },
    "/api/printer/bed": {"target": ("target",), "offset": ("offset",)},
    "/api/printer/printhead": {
        "jog": ("x", "y", "z", "speed", "absolute"),
        "home": ("axes",),
        "feedrate": ("factor",),
    },
    "/api/printer/command": {"": ("command", "commands")},
    "/api/printer/sd": {"init": ()},
    "/api/job": {"start": (), "cancel": (), "restart": (), "pause": ("action",)},
    "/api/files/local/{name}": {"select": ("print",), "slice": (), "move": ("destination",)},
    "/plugin/appkeys/request": {"": ("app", "user")},
}
#: A well-formed body of each route that acts (a monitor key must get 403 for it).
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


def fill(path: str, name: str = KEPT) -> str:
    return path.replace("{name}", name).replace("{token}", "unknown").replace("{tail}", "nope")


@pytest.fixture
async def octo(aiohttp_client, tmp_path):
    """The gateway of tests/test_octoprint_api.py (``mk3`` simulated, ``ghost``
    offline) with the access log ``hydrogen serve`` uses, and one stored file."""
    config = make_config(
        tmp_path,
        printers=(sim_printer("mk3"), GHOST),
        octoprint=OctoPrintConfig(default_printer="mk3"),
        # the walk sends thousands of wrong keys; the limit has tests of its own
        auth=AuthConfig(max_failures=1_000_000),
    )
    gateway = Gateway(config)
    printers = PrinterManager(gateway)
    jobs = JobManager(gateway, printers)
    app = create_app(gateway, printers, jobs)
    client = await aiohttp_client(app, server_kwargs={"access_log_class": RedactingAccessLogger})
    client.printers, client.jobs, client.app_ = printers, jobs, app
    mk3 = printers.printers["mk3"]
    await wait_state(mk3, PrinterState.READY)
    async with asyncio.timeout(10):
        while "tool0" not in mk3.temperatures:
            await asyncio.sleep(0.02)
    form = aiohttp.FormData()
    form.add_field("file", GCODE, filename=KEPT)
    assert (await client.post("/api/files/local", data=form, headers=CONTROL)).status == 201
    return client


def adapter_of(client: Any) -> OctoPrintAdapter:
    found = [
        cell.cell_contents
        for r in client.app_.router.routes()
        for cell in (getattr(r.handler, "__closure__", None) or ())
        if isinstance(cell.cell_contents, OctoPrintAdapter)
    ]
    return found[0]


def check_log(caplog: pytest.LogCaptureFixture, context: str, *secrets: str) -> None:
    problems = []
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info or record.levelno >= logging.ERROR or "Traceback" in text:
            problems.append(f"{record.name} {record.levelname}: {text[:300]}")
        for secret in (*SECRETS, *secrets):
            if secret and secret in text:
                problems.append(f"a secret in {record.name}: {text[:300]}")
    assert not problems, f"{context}: " + "\n".join(problems)


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


async def state_of(client: Any) -> dict[str, Any]:
    job = await (await client.get("/octoprint/mk3/api/job", headers=CONTROL)).json()
    files = sorted(p.name for p in (client.jobs.files.directory).iterdir())
    records = await (await client.get("/api/printers/mk3/jobs", headers=CONTROL)).json()
    return {"job": job["state"], "file": job["job"]["file"]["name"], "files": files, "n": records}


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
async def login(client: Any, key: str = CONTROL_KEY) -> str:
    answer = await (
        await client.post(
            "/octoprint/mk3/api/login", json={"passive": True}, headers={"X-Api-Key": key}
        )
    ).json()
    return f"{answer['name']}:{answer['session']}"


async def test_the_push_socket_shrugs_off_garbage_and_closes_on_what_it_must(octo, caplog, seed):
    caplog.set_level(logging.DEBUG)
    client = octo
    session = await login(client)
    rng = random.Random(seed)
    ws = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
    assert "connected" in await ws.receive_json(timeout=5)
    garbage: list[Any] = [
        b"\x00\xff" * 100,
        "{nope",
        "[1, 2]",
        '"auth"',
        "null",
        json.dumps({"auth": 5}),
        json.dumps({"auth": None}),
        json.dumps({"auth": ["ctl", "x"]}),
        *(json.dumps({"throttle": v}) for v in (0, -5, 10**40, "7", None, True, 1.5, [], {})),
        '{"throttle": NaN}',
        '{"throttle": 1e999}',
        '{"a":' * 500 + "1" + "}" * 500,
        bytes(rng.randrange(256) for _ in range(2000)),
    ]
    rng.shuffle(garbage)
    for message in garbage:
        await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
    await ws.send_str(json.dumps({"auth": session}))
    history = await ws.receive_json(timeout=5)
    assert "history" in history
    await ws.send_str(json.dumps({"throttle": 10**40}))
    await ws.send_str(json.dumps({"auth": "ctl:a-second-auth-is-ignored"}))
    await ws.send_str("x" * (push.MAX_MESSAGE_BYTES + 1))  # too big: closed
    closing = await ws.receive(timeout=5)
    while closing.type is aiohttp.WSMsgType.TEXT:
        closing = await ws.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
    await ws.close()

    for auth in ("ctl:wrong", session.replace("ctl", "mon"), ":", "x" * 3000, session + "x"):
        ws = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
        await ws.receive_json(timeout=5)
        await ws.send_str(json.dumps({"auth": auth}))
        closing = await ws.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4003, (auth, closing)
        await ws.close()

    # a valid session at a printer that does not exist, or one that is offline
    for printer in ("nope", "ghost", "%00"):
        ws = await client.ws_connect(f"/octoprint/{printer}/sockjs/websocket")
        await ws.receive_json(timeout=5)
        await ws.send_str(json.dumps({"auth": session}))
        answer = await ws.receive(timeout=5)
        assert answer.type in (
            aiohttp.WSMsgType.TEXT,
            aiohttp.WSMsgType.CLOSE,
        ), (printer, answer)
        await ws.close()
    # the socket's URL without an upgrade
    response = await client.get("/octoprint/mk3/sockjs/websocket")
    assert response.status == 400 and isinstance((await response.json())["error"], str)
    await asyncio.sleep(0.1)
    check_log(caplog, f"push garbage (HYDROGEN_TEST_SEED={seed})", session.split(":")[1])
    assert not adapter_of(client).sockets


def upgrade_request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def test_sockets_dropped_mid_handshake_leave_nothing_behind(octo, caplog, seed):
    caplog.set_level(logging.INFO)
    client = octo
    rng = random.Random(seed)
    adapter = adapter_of(client)
    hub = client.app_[GATEWAY].hub
    subscribers = len(hub.subscribers)
    session = await login(client)
    request = upgrade_request("/octoprint/mk3/sockjs/websocket")
    auth = json.dumps({"auth": session}).encode()
    # a masked client text frame of ``auth``
    frame = bytes([0x81, 0x80 | len(auth)]) + b"\0\0\0\0" + auth if len(auth) < 126 else None
    assert frame is not None

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        cut = rng.choice(("head", "upgraded", "auth", "half frame"))
        if cut == "head":
            writer.write(request[: rng.randrange(1, len(request))])
        else:
            writer.write(request)
            if cut in ("auth", "half frame"):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(frame if cut == "auth" else frame[: len(frame) // 2])
        await writer.drain()
        await asyncio.sleep(rng.random() * 0.05)
        writer.transport.abort()

    await asyncio.gather(*(one(i) for i in range(60)))
    async with asyncio.timeout(10):
        while adapter.sockets or len(hub.subscribers) > subscribers:
            await asyncio.sleep(0.05)
    check_log(caplog, f"dropped handshakes (HYDROGEN_TEST_SEED={seed})", session.split(":")[1])
    assert (await client.get("/api/version", headers=CONTROL)).status == 200


async def test_a_session_at_a_printer_that_does_not_exist_is_closed_not_answered(octo, caplog):
    """A passive login's session sees every printer its key does, also at
    ``/octoprint/nope/sockjs/websocket``: the upgraded socket is closed (4003), not
    sent an HTTP answer in the middle of its frames."""
    caplog.set_level(logging.INFO)
    client = octo
    session = await login(client)
    for printer in ("nope", "%00", "MK3"):
        ws = await client.ws_connect(f"/octoprint/{printer}/sockjs/websocket")
        assert "connected" in await ws.receive_json(timeout=5)
        await ws.send_str(json.dumps({"auth": session}))
        closing = await ws.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4003, (printer, closing)
        await ws.close()
    assert not adapter_of(client).sockets
    check_log(caplog, "a session at no printer", session.split(":")[1])


async def test_the_socket_url_without_an_upgrade_is_octoprints_400(octo, caplog):
    caplog.set_level(logging.INFO)
    for headers in ({}, CONTROL):
        response = await octo.get("/octoprint/mk3/sockjs/websocket", headers=headers)
        assert response.status == 400
        assert isinstance((await response.json())["error"], str)
    check_log(caplog, "no upgrade")


async def test_a_revoked_keys_session_opens_no_push_socket_and_ends_the_open_ones(octo, caplog):
    """A passive login's session is the key's: once the key is revoked, the session
    authenticates no new push socket (4003), and the sockets it opened end, as
    Hydrogen's own WebSocket logins of that key do."""
    caplog.set_level(logging.INFO)
    client = octo
    admin = {"X-Api-Key": ADMIN_KEY}
    added = await client.post("/api/keys", json={"name": "phone", "role": "monitor"}, headers=admin)
    assert added.status == 201, await added.text()
    secret = (await added.json())["secret"]
    session = await login(client, secret)
    ws = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
    assert "connected" in await ws.receive_json(timeout=5)
    await ws.send_str(json.dumps({"auth": session}))
    assert "history" in await ws.receive_json(timeout=5)

    assert (await client.delete("/api/keys/phone", headers=admin)).status == 200
    async with asyncio.timeout(5):
        while (message := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
            pass
    assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 4003, message
    await ws.close()

    fresh = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
    await fresh.receive_json(timeout=5)
    await fresh.send_str(json.dumps({"auth": session}))
    closing = await fresh.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4003, closing
    await fresh.close()
    check_log(caplog, "a revoked key's session", secret, session.split(":")[1])


class Stuck:
    """A push socket whose client never reads: every send waits forever."""

    def __init__(self, ask: Any) -> None:
        self.ask = ask
        self.sends = 0
        self.dropped = False

    async def send(self, message: Any) -> None:
        self.sends += 1
        await asyncio.Event().wait()

    def drop(self) -> None:
        self.dropped = True


async def test_a_push_client_that_never_reads_holds_up_no_one(octo, caplog):
    """An upload tells every push socket of the printer; one whose client stopped
    reading (its sends wait on a full socket) must not hold up the upload's answer."""
    caplog.set_level(logging.INFO)
    client = octo
    adapter = adapter_of(client)
    ask = type("A", (), {"printer": "mk3"})()
    stuck = Stuck(ask)
    adapter.sockets.add(stuck)
    form = aiohttp.FormData()
    form.add_field("file", b"G28\n", filename="told.gcode")
    async with asyncio.timeout(5):
        response = await client.post("/octoprint/mk3/api/files/local", data=form, headers=CONTROL)
    assert response.status == 201
    assert stuck.sends == 1 and stuck.dropped and stuck not in adapter.sockets
    check_log(caplog, "a stuck push client")


async def test_a_real_push_client_that_never_reads_is_bounded(octo, caplog, monkeypatch):
    """A raw WebSocket that authenticates and then never reads, sent 64 KiB messages
    every 10 ms: what the gateway keeps for it stays bounded (the sender waits on the
    socket once aiohttp's writer has 64 KiB unsent), everyone else is served
    meanwhile, an upload's event to it does not hold up the upload, and once it goes
    away nothing of it is left. (A client that stays is ended by the heartbeat.)"""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(push, "CURRENT_INTERVAL", 0.01)
    snapshot, count = push.PushSocket.snapshot, itertools.count()

    async def padded(self: Any, *, history: bool) -> dict[str, Any]:
        return {**await snapshot(self, history=history), "pad": f"{next(count)}" + "x" * 65536}

    monkeypatch.setattr(push.PushSocket, "snapshot", padded)
    client = octo
    session = await login(client)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(upgrade_request("/octoprint/mk3/sockjs/websocket"))
    await reader.readuntil(b"\r\n\r\n")
    auth = json.dumps({"auth": session}).encode()
    writer.write(bytes([0x81, 0x80 | len(auth)]) + b"\0\0\0\0" + auth)
    await writer.drain()
    writer.transport.pause_reading()
    adapter = adapter_of(client)
    async with asyncio.timeout(5):
        while not adapter.sockets:
            await asyncio.sleep(0.01)
    (pushed,) = adapter.sockets
    transport = pushed.transport
    assert transport is not None
    largest = 0
    for _ in range(30):
        await asyncio.sleep(0.05)
        largest = max(largest, transport.get_write_buffer_size())
        assert (await client.get("/api/version", headers=CONTROL)).status == 200
    assert 0 < largest < 512 * 1024, largest  # blocked on the socket, and bounded
    form = aiohttp.FormData()
    form.add_field("file", b"G28\n", filename="told.gcode")
    async with asyncio.timeout(5):
        response = await client.post("/octoprint/mk3/api/files/local", data=form, headers=CONTROL)
    assert response.status == 201
    assert transport.get_write_buffer_size() < 512 * 1024
    writer.transport.abort()
    async with asyncio.timeout(10):
        while adapter.sockets:
            await asyncio.sleep(0.05)
    check_log(caplog, "a client that never reads", session.split(":")[1])


# -- races --------------------------------------------------------------------------------
async def upload(client: Any, name: str, data: bytes, **fields: str) -> tuple[int, Any]:
    form = aiohttp.FormData()
    for field, value in fields.items():
        form.add_field(field, value)
    form.add_field("file", data, filename=name)
    async with aiohttp.ClientSession() as session:
        url = client.make_url("/octoprint/mk3/api/files/local")
        async with session.post(url, data=form, headers=CONTROL) as response:
            return response.status, await response.json()


async def jobs_of(client: Any) -> list[dict[str, Any]]:
    """The finished jobs of mk3."""
    answer = await client.get("/api/jobs/history?printer=mk3&limit=500", headers=CONTROL)
    return (await answer.json())["jobs"]


async def cancel_and_settle(client: Any) -> None:
    await client.post("/octoprint/mk3/api/job", json={"command": "cancel"}, headers=CONTROL)
    async with asyncio.timeout(10):
        while (await (await client.get("/api/job", headers=CONTROL)).json())["state"] != (
            "Operational"
        ):
            await asyncio.sleep(0.05)


async def test_uploads_of_the_file_being_started_and_starts_race(octo, caplog, seed):
    caplog.set_level(logging.INFO)
    client = octo
    rng = random.Random(seed)
    name = "race.gcode"
    versions = [GCODE + f"; version {i} {rng.random()}\n".encode() for i in range(21)]
    assert (await upload(client, name, versions[0], select="true"))[0] == 201
    before = len(await jobs_of(client))
    start = client.post("/octoprint/mk3/api/job", json={"command": "start"}, headers=CONTROL)
    uploads = [upload(client, name, v) for v in versions[1:]]
    results = await asyncio.gather(start, *uploads)
    assert results[0].status == 204, await results[0].text()
    for status, body in results[1:]:
        assert status in (201, 409), (status, body)
        if status == 409:
            assert isinstance(body["error"], str), body
    stored = (client.jobs.files.directory / name).read_bytes()
    assert stored in versions
    assert client.jobs.queue("mk3") == []
    await cancel_and_settle(client)
    assert len(await jobs_of(client)) == before + 1

    # ten starts at once: one job
    before = len(await jobs_of(client))
    answers = await asyncio.gather(
        *(
            client.post("/octoprint/mk3/api/job", json={"command": "start"}, headers=CONTROL)
            for _ in range(10)
        )
    )
    statuses = sorted(a.status for a in answers)
    assert statuses.count(204) == 1 and set(statuses) <= {204, 409}, statuses
    for answer in answers:
        if answer.status == 409:
            assert isinstance((await answer.json())["error"], str)
    assert client.jobs.queue("mk3") == []
    await cancel_and_settle(client)
    assert len(await jobs_of(client)) == before + 1
    check_log(caplog, f"upload and start races (HYDROGEN_TEST_SEED={seed})")


async def test_a_download_of_a_file_deleted_meanwhile_is_octoprints_404_or_the_whole_file(
    octo, caplog, monkeypatch
):
    """A file deleted between the download's lookup and its open is OctoPrint's 404
    ``{"error": ...}`` (it was an empty 404); one deleted while it is sent is sent
    whole as it was."""
    caplog.set_level(logging.INFO)
    client = octo
    adapter = adapter_of(client)
    directory = client.jobs.files.directory
    call = adapter.api.call

    async def then_deleted(name: str, members: Any, *args: Any, **kwargs: Any) -> Any:
        answer = await call(name, members, *args, **kwargs)
        if name == "file" and members.get("file") == "gone.gcode":
            (directory / "gone.gcode").unlink()
        return answer

    assert (await upload(client, "gone.gcode", b"G28\n"))[0] == 201
    monkeypatch.setattr(adapter.api, "call", then_deleted)
    response = await client.get("/octoprint/mk3/downloads/files/local/gone.gcode", headers=CONTROL)
    assert response.status == 404
    assert isinstance((await response.json())["error"], str)
    monkeypatch.undo()

    data = GCODE * 400  # ~1 MB
    assert (await upload(client, "big.gcode", data))[0] == 201
    url = "/octoprint/mk3/downloads/files/local/big.gcode"
    head = await client.head(url, headers=CONTROL)
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(data)
    assert await head.read() == b""
    response = await client.get(url, headers=CONTROL)
    first = await response.content.read(1000)
    deleted = await client.delete("/octoprint/mk3/api/files/local/big.gcode", headers=CONTROL)
    assert deleted.status == 204
    assert first + await response.read() == data
    check_log(caplog, "download and delete")


async def test_select_and_delete_race(octo, caplog, seed):
    """Select and delete of one file at once: whichever wins, a deleted file is not
    left selected (``start`` would print nothing, or a file uploaded later under the
    name)."""
    caplog.set_level(logging.INFO)
    client = octo
    adapter = adapter_of(client)
    rng = random.Random(seed)
    for round_ in range(12):
        name = f"sel-{round_}.gcode"
        assert (await upload(client, name, b"G28\n"))[0] == 201
        select = client.post(
            f"/octoprint/mk3/api/files/local/{name}", json={"command": "select"}, headers=CONTROL
        )
        delete = client.delete(f"/octoprint/mk3/api/files/local/{name}", headers=CONTROL)
        pair = [select, delete] if rng.random() < 0.5 else [delete, select]
        for answer in await asyncio.gather(*pair):
            assert answer.status in (204, 404, 409), await answer.text()
        exists = (client.jobs.files.directory / name).exists()
        if not exists:
            assert adapter.selected.get("mk3") != name, f"round {round_}: a deleted file selected"
    job = await client.get("/octoprint/mk3/api/job", headers=CONTROL)
    assert job.status == 200
    check_log(caplog, f"select and delete (HYDROGEN_TEST_SEED={seed})")
