"""Zeroconf discovery (hydrogen/discovery.py): what is announced, and that it is found.

The pure part (names, TXT records, addresses) is tested as values in, services out.
The announcement itself is tested between two network namespaces of this test's own
joined by a veth pair: the gateway in one, tests/discovery_browser.py (the zeroconf
library's browser, then an HTTP GET of what it found) in the other. No mDNS packet may
leave this machine, so every gateway here that could announce runs in a namespace;
everywhere else in tests/ and bench/ `serve` gets --no-announce (checked below).
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hydrogen import discovery
from hydrogen.discovery import (
    HTTP_TYPE,
    INSTANCE_BYTES,
    OCTOPRINT_TYPE,
    Address,
    choose_addresses,
    describe,
    instance_label,
    instance_name,
)
from hydrogen.octoprint.answers import API_VERSION, OCTOPRINT_VERSION
from tests.process import clean_env

ROOT = Path(__file__).resolve().parent.parent
KEY = "discovery-key-0123456789"
LONG = "long-" + "n" * 59  # 64 characters, the longest printer name the config allows


def _describe(printers: Sequence[str], hostname: str = "octopi", host_id: str = "id") -> list:
    return describe(
        printers,
        5001,
        hostname,
        host_id=host_id,
        octoprint_version="1.11.0",
        api_version="0.1",
        model="Raspberry Pi 4 Model B Rev 1.4",
    )


# -- the pure part ----------------------------------------------------------------------


def test_each_printer_is_an_octoprint_and_the_dashboard_is_http() -> None:
    services = _describe(["mk3", "mini"])
    assert [(s.type, s.instance, s.port) for s in services] == [
        (OCTOPRINT_TYPE, "mk3 on octopi", 5001),
        (OCTOPRINT_TYPE, "mini on octopi", 5001),
        (HTTP_TYPE, "Hydrogen on octopi", 5001),
    ]
    mk3 = services[0].txt
    assert mk3["path"] == "/octoprint/mk3/"
    assert (mk3["version"], mk3["api"]) == ("1.11.0", "0.1")
    assert mk3["model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert str(uuid.UUID(mk3["uuid"])) == mk3["uuid"]
    assert services[2].txt == {"path": "/"}
    assert services[0].name == "mk3 on octopi._octoprint._tcp.local."


def test_the_uuid_is_stable_and_distinct() -> None:
    first, again = _describe(["mk3", "mini"]), _describe(["mk3", "mini"])
    assert [s.txt.get("uuid") for s in first] == [s.txt.get("uuid") for s in again]
    assert first[0].txt["uuid"] != first[1].txt["uuid"]
    other_gateway = _describe(["mk3"], host_id="other")
    assert other_gateway[0].txt["uuid"] != first[0].txt["uuid"]


def test_the_gateway_identity_is_the_host_and_the_state_dir(tmp_path: Path) -> None:
    one = discovery.gateway_identity(str(tmp_path / "a"))
    assert one == discovery.gateway_identity(str(tmp_path / "a"))
    assert one != discovery.gateway_identity(str(tmp_path / "b"))


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("mk3.left", "mk3-left"),  # a dot would split the instance into two labels
        ("a\x00b\nc\x7fd", "a b c d"),  # control characters are forbidden
        ("  spaced   out ", "spaced out"),
        ("Drucker Küche", "Drucker Küche"),  # Net-Unicode is fine
    ],
)
def test_instance_labels(raw: str, label: str) -> None:
    assert instance_label(raw) == label


def test_long_names_are_cut_to_fit_a_label_with_room_for_a_rename() -> None:
    host = "a-host-name-that-is-long.example.lan"
    name = instance_name(LONG, host)
    assert len(name.encode()) <= INSTANCE_BYTES
    assert name == LONG[:INSTANCE_BYTES]  # no room for " on <host>": the printer's name wins
    short = instance_name("mk3", "h" * 80)
    assert short.startswith("mk3 on hhh") and len(short.encode()) == INSTANCE_BYTES
    # a cut never splits a character
    accented = instance_name("é" * 40, "host")
    assert len(accented.encode()) <= INSTANCE_BYTES
    assert accented == "é" * (INSTANCE_BYTES // 2)


def test_printers_that_come_out_the_same_are_told_apart() -> None:
    names = [s.instance for s in _describe(["mk3.left", "mk3-left", LONG, LONG[:-1] + "2"])]
    assert names[0] == "mk3-left on octopi"
    assert names[1] == "mk3-left on octopi-2"
    assert len(set(n.casefold() for n in names)) == len(names)
    assert all(len(n.encode()) <= INSTANCE_BYTES for n in names)
    hydrogen = _describe(["Hydrogen"])  # another type: both keep their name
    assert [s.instance for s in hydrogen] == ["Hydrogen on octopi", "Hydrogen on octopi"]
    dotted = _describe(["mk3.left"])[0]
    assert dotted.txt["path"] == "/octoprint/mk3.left/"  # the path keeps the real name


def test_the_host_name_is_its_first_label() -> None:
    assert instance_name("mk3", "octopi.fritz.box") == "mk3 on octopi"
    assert instance_name("mk3", "") == "mk3 on localhost"
    one, other = discovery.server_name("octo_pi.lan", "id"), discovery.server_name("octo_pi", "2")
    assert one.startswith("octo-pi-") and one.endswith(".local.") and len(one) == 19
    assert one == discovery.server_name("octo_pi.lan", "id") != other  # stable, the gateway's
    assert discovery.server_name("...", "id").startswith("hydrogen-")


def test_zeroconf_accepts_every_name_even_renamed() -> None:
    pytest.importorskip("zeroconf", reason="the zeroconf package (the 'discovery' extra)")
    from zeroconf import ServiceInfo
    from zeroconf._utils.name import service_type_name

    hostile = ["mk3.left", "a\tb", LONG, "é" * 64, "_under", "x" * 64]
    for service in _describe(hostile, hostname="ünïcode.host.with.dots" * 3):
        for name in (service.name, f"{service.instance}-99.{service.type}"):
            service_type_name(name)  # raises on a label over 63 bytes or a control character
        ServiceInfo(service.type, service.name, port=service.port, properties=dict(service.txt))


def test_addresses_for_a_wildcard_are_the_interfaces_but_loopback() -> None:
    interfaces = {
        "lo": ["127.0.0.1", "::1"],
        "eth0": ["192.168.1.20", "fe80::1%eth0", "2001:db8::20"],
        "wlan0": ["10.0.0.5"],
    }
    chosen, why = choose_addresses(["0.0.0.0"], interfaces)
    assert why is None
    assert chosen == [Address("192.168.1.20", "eth0"), Address("10.0.0.5", "wlan0")]
    chosen, _ = choose_addresses(["0.0.0.0", "::"], interfaces)
    assert [a.address for a in chosen] == ["192.168.1.20", "10.0.0.5", "2001:db8::20"]


def test_a_specific_address_is_announced_alone() -> None:
    interfaces = {"eth0": ["192.168.1.20"], "wlan0": ["10.0.0.5"]}
    assert choose_addresses(["10.0.0.5"], interfaces) == ([Address("10.0.0.5", "wlan0")], None)


@pytest.mark.parametrize(
    ("bound", "interfaces", "reason"),
    [
        (["127.0.0.1"], {"eth0": ["192.168.1.20"]}, "loopback only (127.0.0.1)"),
        (["127.0.0.1", "::1"], {}, "loopback only (127.0.0.1, ::1)"),
        (["0.0.0.0"], {"lo": ["127.0.0.1"]}, "no address outside loopback"),
        (["::"], {"eth0": ["fe80::1%eth0", "192.168.1.20"]}, "no address outside loopback"),
    ],
)
def test_nothing_to_announce_says_why(bound, interfaces, reason) -> None:
    chosen, why = choose_addresses(bound, interfaces)
    assert chosen == [] and why is not None and reason in why


def test_the_model_is_the_boards_or_hydrogen(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert (
        discovery.host_model([str(tmp_path / "none"), str(model)])
        == "Raspberry Pi 5 Model B Rev 1.0"
    )
    assert discovery.host_model([str(tmp_path / "none")]) == "Hydrogen"


# -- no launch of `serve` in tests/ or bench/ may announce ------------------------------

#: Files whose launches of `serve` announce on purpose: this one (namespaces only).
ANNOUNCING = {Path(__file__).resolve()}
#: Lists holding "serve" that are not a Hydrogen launch without the flag: (file, text of
#: the line) and why.
NOT_A_LAUNCH = {
    ("tests/octoprint_truth/server.py", '"serve", "--basedir"'): (
        "OctoPrint's own serve; its discovery plugin is disabled (DISABLED_PLUGINS)"
    ),
    ("tests/test_cli.py", '["serve", "--config", str(path)]'): (
        "passed to tests.process.hydrogen(*args), which adds --no-announce"
    ),
}


def _launches_without_the_flag(path: Path) -> list[int]:
    """Lines of a list, tuple or call that holds "serve" but not "--no-announce".

    A call of ``hydrogen(...)`` or ``no_announce(...)`` from tests/process.py is fine:
    they add the flag (tested below).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    compared = {
        id(side)
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        for side in [node.left, *node.comparators]
    }
    missing = []
    for node in ast.walk(tree):
        if id(node) in compared:  # exec_start.split()[:2] == [..., "serve"]
            continue
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in ("hydrogen", "no_announce"):
                continue
            items: list[ast.expr] = [*node.args, *(k.value for k in node.keywords)]
        elif isinstance(node, ast.List | ast.Tuple):
            items = list(node.elts)
        else:
            continue
        constants = {
            sub.value
            for item in items
            for sub in ast.walk(item)
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str)
        }
        direct = {i.value for i in items if isinstance(i, ast.Constant)}
        if "serve" in direct and "--no-announce" not in constants:
            missing.append(node.lineno)
    return missing


