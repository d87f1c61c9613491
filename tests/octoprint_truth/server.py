"""A real OctoPrint server, run only to learn the shape of its answers.

OctoPrint is installed in a venv of its own (``.venv/octoprint``, as .ci/run does it):
it pins about sixty packages that must not change the gateway's environment. This
module runs its ``octoprint serve`` as a subprocess in a fresh base directory with

* the first-run wizard and the online checks off, and no plugin that talks to the
  network (software update, announcements, tracking, discovery);
* two users with known API keys: ``admin`` (groups ``admins``, ``users``) and
  ``viewer`` (group ``readonly``), so a refusal for a missing permission can be
  recorded as well as one for a wrong key;
* its bundled virtual printer enabled (port ``VIRTUAL``), not connected until asked;

on a free port of 127.0.0.1. Nothing here imports OctoPrint or hydrogen.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OCTOPRINT_VENV = ROOT / ".venv" / "octoprint"
ADMIN_KEY = "TRUTHADMINKEY0123456789ABCDEF000"
VIEWER_KEY = "TRUTHVIEWERKEY0123456789ABCDEF00"
#: Never checked: the keys are the only credentials used (a login is ``passive``).
UNUSABLE_HASH = "$pbkdf2-sha256$29000$unused$unused"
#: Bundled plugins that would reach the network or announce the server.
DISABLED_PLUGINS = ["softwareupdate", "announcements", "tracking", "discovery", "errortracking"]


def octoprint_executable() -> Path | None:
    """The ``octoprint`` command of $HYDROGEN_OCTOPRINT_PYTHON's venv or .venv/octoprint."""
    python = os.environ.get("HYDROGEN_OCTOPRINT_PYTHON")
    candidates = [Path(python).with_name("octoprint")] if python else []
    candidates.append(OCTOPRINT_VENV / "bin" / "octoprint")
    return next((c for c in candidates if c.exists()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _user(key: str, groups: list[str]) -> dict[str, Any]:
    return {
        "active": True,
        "apikey": key,
        "groups": groups,
        "password": UNUSABLE_HASH,
        "permissions": [],
        "settings": {},
    }


def write_basedir(basedir: Path, port: int) -> None:
    """config.yaml and users.yaml (JSON is YAML) for a server that asks nothing on start."""
    config = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "firstRun": False,
            "onlineCheck": {"enabled": False},
            "pluginBlacklist": {"enabled": False},
            "seenWizards": {"corewizard": 4},
        },
        "plugins": {
            "_disabled": DISABLED_PLUGINS,
            "virtual_printer": {"enabled": True},
        },
        "serial": {"autoconnect": False},
        # As Hydrogen has none: "no SD support" answers are what is recorded.
        "feature": {"sdSupport": False},
        "appearance": {"name": "truth"},
    }
    users = {
        "_version": 2,
        "admin": _user(ADMIN_KEY, ["admins", "users"]),
        "viewer": _user(VIEWER_KEY, ["readonly"]),
    }
    basedir.mkdir(parents=True, exist_ok=True)
    (basedir / "config.yaml").write_text(json.dumps(config, indent=1))
    (basedir / "users.yaml").write_text(json.dumps(users, indent=1))


class OctoPrintServer:
    """``with OctoPrintServer() as op:`` a running server at ``op.url``."""

    def __init__(self, executable: Path | None = None, start_timeout: float = 90.0) -> None:
        found = executable or octoprint_executable()
        if found is None:
            raise FileNotFoundError(
                "OctoPrint is not installed: python3 -m venv .venv/octoprint && "
                ".venv/octoprint/bin/python -m pip install 'octoprint>=1.11,<1.12'"
            )
        self.executable = found
        self.start_timeout = start_timeout
        self.basedir = Path(tempfile.mkdtemp(prefix="octoprint-truth-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.version = ""

    def __enter__(self) -> OctoPrintServer:
        write_basedir(self.basedir, self.port)
        log = open(self.basedir / "serve.log", "wb")
        self.process = subprocess.Popen(
            [str(self.executable), "serve", "--basedir", str(self.basedir)]
            # OctoPrint refuses to start as root unless told (CI containers run as root).
            + (["--iknowwhatimdoing"] if os.geteuid() == 0 else []),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"OctoPrint exited at start:\n{self.log_tail()}")
            try:
                status, body = self.request("GET", "/api/version")
            except (OSError, http.client.HTTPException):  # not listening, or half-started
                status, body = 0, None
            if status == 200 and isinstance(body, dict):
                self.version = body.get("server", "")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"OctoPrint did not answer in time:\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, lines: int = 40) -> str:
        path = self.basedir / "serve.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = ADMIN_KEY,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, parsed JSON body or the text, or None when empty)."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent = dict(headers or {})
        if key is not None:
            sent["X-Api-Key"] = key
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        if not payload:
            return status, None
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode("utf-8", "replace")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.basedir, ignore_errors=True)
