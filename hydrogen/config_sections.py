"""The configuration's sections: one frozen dataclass per TOML table, each checking
its own values (``validate``) so an error names its key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hydrogen.protocol import Role

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")


class ConfigError(Exception):
    """An invalid configuration; the message is one line naming the key."""


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message} (got {value!r})")


@dataclass(frozen=True)
class ApiKey:
    """A key and the role it grants. The key never appears in ``repr``."""

    key: str = field(repr=False)
    role: Role = Role.CONTROL
    name: str = "default"
    #: The printers this key may see and act on; None is all of them.
    printers: frozenset[str] | None = None


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 5001
    #: Also listen on ``ipv6_host`` (dual stack, as the original Hydrogen server does).
    ipv6: bool = False
    ipv6_host: str = "::"
    #: Extra origins allowed to open a cookie-authenticated WebSocket.
    allowed_origins: tuple[str, ...] = ()

    def validate(self, path: str) -> None:
        # 0 asks the OS for a free port (tests, benchmarks); the real port is printed.
        _check(0 <= self.port <= 65535, f"{path}.port", "must be between 0 and 65535", self.port)


@dataclass(frozen=True)
class LimitsConfig:
    max_frame_bytes: int = 64 * 1024
    #: WebSocket connections in total; lowered at start to fit the open files limit.
    max_connections: int = 1024
    max_connections_per_ip: int = 64
    #: Connections that have not completed a request (fresh, or keep-alive between
    #: requests), in total (at most a quarter of the connection budget) and per address.
    max_pending_connections: int = 128
    max_pending_per_ip: int = 16
    #: Seconds a connection has, from its accept or its previous response, to send
    #: the complete headers of a request; then it is closed (slowloris).
    header_timeout: float = 10.0
    messages_per_second: float = 20.0
    message_burst: int = 40
    queue_limit: int = 256
    drop_limit: int = 1024
    heartbeat_seconds: float = 20.0

    def validate(self, path: str) -> None:
        for name in (
            "max_frame_bytes",
            "max_connections",
            "max_connections_per_ip",
            "max_pending_connections",
            "max_pending_per_ip",
            "message_burst",
            "queue_limit",
            "drop_limit",
        ):
            value = getattr(self, name)
            _check(value >= 1, f"{path}.{name}", "must be at least 1", value)
        _check(
            self.messages_per_second > 0,
            f"{path}.messages_per_second",
            "must be > 0",
            self.messages_per_second,
        )
        _check(
            0.5 <= self.header_timeout <= 3600,
            f"{path}.header_timeout",
            "must be 0.5..3600 s",
            self.header_timeout,
        )
        _check(
            self.heartbeat_seconds >= 0,
            f"{path}.heartbeat_seconds",
            "must be >= 0 (0: off)",
            self.heartbeat_seconds,
        )


@dataclass(frozen=True)
class StatusConfig:
    #: Seconds between status frames (and host samples).
    interval: float = 1.0
    #: Seconds between the slow host samples (filesystems, sensors).
    slow_interval: float = 10.0

    def validate(self, path: str) -> None:
        _check(
            0.05 <= self.interval <= 3600, f"{path}.interval", "must be 0.05..3600 s", self.interval
        )
        _check(
            self.slow_interval >= self.interval,
            f"{path}.slow_interval",
            "must be >= status.interval",
            self.slow_interval,
        )


@dataclass(frozen=True)
class MetricsConfig:
    #: Serve /metrics without a key (for a scraper on a trusted network).
    public: bool = False


@dataclass(frozen=True)
class AuthConfig:
    #: Lifetime of a token from ``POST /api/auth/token`` (also the longest one asked for).
    token_ttl_seconds: int = 3600
    #: Seconds before a WebSocket's token expires that the client is told to refresh it.
    token_refresh_warning_seconds: float = 60.0
    #: Failed authentications from one address within ``failure_window_seconds`` after
    #: which it gets 429 until the window ends (brute force of keys and tokens).
    max_failures: int = 10
    failure_window_seconds: float = 60.0

    def validate(self, path: str) -> None:
        _check(
            60 <= self.token_ttl_seconds <= 7 * 24 * 3600,
            f"{path}.token_ttl_seconds",
            "must be 60..604800",
            self.token_ttl_seconds,
        )
        _check(
            0 < self.token_refresh_warning_seconds < self.token_ttl_seconds,
            f"{path}.token_refresh_warning_seconds",
            "must be > 0 and less than token_ttl_seconds",
            self.token_refresh_warning_seconds,
        )
        _check(self.max_failures >= 1, f"{path}.max_failures", "must be >= 1", self.max_failures)
        _check(
            1 <= self.failure_window_seconds <= 86400,
            f"{path}.failure_window_seconds",
            "must be 1..86400 s",
            self.failure_window_seconds,
        )


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"

    def validate(self, path: str) -> None:
        levels = ("debug", "info", "warning", "error")
        _check(
            self.level in levels, f"{path}.level", f"must be one of {', '.join(levels)}", self.level
        )
        formats = ("auto", "text", "journal")
        _check(
            self.format in formats,
            f"{path}.format",
            f"must be one of {', '.join(formats)}",
            self.format,
        )


@dataclass(frozen=True)
class JobsConfig:
    #: Largest accepted upload; bigger ones get 413 and leave nothing behind.
    max_upload_bytes: int = 512 * 1024 * 1024
    #: G-code run when a job pauses (e.g. park the head), when it resumes, and
    #: when it is cancelled (the default turns heaters, fan and motors off).
    pause_script: str = ""
    resume_script: str = ""
    cancel_script: str = "M104 S0\nM140 S0\nM107\nM84"
    #: Send ``M73 P<percent> R<minutes>`` so the printer's display shows progress.
    m73_progress: bool = True
    #: The printer ``POST /api/files`` with ``print=true`` starts on (default: the first).
    default_printer: str = ""

    def validate(self, path: str) -> None:
        _check(
            self.max_upload_bytes >= 1024,
            f"{path}.max_upload_bytes",
            "must be >= 1024",
            self.max_upload_bytes,
        )
        for name in ("pause_script", "resume_script", "cancel_script"):
            for line in getattr(self, name).splitlines():
                stripped = line.split(";", 1)[0].strip()
                _check(
                    not stripped or stripped.isascii(),
                    f"{path}.{name}",
                    "must be ASCII G-code lines",
                    line,
                )


@dataclass(frozen=True)
class AuditConfig:
    #: Audit records kept (``audit.sqlite3`` in the state dir); the oldest go first.
    max_rows: int = 100_000

    def validate(self, path: str) -> None:
        _check(
            100 <= self.max_rows <= 100_000_000,
            f"{path}.max_rows",
            "must be 100..100000000",
            self.max_rows,
        )


@dataclass(frozen=True)
class OctoPrintConfig:
    #: The printer the bare OctoPrint paths (``/api/...``) are; default: the first.
    #: Every printer is also its own OctoPrint at ``/octoprint/<printer>/``.
    default_printer: str = ""
    #: Announce each printer (``_octoprint._tcp``) and the dashboard (``_http._tcp``)
    #: on the local network with zeroconf (the optional ``discovery`` extra).
    announce: bool = True


@dataclass(frozen=True)
class PrinterConfig:
    name: str
    #: A serial device path, or the word ``simulator`` for the built-in simulated printer.
    device: str
    baud: int = 115200
    #: Lines in flight before waiting for ``ok`` (1 is what every firmware handles).
    window: int = 1
    #: Seconds without an ``ok`` before a line's ok counts as lost and a probe goes out.
    ok_timeout: float = 5.0
    long_command_timeout: float = 600.0
    #: Seconds a firmware may stay silent through repeated probes after a stall before
    #: the link is declared lost (a lost ok is recovered, never a reason to end a print).
    link_timeout: float = 30.0
    #: Seconds between temperature reports (M155 autoreport, else M105 polling).
    temperature_interval: float = 2.0
    #: Seconds to wait for the firmware banner after opening the port (boards reset on open).
    banner_timeout: float = 5.0
    handshake_timeout: float = 10.0
    reconnect: bool = True
    reconnect_max_delay: float = 30.0
    #: Seconds of temperature history kept for charts.
    history_seconds: float = 1200.0

    @property
    def is_simulator(self) -> bool:
        return self.device == "simulator"

    def validate(self, path: str) -> None:
        _check(
            bool(_NAME.match(self.name)),
            f"{path}.name",
            "must be 1-64 letters, digits, '_', '-' or '.'",
            self.name,
        )
        _check(bool(self.device), f"{path}.device", "must not be empty", self.device)
        _check(self.baud > 0, f"{path}.baud", "must be positive", self.baud)
        _check(1 <= self.window <= 32, f"{path}.window", "must be 1..32", self.window)
        for name in (
            "ok_timeout",
            "long_command_timeout",
            "link_timeout",
            "temperature_interval",
            "banner_timeout",
            "handshake_timeout",
            "reconnect_max_delay",
            "history_seconds",
        ):
            value = getattr(self, name)
            _check(value > 0, f"{path}.{name}", "must be > 0", value)