def test_every_launch_of_serve_in_tests_and_bench_has_no_announce() -> None:
    problems = []
    for path in sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]):
        if path.resolve() in ANNOUNCING:
            continue
        relative = str(path.relative_to(ROOT))
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in _launches_without_the_flag(path):
            if not any(f == relative and text in lines[line - 1] for f, text in NOT_A_LAUNCH):
                problems.append(f"{relative}:{line}: {lines[line - 1].strip()}")
    assert not problems, (
        f"`serve` without --no-announce (mDNS must not leave the machine): {problems}"
    )


def test_no_doc_block_a_test_runs_starts_serve_announcing() -> None:
    """Shell blocks the tests run (``example: run by ...``) must not announce either."""
    block = re.compile(r"<!-- example: run by [^>]*-->\n```[^\n]*\n(.*?)```", re.S)
    problems = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in block.finditer(path.read_text(encoding="utf-8")):
            for line in match.group(1).splitlines():
                if re.search(r"\bhydrogen serve\b", line) and "--no-announce" not in line:
                    problems.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not problems, problems


def test_the_scan_finds_a_launch_without_the_flag(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "subprocess.run([sys.executable, '-m', 'hydrogen', 'serve', '--port', '0'])\n"
        "subprocess.run([sys.executable, '-m', 'hydrogen', 'serve', '--no-announce'])\n"
        "hydrogen('serve', '--port', '0')\n"
    )
    assert _launches_without_the_flag(sample) == [1]


