"""Run `hydrogen` as a real subprocess (as an operator or systemd would).

Every `serve` started here gets `--no-announce`: no mDNS multicast may leave this
machine, so only tests/test_discovery.py (in network namespaces of its own) announces.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_LISTENING = re.compile(r"listening on http://[^:]+:(\d+)/")


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[str]
    port: int
    banner: str

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDROGEN_", "NOTIFY_"))}
    env.pop("JOURNAL_STREAM", None)
    env.update(extra or {})
    return env


def no_announce(args: Sequence[str]) -> list[str]:
    """``args`` of ``hydrogen ...``, with ``--no-announce`` after ``serve``."""
    args = list(args)
    if args[:1] == ["serve"] and "--no-announce" not in args:
        args.insert(1, "--no-announce")
    return args


def hydrogen(*args: str, env: Mapping[str, str] | None = None, timeout: float = 30):
    return subprocess.run(
        [sys.executable, "-m", "hydrogen", *no_announce(args)],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
    )


def start_gateway(
    args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> GatewayProcess:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hydrogen",
            "serve",
            "--no-announce",
            *(() if "--port" in args else ("--port", "0")),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(env),
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    banner = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        banner.append(line)
        match = _LISTENING.search(line)
        if match:
            # read the rest of the banner (it is printed in one go)
            for _ in range(3):
                banner.append(proc.stdout.readline())
            return GatewayProcess(proc, int(match.group(1)), "".join(banner))
    proc.kill()
    raise AssertionError(f"gateway did not start: {''.join(banner)} {proc.stderr.read()}")
