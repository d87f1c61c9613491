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
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
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
    dotted = _describe(["mk3.left"])[0]
    assert dotted.txt["path"] == "/octoprint/mk3.left/"  # the path keeps the real name


def test_the_host_name_is_its_first_label() -> None:
    assert instance_name("mk3", "octopi.fritz.box") == "mk3 on octopi"
    assert instance_name("mk3", "") == "mk3 on localhost"
    assert discovery.server_name("octo_pi.lan") == "octo-pi.local."
    assert discovery.server_name("...") == "hydrogen.local."


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