def test_the_process_helpers_add_the_flag() -> None:
    from tests.process import no_announce

    assert no_announce(["serve", "--port", "0"]) == ["serve", "--no-announce", "--port", "0"]
    assert no_announce(["check-config", "x.toml"]) == ["check-config", "x.toml"]


# -- a gateway process, optionally inside a network namespace ----------------------------


@dataclass
class Gateway:
    proc: subprocess.Popen[str]
    port: int
    started: float
    lines: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 15) -> float:
        """SIGTERM; the seconds until it exited."""
        begun = time.monotonic()
        self.proc.terminate()
        try:
            assert self.proc.wait(timeout) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return time.monotonic() - begun


def start(args: Sequence[str], prefix: Sequence[str] = (), command: Sequence[str] = ()) -> Gateway:
    """``hydrogen serve`` (after ``prefix``, e.g. ``ip netns exec NS``) until it listens."""
    started = time.monotonic()
    command = command or [sys.executable, "-m", "hydrogen"]
    proc = subprocess.Popen(
        [
            *prefix,
            *command,
            "serve",
            "--port",
            "0",
            "--log-format",
            "text",
            "--api-key",
            KEY,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    gateway = Gateway(proc, 0, started)
    threading.Thread(target=lambda: gateway.lines.extend(proc.stderr), daemon=True).start()
    for line in proc.stdout:
        if "listening on http://" in line:
            gateway.port = int(line.split("listening on http://", 1)[1].split(":")[1].split("/")[0])
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return gateway
    proc.kill()
    proc.wait()
    raise AssertionError(f"the gateway did not start: {gateway.log()}")


def wait_for_line(gateway: Gateway, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(gateway.lines):
            if text in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no log line with {text!r} in: {gateway.log()}")


# -- without zeroconf, or told not to, the gateway serves on and says so ----------------


def test_without_zeroconf_installed_one_line_says_how_to_install(tmp_path: Path) -> None:
    # Nothing can be sent without the package: safe outside a namespace.
    code = (
        "import sys; sys.modules['zeroconf'] = None; from hydrogen.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    gateway = start(
        ["--host", "127.0.0.1", "--state-dir", str(tmp_path), "--no-printers"],
        command=[sys.executable, "-c", code],
    )
    line = wait_for_line(gateway, "zeroconf")
    gateway.stop()
    assert "the zeroconf package is missing" in line and "pip install" in line, line
    assert "[discovery]" in line
    assert sum("zeroconf" in line for line in gateway.lines) == 1, gateway.log()
    assert "Traceback" not in gateway.log()


@pytest.mark.parametrize("how", ["config", "flag"])
def test_announce_off_is_said_once(tmp_path: Path, how: str) -> None:
    args = ["--host", "127.0.0.1", "--state-dir", str(tmp_path / "state"), "--no-printers"]
    if how == "config":
        config = tmp_path / "hydrogen.toml"
        config.write_text("[octoprint]\nannounce = false\n")
        args += ["--config", str(config)]
    else:
        args += ["--no-announce"]
    gateway = start(args)
    line = wait_for_line(gateway, "zeroconf")
    gateway.stop()
    assert "not announcing (octoprint.announce = false or --no-announce)" in line


def test_announce_must_be_a_boolean(tmp_path: Path) -> None:
    from hydrogen.config import ConfigError, load_config

    config = tmp_path / "hydrogen.toml"
    config.write_text('[octoprint]\nannounce = "no"\n')
    with pytest.raises(ConfigError, match=r"octoprint.announce: expected boolean"):
        load_config(config)


# -- between two network namespaces ------------------------------------------------------


@dataclass
class Net:
    """Namespaces on one link (a bridge in ``b``): ``hosts`` for gateways, each a host of
    its own as on a LAN, and ``b`` for the browser."""

    hosts: list[str]
    addresses: list[str]
    b: str
    address_b: str
    #: The same, IPv6 (unique local addresses).
    addresses6: list[str]
    address_b6: str

    @property
    def a(self) -> str:
        return self.hosts[0]

    @property
    def address_a(self) -> str:
        return self.addresses[0]

    @property
    def address_a6(self) -> str:
        return self.addresses6[0]

    def exec(self, namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@contextmanager
def namespaces(hosts: int = 1) -> Iterator[Net]:
    """Fresh namespaces (their names hold the pid), always deleted afterwards.

    Two gateways on one host would share UDP port 5353 (SO_REUSEPORT), and the unicast
    answer to one's probe could go to the other's socket: each gets a namespace.
    """
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add); discovery not shown")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2); discovery not shown")
    pytest.importorskip("zeroconf", reason="the zeroconf package (the 'discovery' extra)")
    pid = os.getpid()
    subnet, subnet6 = f"10.77.{pid % 250}", f"fd77:{pid % 65536:x}:"
    net = Net(
        [f"hyd-{pid}-a{n}" for n in range(hosts)],
        [f"{subnet}.{n + 1}" for n in range(hosts)],
        f"hyd-{pid}-b",
        f"{subnet}.100",
        [f"{subnet6}:{n + 1}" for n in range(hosts)],
        f"{subnet6}:100",
    )
    created: list[str] = []
    try:
        for name in (*net.hosts, net.b):
            try:
                _ip("netns", "add", name)
            except OSError as exc:
                pytest.skip(f"cannot create a network namespace: {exc}")
            created.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", net.b, "link", "add", "br0", "type", "bridge")
        _ip("-n", net.b, "addr", "add", f"{net.address_b}/24", "dev", "br0")
        # nodad: usable at once, not after a second of duplicate address detection
        _ip("-n", net.b, "addr", "add", f"{net.address_b6}/64", "dev", "br0", "nodad")
        _ip("-n", net.b, "link", "set", "br0", "up")
        pairs = zip(net.hosts, net.addresses, net.addresses6, strict=True)
        for n, (name, address, address6) in enumerate(pairs):
            here, there = f"hyd{pid}h{n}", f"hyd{pid}b{n}"
            _ip("link", "add", here, "type", "veth", "peer", "name", there)
            _ip("link", "set", here, "netns", name)
            _ip("link", "set", there, "netns", net.b)
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", here)
            _ip("-n", name, "addr", "add", f"{address6}/64", "dev", here, "nodad")
            _ip("-n", name, "link", "set", here, "up")
            _ip("-n", net.b, "link", "set", there, "master", "br0", "up")
        yield net
    finally:
        for name in created:  # the veth pairs and the bridge go with their namespaces
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)


class Browser:
    """tests/discovery_browser.py in namespace ``b``; its JSON lines in a queue."""

    def __init__(self, net: Net) -> None:
        self.proc = subprocess.Popen(
            [
                *net.exec(net.b),
                *(sys.executable, str(ROOT / "tests" / "discovery_browser.py")),
                *("--address", net.address_b, "--address", net.address_b6),
                *("--key", KEY, "--seconds", "120"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda e: e["event"] == "browsing")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def wait(self, match, timeout: float = 15.0) -> dict:
        """The next event (after those already seen) that ``match`` accepts."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(event)
            if match(event):
                return event
        raise AssertionError(f"no matching event within {timeout} s; seen: {self.seen}")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def browsing(net: Net) -> Iterator[Browser]:
    browser = Browser(net)
    try:
        yield browser
    finally:
        browser.close()


def _collect(
    browser: Browser, names: set[str], kinds: set[str], timeout: float = 15
) -> dict[tuple[str, str], dict]:
    """Wait until every (kind, name) event in the product has arrived; them by key."""
    wanted = {(k, n) for k in kinds for n in names}
    found: dict[tuple[str, str], dict] = {}
    deadline = time.monotonic() + timeout
    while wanted - set(found):
        left = max(deadline - time.monotonic(), 0.01)
        event = browser.wait(lambda e: (e["event"], e.get("name")) in wanted - set(found), left)
        found[(event["event"], event["name"])] = event
    return found


def test_every_printer_is_found_fetched_and_withdrawn(tmp_path: Path) -> None:
    printers = ["a", "b.left", LONG]
    host = socket.gethostname()
    names = {printer: instance_name(printer, host) + "." + OCTOPRINT_TYPE for printer in printers}
    dashboard = instance_name("Hydrogen", host) + "." + HTTP_TYPE
    flags = [f"--printer={p}=simulator" for p in printers]
    with namespaces() as net, browsing(net) as browser:
        uuids: list[dict[str, str]] = []
        for run in range(2):  # the uuids survive a restart
            gateway = start(["--state-dir", str(tmp_path), *flags], prefix=net.exec(net.a))
            try:
                found = _collect(browser, {*names.values(), dashboard}, {"resolved", "fetched"})
            finally:
                took = gateway.stop()
            # SIGTERM to exit, then every goodbye seen within 3 s of the exit
            assert took < 5, f"shutdown took {took:.1f} s"
            _collect(browser, {*names.values(), dashboard}, {"removed"}, timeout=3)
            log = gateway.log()
            assert log.count("zeroconf: announced") == 4, log
            assert "zeroconf: withdrawn" in log, log
            for printer, name in names.items():
                service = found[("resolved", name)]
                assert service["addresses"] == [net.address_a]
                assert service["port"] == gateway.port
                txt = service["txt"]
                assert txt["path"] == f"/octoprint/{printer}/"
                assert (txt["version"], txt["api"]) == (OCTOPRINT_VERSION, API_VERSION)
                assert txt["model"] == discovery.host_model()
                fetched = found[("fetched", name)]
                assert fetched["url"].endswith(f":{gateway.port}/octoprint/{printer}/api/version")
                assert fetched["status"] == 200, fetched
                assert json.loads(fetched["body"])["server"] == OCTOPRINT_VERSION
            uuids.append({p: found[("resolved", n)]["txt"]["uuid"] for p, n in names.items()})
            http = found[("resolved", dashboard)]
            assert http["txt"] == {"path": "/"} and http["addresses"] == [net.address_a]
            assert found[("fetched", dashboard)]["status"] == 200
            assert len(names[LONG].split(".")[0].encode()) <= INSTANCE_BYTES
            print(f"\nrun {run}: SIGTERM to exit {took:.2f} s (goodbyes included)")
        assert uuids[0] == uuids[1]
        assert len(set(uuids[0].values())) == len(printers)


def test_two_gateways_with_the_same_printer_are_both_found(tmp_path: Path) -> None:
    """The second responder finds the name taken while probing and renames itself."""
    host = socket.gethostname()
    first = instance_name("mk3", host) + "." + OCTOPRINT_TYPE
    second = instance_name("mk3", host) + "-2." + OCTOPRINT_TYPE
    with namespaces(hosts=2) as net, browsing(net) as browser:
        gateways = []
        try:
            for n, namespace in enumerate(net.hosts):
                state = tmp_path / f"state{n}"
                args = ["--state-dir", str(state), "--printer=mk3=simulator"]
                gateways.append(start(args, net.exec(namespace)))
                wait_for_line(gateways[-1], "zeroconf: announced")
            found = _collect(browser, {first, second}, {"resolved", "fetched"})
        finally:
            for gateway in gateways:
                gateway.stop()
        assert "renamed from" in gateways[1].log(), gateways[1].log()
        where = [
            (found[("resolved", n)]["addresses"], found[("resolved", n)]["port"])
            for n in (first, second)
        ]
        assert where == [([a], g.port) for a, g in zip(net.addresses, gateways, strict=True)]
        assert all(found[("fetched", name)]["status"] == 200 for name in (first, second))
        uuids = {found[("resolved", name)]["txt"]["uuid"] for name in (first, second)}
        assert len(uuids) == 2  # two gateways, two OctoPrints


def test_a_gateway_on_loopback_only_announces_nothing_and_says_why(tmp_path: Path) -> None:
    with namespaces() as net:  # a namespace even here: a bug must not reach eth0
        gateway = start(
            ["--host", "127.0.0.1", "--state-dir", str(tmp_path), "--no-printers"],
            prefix=net.exec(net.a),
        )
        line = wait_for_line(gateway, "zeroconf")
        gateway.stop()
    assert "not announcing: the gateway listens on loopback only (127.0.0.1)" in line, line


def test_a_host_without_an_address_yet_is_looked_at_again(tmp_path: Path) -> None:
    with namespaces() as net:
        _ip("-n", net.a, "addr", "flush", "scope", "global")  # lo's 127.0.0.1 is scope host
        gateway = start(["--state-dir", str(tmp_path), "--no-printers"], prefix=net.exec(net.a))
        line = wait_for_line(gateway, "zeroconf")
        gateway.stop()
    assert "not announcing yet: no address outside loopback" in line, line
    assert "looking again every 30 s" in line, line


def _mk3_resolved_and_fetched(
    net: Net, browser: Browser, args: list[str]
) -> tuple[str, dict[tuple[str, str], dict]]:
    """Start a gateway with printer mk3 in namespace A, wait until the browser has
    resolved its service and fetched its root, stop it: the service name and records."""
    gateway = start([*args, "--printer=mk3=simulator"], prefix=net.exec(net.a))
    try:
        name = instance_name("mk3", socket.gethostname()) + "." + OCTOPRINT_TYPE
        return name, _collect(browser, {name}, {"resolved", "fetched"})
    finally:
        gateway.stop()


def test_a_specific_address_is_the_only_one_announced(tmp_path: Path) -> None:
    with namespaces() as net, browsing(net) as browser:
        _ip("-n", net.a, "addr", "add", "10.78.0.1/24", "dev", "lo")  # a second address
        name, found = _mk3_resolved_and_fetched(
            net, browser, ["--host", net.address_a, "--state-dir", str(tmp_path)]
        )
    assert found[("resolved", name)]["addresses"] == [net.address_a]
    assert found[("fetched", name)]["status"] == 200


@pytest.mark.parametrize(
    ("host", "ipv6", "port"),
    [("::", False, "5001"), ("0.0.0.0", True, "5001"), ("0.0.0.0", True, "0")],
    ids=["ipv6-only", "dual-stack", "dual-stack-port-0"],
)
def test_ipv6_addresses_are_announced(tmp_path: Path, host: str, ipv6: bool, port: str) -> None:
    config = tmp_path / "hydrogen.toml"
    config.write_text(f"[server]\nipv6 = {str(ipv6).lower()}\n")
    with namespaces() as net, browsing(net) as browser:
        # with port 0 the IPv4 and IPv6 sockets get different ports: one SRV port is
        # announced, with the addresses of the socket that has it
        name, found = _mk3_resolved_and_fetched(
            net,
            browser,
            [
                *("--config", str(config), "--host", host, "--port", port),
                *("--state-dir", str(tmp_path / "state")),
            ],
        )
    wanted = [net.address_a6] if host == "::" else [net.address_a, net.address_a6]
    announced = found[("resolved", name)]["addresses"]
    if port == "0":
        assert len(announced) == 1 and announced[0] in wanted, announced
    else:
        assert sorted(announced) == sorted(wanted)
    fetched = found[("fetched", name)]
    assert fetched["status"] == 200, fetched
    if host == "::":
        assert fetched["url"].startswith(f"http://[{net.address_a6}]:5001/octoprint/mk3/")


# -- the I/O part's failures are log lines, and shutdown stays bounded -------------------


class _FakeZeroconf:
    """Stands in for zeroconf.asyncio.AsyncZeroconf; nothing touches the network."""

    register_error: Exception | None = None
    hang_on_goodbye = False
    made: list[_FakeZeroconf] = []

    def __init__(self, interfaces, ip_version=None) -> None:
        self.interfaces = interfaces
        self.registered: list = []
        self.closed = False
        self.made.append(self)

    async def async_register_service(self, info, allow_name_change=False):
        if self.register_error is not None:
            raise self.register_error
        self.registered.append(info)

    async def async_unregister_all_services(self) -> None:
        if self.hang_on_goodbye:
            await asyncio.sleep(3600)

    async def async_close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_zeroconf(monkeypatch):
    pytest.importorskip("zeroconf", reason="the zeroconf package (the 'discovery' extra)")
    import zeroconf.asyncio

    monkeypatch.setattr(zeroconf.asyncio, "AsyncZeroconf", _FakeZeroconf)
    monkeypatch.setattr(discovery, "WITHDRAW_SECONDS", 0.2)
    monkeypatch.setattr(_FakeZeroconf, "register_error", None)
    monkeypatch.setattr(_FakeZeroconf, "hang_on_goodbye", False)
    monkeypatch.setattr(_FakeZeroconf, "made", [])
    monkeypatch.setattr(discovery, "REFRESH_SECONDS", 0.05)
    return _FakeZeroconf


def _announcer() -> discovery.Announcer:
    return discovery.Announcer(_describe(["mk3"]), [Address("192.0.2.10", "eth0")], "h.local.")


async def test_a_failed_registration_is_a_warning_and_stop_still_works(
    fake_zeroconf, caplog
) -> None:
    fake_zeroconf.register_error = OSError("no multicast here")
    announcer = _announcer()
    announcer.start()
    await asyncio.sleep(0.3)
    await announcer.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("cannot announce 'mk3 on octopi'" in w and "no multicast" in w for w in warnings)


async def test_a_hung_goodbye_is_left_after_the_bound(fake_zeroconf, caplog) -> None:
    fake_zeroconf.hang_on_goodbye = True
    announcer = _announcer()
    announcer.start()
    await asyncio.sleep(0.3)
    begun = time.monotonic()
    await announcer.stop()
    assert time.monotonic() - begun < 1
    assert any("withdrawing took more than" in r.getMessage() for r in caplog.records)


async def test_stop_during_registration_cancels_it(fake_zeroconf) -> None:
    announcer = _announcer()
    announcer.start()
    await announcer.stop()  # before the background task ran at all
    assert announcer._zeroconf is None


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_new_addresses_are_announced_anew(fake_zeroconf, caplog) -> None:
    caplog.set_level("INFO", logger="hydrogen.discovery")
    answers = iter([[Address("192.0.2.10", "eth0")]] * 2 + [[Address("192.0.2.77", "wlan0")]])
    announcer = discovery.Announcer(
        _describe(["mk3"]),
        [Address("192.0.2.10", "eth0")],
        "h.local.",
        refresh=lambda: next(answers, [Address("192.0.2.77", "wlan0")]),
    )
    announcer.start()
    await _until(lambda: len(fake_zeroconf.made) == 2 and fake_zeroconf.made[1].registered)
    first, second = fake_zeroconf.made
    assert first.closed and first.interfaces == ["192.0.2.10"]
    assert second.interfaces == ["192.0.2.77"]
    assert {tuple(i.parsed_addresses()) for i in second.registered} == {("192.0.2.77",)}
    await asyncio.sleep(0.2)  # unchanged since: nothing more
    assert len(fake_zeroconf.made) == 2
    await announcer.stop()
    assert second.closed
    assert any("192.0.2.10 -> 192.0.2.77" in r.getMessage() for r in caplog.records)


async def test_no_address_at_start_is_announced_once_one_comes(fake_zeroconf) -> None:
    answers = iter([[], [], [Address("192.0.2.10", "eth0")]])
    announcer = discovery.Announcer(
        _describe(["mk3"]),
        [],
        "h.local.",
        refresh=lambda: next(answers, [Address("192.0.2.10", "eth0")]),
    )
    announcer.start()
    await _until(lambda: fake_zeroconf.made and len(fake_zeroconf.made[0].registered) == 2)
    await announcer.stop()
    assert len(fake_zeroconf.made) == 1 and fake_zeroconf.made[0].closed
