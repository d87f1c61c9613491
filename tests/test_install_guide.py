"""The install guide (README "Install on a printer host" and docs/install.md) works.

The guides' ``sh`` blocks are run for real by bash, from the top of the checkout, in a
scratch "root": every path under /etc/hydrogen, /etc/prometheus, /etc/systemd/system,
/opt/hydrogen and /var/lib/hydrogen is moved under a temporary directory, and the
commands that need root or a running systemd are replaced by shims on $PATH:

* ``useradd``, ``apt-get``, ``systemctl``, ``journalctl``, ``curl``: recorded only;
* ``install``: the real one, minus ``-o``/``-g`` (ownership needs root; the intended
  owners are checked from the record instead);
* ``python3 -m venv``: a fake venv whose ``pip`` is recorded and whose ``hydrogen`` is
  ``python -m hydrogen`` from this checkout (``pip install .`` itself is slow and the
  package's console script is checked separately); any other ``python3`` is real;
* ``runuser -u USER --``: runs the command as the current user;
* ``promtool check config``: the real promtool, on a copy of the file whose
  /etc/prometheus paths point into the scratch root.

Everything else (``sed``, key generation, ``hydrogen check-config``, ``install -m``)
runs for real, and a command the test does not know fails the test rather than run on
the build machine.  Afterwards the scratch root must look like an installed host:
files, modes, intended owners, the unit's paths, and a gateway started the way systemd
starts it must accept the key Prometheus was given.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from hydrogen import __version__
from tests.process import clean_env, hydrogen, start_gateway

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "install.md"
UNIT = ROOT / "systemd" / "hydrogen.service"
SECTION = "## Install on a printer host"
PROMTOOL = shutil.which("promtool")

#: Absolute paths the guide may write to; all are moved into the scratch root.
SANDBOXED = (
    "/etc/hydrogen",
    "/etc/prometheus",
    "/etc/systemd/system",
    "/opt/hydrogen",
    "/var/lib/hydrogen",
)
_SANDBOXED_RE = re.compile(
    r"(?<![\w/.-])(" + "|".join(re.escape(p) for p in SANDBOXED) + r")(?=[/\s'\"|;>]|$)"
)
#: Paths that must not be touched outside the sandboxed ones.
_SYSTEM_PATH_RE = re.compile(r"(?<![\w.-])/(?:etc|opt|var|srv|home|root|boot|usr/local)/")
#: Programs the guides may run (shimmed or harmless on scratch files).
ALLOWED_PROGRAMS = {
    "useradd",
    "apt-get",
    "python3",
    "install",
    "sed",
    "printf",
    "runuser",
    "systemctl",
    "journalctl",
    "curl",
    "promtool",
    "/opt/hydrogen/venv/bin/pip",
    "/opt/hydrogen/venv/bin/hydrogen",
}
_OPERATORS = {"|", "||", "&&", ";", "&"}
_REDIRECTS = {">", ">>", "<"}


# --- reading the guides -------------------------------------------------------------------


def readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(f"\n{SECTION}\n") == 1, f"README needs exactly one {SECTION!r}"
    section = text.split(f"\n{SECTION}\n", 1)[1]
    return section.split("\n## ", 1)[0]


def guide_text() -> str:
    """docs/install.md without its "Uninstalling" part (not run)."""
    text = GUIDE.read_text(encoding="utf-8")
    return re.split(r"^## Uninstall", text, flags=re.MULTILINE)[0]


DOCS = {"README": (README, readme_section), "docs/install.md": (GUIDE, guide_text)}


def fenced_blocks(markdown: str, language: str) -> list[str]:
    pattern = re.compile(
        rf"^([ \t]*)```{language}[ \t]*\n(.*?)^\1```[ \t]*$", re.MULTILINE | re.DOTALL
    )
    blocks = []
    for indent, body in pattern.findall(markdown):
        lines = [
            line[len(indent) :] if line.startswith(indent) else line for line in body.splitlines()
        ]
        blocks.append("\n".join(lines) + "\n")
    return blocks


def shell_commands(script: str) -> list[list[str]]:
    """Each simple command of a script as its words (comments, continuations handled)."""
    commands: list[list[str]] = []
    logical = script.replace("\\\n", " ")
    for line in logical.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token in _OPERATORS:
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands


def checked_script(doc: str) -> str:
    """The doc's sh blocks as one script, after checking it only runs known programs
    and writes nowhere outside the sandboxed paths."""
    _, text = DOCS[doc]
    script = "".join(fenced_blocks(text(), "sh"))
    assert script.strip(), f"{doc}: no sh blocks"
    for words in shell_commands(script):
        assert words[0] in ALLOWED_PROGRAMS, (
            f"{doc}: the test does not know how to run {words[0]!r} safely; add a shim"
        )
        for i, word in enumerate(words[:-1]):
            if word in _REDIRECTS and words[i + 1] != "/dev/null":
                assert _SANDBOXED_RE.match(words[i + 1]), f"{doc}: redirect to {words[i + 1]}"
    leftover = _SYSTEM_PATH_RE.findall(_SANDBOXED_RE.sub("", script))
    assert not leftover, f"{doc}: paths outside {SANDBOXED}: {leftover}"
    return script


# --- the scratch root ---------------------------------------------------------------------


@dataclass
class Installed:
    root: Path
    log: list[str]
    stdout: str

    def path(self, system_path: str) -> Path:
        return self.root / system_path.lstrip("/")

    def calls(self, program: str) -> list[str]:
        return [line for line in self.log if line.split(" ", 1)[0] == program]

    def index(self, prefix: str) -> int:
        for i, line in enumerate(self.log):
            if line.startswith(prefix):
                return i
        raise AssertionError(f"never ran: {prefix!r}\n" + "\n".join(self.log))


def write_shim(directory: Path, name: str, body: str) -> None:
    shim = directory / name
    shim.write_text("#!/bin/bash\nset -eu\n" + body, encoding="utf-8")
    shim.chmod(0o755)


def make_shims(bin_dir: Path, root: Path, log: Path) -> None:
    record = f'printf "%s\\n" "$(basename "$0") $*" >> {shlex.quote(str(log))}\n'
    for name in ("useradd", "apt-get", "systemctl", "journalctl", "curl"):
        write_shim(bin_dir, name, record)
    install = shutil.which("install")
    assert install
    write_shim(
        bin_dir,
        "install",
        record
        + "args=()\n"
        + 'while [ $# -gt 0 ]; do case "$1" in\n'
        + "  -o|-g|--owner|--group) shift 2 ;;\n"
        + "  -o*|-g*|--owner=*|--group=*) shift ;;\n"
        + '  *) args+=("$1"); shift ;;\n'
        + "esac; done\n"
        + f'exec {shlex.quote(install)} "${{args[@]}}"\n',
    )
    write_shim(
        bin_dir,
        "runuser",
        record + 'while [ "$1" != "--" ]; do shift; done\nshift\nexec "$@"\n',
    )
    python = shlex.quote(sys.executable)
    # What `python3 -m venv DIR` leaves in DIR/bin: a recorded pip, and a hydrogen
    # console script that runs this checkout.
    templates = bin_dir / "venv-templates"
    templates.mkdir()
    pip_record = f'printf "%s\\n" "pip $* (cwd=$PWD)" >> {shlex.quote(str(log))}\n'
    write_shim(templates, "pip", pip_record)
    write_shim(templates, "hydrogen", f'exec {python} -m hydrogen "$@"\n')
    write_shim(
        bin_dir,
        "python3",
        'if [ "${1:-}" = "-m" ] && [ "${2:-}" = "venv" ]; then\n'
        + record
        + f'  mkdir -p "$3/bin" && cp -p {shlex.quote(str(templates))}/* "$3/bin/"\n'
        + "  exit 0\nfi\n"
        + f'exec {python} "$@"\n',
    )
    promtool = (
        'if [ "${1:-} ${2:-}" = "check config" ]; then\n'
        '  f="${@: -1}"; copy="$(dirname "$f")/.sandbox-$(basename "$f")"\n'
        f'  sed "s|/etc/prometheus/|{root}/etc/prometheus/|g" "$f" > "$copy"\n'
        f'  exec {shlex.quote(PROMTOOL)} check config "$copy"\n'
        "fi\n"
        f'exec {shlex.quote(PROMTOOL)} "$@"\n'
        if PROMTOOL
        else "exit 0\n"  # not installed: recorded only
    )
    write_shim(bin_dir, "promtool", record + promtool)


def run_guide(doc: str, tmp_path: Path) -> Installed:
    script = checked_script(doc)
    root = tmp_path / "root"
    # What a Debian host with systemd and Prometheus already has.
    for directory in ("etc/systemd/system", "etc/prometheus", "opt"):
        (root / directory).mkdir(parents=True)
    bin_dir = tmp_path / "shims"
    bin_dir.mkdir()
    log = tmp_path / "commands.log"
    log.touch()
    make_shims(bin_dir, root, log)
    script = _SANDBOXED_RE.sub(lambda m: str(root) + m.group(1), script)
    env = clean_env(
        {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT),
            "HOME": str(tmp_path / "home"),
        }
    )
    result = subprocess.run(
        ["bash", "-euxo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{doc}: a command failed:\n{result.stdout}\n{result.stderr}"
    return Installed(root, log.read_text(encoding="utf-8").splitlines(), result.stdout)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def unit_entries() -> dict[str, str]:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return dict(parser["Service"])


# --- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS)
def test_guide_installs_a_working_host(doc: str, tmp_path: Path) -> None:
    host = run_guide(doc, tmp_path)
    etc = host.path("/etc/hydrogen")

    # The config: copied, group-readable, monitor key read from a file now.
    config = etc / "hydrogen.toml"
    assert mode(config) == 0o640
    text = config.read_text(encoding="utf-8")
    assert not re.search(r"^key_env", text, re.MULTILINE)
    assert f'key_file = "{etc / "monitor_key"}"' in text
    assert re.search(
        rf"^{re.escape(str(config))}: OK \(1 key\(s\), 1 printer\(s\)", host.stdout, re.M
    )

    # The keys: distinct, long enough, root-only control key.
    control = (etc / "api_key").read_text(encoding="utf-8").strip()
    monitor = (etc / "monitor_key").read_text(encoding="utf-8").strip()
    assert len(control) >= 24 and len(monitor) >= 24 and control != monitor
    assert mode(etc / "api_key") == 0o600
    assert mode(etc / "monitor_key") == 0o640

    # The intended owners (the shim cannot chown): group hydrogen may read the config and
    # the monitor key, only root the control key, group prometheus its copy.
    installs = host.calls("install")

    def install_of(name: str) -> str:
        found = [c for c in installs if re.search(rf"{re.escape(name)}( |$)", c)]
        assert found, f"{name} is never installed"
        return found[0]

    assert "-g hydrogen" in install_of("/hydrogen.toml")
    assert "-g hydrogen" in install_of("/monitor_key")
    assert not re.search(r" -[og] ", install_of("/api_key"))
    assert "-g prometheus" in install_of("/etc/prometheus/hydrogen.key")

    useradd = host.calls("useradd")
    assert len(useradd) == 1
    words = useradd[0].split()
    assert "--system" in words and words[-1] == "hydrogen"
    assert "--shell /usr/sbin/nologin" in useradd[0] and "--groups dialout" in useradd[0]
    assert host.index("useradd") < host.index("install -m 0640 -g hydrogen")

    # The package: pip installs this checkout.
    assert host.calls("pip") == [f"pip install .[discovery] (cwd={ROOT})"]

    # The unit: installed unchanged, and every path it relies on now exists.
    installed_unit = host.path("/etc/systemd/system/hydrogen.service")
    assert installed_unit.read_bytes() == UNIT.read_bytes()
    assert mode(installed_unit) == 0o644
    service = unit_entries()
    program, *args = service["ExecStart"].split()
    assert host.path(program).exists(), program
    assert host.path(args[args.index("--config") + 1]).exists()
    credential = service["LoadCredential"].split(":", 1)
    assert credential[0] == "api_key"
    assert host.path(credential[1]).read_text(encoding="utf-8").strip() == control
    assert service["User"] == words[-1]
    assert (
        host.index("install -m 0644 systemd/hydrogen.service")
        < host.index("systemctl daemon-reload")
        < host.index("systemctl enable --now hydrogen")
    )
    assert host.index("runuser") < host.index("systemctl enable")
    assert host.calls("journalctl") == ["journalctl -u hydrogen -f"]

    # Prometheus: the monitor key, the rules, a config that promtool accepts.
    prom_key = host.path("/etc/prometheus/hydrogen.key")
    assert prom_key.read_text(encoding="utf-8").strip() == monitor
    assert mode(prom_key) == 0o640
    rules = host.path("/etc/prometheus/hydrogen-alerts.yml")
    assert rules.read_bytes() == (ROOT / "config" / "hydrogen-alerts.yml").read_bytes()
    assert host.index("promtool check config") < host.index("systemctl reload prometheus")
    if PROMTOOL:
        assert "SUCCESS" in host.stdout

    # The gateway, started the way the unit starts it, accepts the key Prometheus sends
    # (monitor, from the config's key_file) and the control key systemd passes in.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(host.path(credential[1]), credentials / "api_key")
    gateway = start_gateway(
        ["--config", str(config)],
        env={"CREDENTIALS_DIRECTORY": str(credentials), "STATE_DIRECTORY": str(tmp_path / "state")},
    )
    try:
        assert re.search(r"API keys:\s+2 configured", gateway.banner), gateway.banner
        url = f"http://127.0.0.1:{gateway.port}/metrics"
        for key in (monitor, control):
            request = urllib.request.Request(url, headers={"Authorization": f"Key {key}"})
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
                assert b"hydrogen_build_info" in response.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
    finally:
        gateway.stop()


_CHECKOUT_PATH = re.compile(
    r"(?<![\w/.-])((?:config|systemd|docs|tests|web|hydrogen)/[\w.\-/]*[\w])"
)
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS)
def test_every_file_the_guide_names_exists(doc: str) -> None:
    path, text = DOCS[doc]
    body = text() if doc == "README" else path.read_text(encoding="utf-8")
    named = set(_CHECKOUT_PATH.findall(body))
    assert {"config/hydrogen.toml", "systemd/hydrogen.service"} <= named
    for relative in named:
        assert (ROOT / relative).exists(), f"{doc} names {relative}, which does not exist"
    for link in _LINK.findall(body):
        if "://" not in link:
            assert (path.parent / link).exists(), f"{doc} links to {link}, which does not exist"


@pytest.mark.parametrize("doc", DOCS)
def test_guide_covers_keys_printers_and_monitoring(doc: str) -> None:
    _, text = DOCS[doc]
    body = text()
    for needle in (
        "monitor_key",
        "[[keys]]",
        "/dev/serial/by-id/",
        "config/prometheus.yml",
        "config/grafana-dashboard.json",
        "check-config",
    ):
        assert needle in body, f"{doc} does not mention {needle}"
    assert re.search(r"no monitor key\? Leave out the three monitor-key commands", body, re.S)


def test_readme_section_points_to_the_full_guide() -> None:
    assert "docs/install.md" in readme_section()


def test_console_script_and_version() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    scripts = setup["options.entry_points"]["console_scripts"].split("\n")
    assert "hydrogen = hydrogen.cli:main" in [s.strip() for s in scripts]
    result = hydrogen("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"hydrogen {__version__}"


def test_guide_toml_snippets_are_valid_config(tmp_path: Path) -> None:
    snippets = fenced_blocks(GUIDE.read_text(encoding="utf-8"), "toml")
    assert snippets
    for i, snippet in enumerate(snippets):
        path = tmp_path / f"snippet{i}.toml"
        path.write_text(snippet, encoding="utf-8")
        result = hydrogen("check-config", str(path))
        assert result.returncode == 0, f"{snippet}\n{result.stderr}"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_guide_prometheus_snippet(tmp_path: Path) -> None:
    """The YAML the guide tells an operator to merge is a valid config by itself, and
    the same lines as in config/prometheus.yml (in order), so the two cannot drift."""
    shipped = [
        line.rstrip()
        for line in (ROOT / "config" / "prometheus.yml").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    snippets = fenced_blocks(GUIDE.read_text(encoding="utf-8"), "yaml")
    assert snippets
    for snippet in snippets:
        lines = iter(shipped)
        for line in snippet.splitlines():
            if line.strip():
                assert line.rstrip() in lines, f"not in config/prometheus.yml (in order): {line}"
        key = tmp_path / "hydrogen.key"
        key.write_text("monitor-key-0123456789\n", encoding="utf-8")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            snippet.replace("/etc/prometheus/hydrogen.key", str(key)), encoding="utf-8"
        )
        shutil.copy(ROOT / "config" / "hydrogen-alerts.yml", tmp_path)
        assert PROMTOOL is not None
        result = subprocess.run(
            [PROMTOOL, "check", "config", "--lint=all", "--lint-fatal", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "SUCCESS" in output, output
        assert not re.search(r"warn", output, re.I), output
