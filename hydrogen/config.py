"""Configuration: TOML file, then environment, then command-line flags.

The result is one frozen :class:`Config`. Every problem (unknown key, wrong
type, bad port, unreadable file) becomes a :class:`ConfigError` whose message
names the key, so ``hydrogen`` can print one line and exit 2 instead of a
traceback. Secrets (API keys) may come from the environment or a file so the
config itself can be world-readable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import re
import secrets
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydrogen.protocol import Role

__all__ = [
    "ApiKey",
    "AuditConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "GeneratedKey",
    "JobsConfig",
    "LimitsConfig",
    "LogConfig",
    "MetricsConfig",
    "OctoPrintConfig",
    "PrinterConfig",
    "ServerConfig",
    "StatusConfig",
    "default_state_dir",
    "did_you_mean",
    "ensure_generated_key",
    "load_config",
]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")


class ConfigError(Exception):
    """An invalid configuration; the message is one line naming the key."""


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


@dataclass(frozen=True)
class Config:
    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    status: StatusConfig = StatusConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    jobs: JobsConfig = JobsConfig()
    audit: AuditConfig = AuditConfig()
    auth: AuthConfig = AuthConfig()
    octoprint: OctoPrintConfig = OctoPrintConfig()
    keys: tuple[ApiKey, ...] = ()
    printers: tuple[PrinterConfig, ...] = ()
    state_dir: Path = field(default_factory=lambda: default_state_dir())
    #: Where the configuration came from (for messages), None for built-in defaults.
    source: str | None = None

    def role_for(self, key: str) -> Role | None:
        entry = self.key_for(key)
        return entry.role if entry is not None else None

    def key_for(self, key: str) -> ApiKey | None:
        """Constant-time lookup: every configured key is compared, whatever matches.

        The same secret configured twice grants the higher of its roles.
        """
        found: ApiKey | None = None
        try:
            candidate = key.encode()
        except UnicodeEncodeError:
            return None  # undecodable header bytes cannot be any configured key
        for entry in self.keys:
            if secrets.compare_digest(candidate, entry.key.encode()) and (
                found is None or entry.role > found.role
            ):
                found = entry
        return found


def default_state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """systemd's StateDirectory, else the XDG state dir."""
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hydrogen"


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message} (got {value!r})")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or "" when none is close.

    A typo in a config file or on the command line is the commonest mistake; naming
    the intended word saves a trip to the documentation. A unique prefix counts as
    close (``check`` -> ``check-config``), else difflib's similarity decides.
    """
    choices = sorted(set(choices))
    prefixed = [c for c in choices if word and c.startswith(word)]
    close = prefixed if len(prefixed) == 1 else difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key(key: str, name: str, known: Iterable[str]) -> ConfigError:
    return ConfigError(f"{key}: unknown key{did_you_mean(name, known)}")


_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "limits": LimitsConfig,
    "status": StatusConfig,
    "metrics": MetricsConfig,
    "log": LogConfig,
    "jobs": JobsConfig,
    "audit": AuditConfig,
    "auth": AuthConfig,
    "octoprint": OctoPrintConfig,
}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"list of {_describe(typing.get_args(tp)[0])}"
    return {int: "integer", float: "number", bool: "boolean", str: "string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check a TOML value against a dataclass field type; ints are fine for floats."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_describe(tp)} (got {value!r})")
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, args[0], key)
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"{key}: expected {_describe(tp)} (got {value!r})")
    return float(value) if tp is float else value


def _build(cls: type, table: Any, path: str, **fixed: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a table (got {table!r})")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.name not in fixed}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise _unknown_key(f"{path}.{unknown[0]}", unknown[0], fields)
    values = {name: _coerce(v, hints[name], f"{path}.{name}") for name, v in table.items()}
    try:
        obj = cls(**fixed, **values)
    except TypeError as exc:  # a required key is missing
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in values
            and f.name not in fixed
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        raise ConfigError(f"{path}.{missing[0] if missing else '?'}: required key missing") from exc
    if hasattr(obj, "validate"):
        obj.validate(path)
    return obj


def _read_secret(entry: dict[str, Any], path: str, environ: Mapping[str, str]) -> str:
    sources = [k for k in ("key", "key_env", "key_file") if k in entry]
    if len(sources) != 1:
        raise ConfigError(f"{path}: give exactly one of key, key_env or key_file")
    source = sources[0]
    value = entry[source]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}.{source}: expected a non-empty string")
    if source == "key":
        key = value
    elif source == "key_env":
        key = environ.get(value, "")
        if not key:
            raise ConfigError(f"{path}.key_env: environment variable {value} is not set")
    else:
        try:
            key = Path(value).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{path}.key_file: cannot read {value}: {exc.strerror}") from None
    _check_key(key, f"{path}.{source}")
    return key


def _check_key(key: str, where: str) -> None:
    # The value is deliberately not echoed: it is a secret.
    if len(key) < 8 or not key.isprintable() or any(c.isspace() for c in key):
        raise ConfigError(f"{where}: a key must be at least 8 printable characters without spaces")


def _keys(raw: Any, environ: Mapping[str, str]) -> tuple[ApiKey, ...]:
    if not isinstance(raw, list):
        raise ConfigError("keys: expected an array of tables ([[keys]])")
    keys = []
    names: set[str] = set()
    for index, entry in enumerate(raw):
        path = f"keys[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: expected a table")
        known = {"name", "role", "printers", "key", "key_env", "key_file"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise _unknown_key(f"{path}.{unknown[0]}", unknown[0], known)
        name = entry.get("name", f"key{index}")
        if not isinstance(name, str) or not _NAME.match(name) or name in names:
            raise ConfigError(f"{path}.name: must be a unique simple name (got {name!r})")
        names.add(name)
        try:
            role = Role.parse(entry.get("role", "control"))
        except (ValueError, AttributeError):
            raise ConfigError(
                f"{path}.role: must be 'monitor', 'control' or 'admin' (got {entry.get('role')!r})"
            ) from None
        scope = entry.get("printers")
        if scope is not None and (
            not isinstance(scope, list) or not all(isinstance(p, str) and p for p in scope)
        ):
            raise ConfigError(f"{path}.printers: expected a list of printer names (got {scope!r})")
        printers = frozenset(scope) if scope is not None else None
        keys.append(ApiKey(_read_secret(entry, path, environ), role, name, printers))
    return tuple(keys)


def _unique_key_names(keys: Iterable[ApiKey]) -> None:
    """A name is who acted (logs, tokens, the audit trail): it must say which key."""
    seen: set[str] = set()
    for entry in keys:
        if entry.name in seen:
            raise ConfigError(
                f"keys: the name {entry.name!r} is used by two keys"
                " (a [[keys]] entry and --api-key, HYDROGEN_API_KEY or the systemd credential)"
            )
        seen.add(entry.name)


def _check_key_scopes(keys: Iterable[ApiKey], printers: Iterable[PrinterConfig]) -> None:
    """A key may only be scoped to printers that exist (a typo would silently hide one)."""
    known = {p.name for p in printers}
    for index, entry in enumerate(keys):
        for name in sorted(entry.printers or ()):
            if name not in known:
                raise ConfigError(
                    f"keys[{index}].printers: no printer named {name!r}{did_you_mean(name, known)}"
                )


def _credential_key(environ: Mapping[str, str]) -> str | None:
    """The key systemd passes with ``LoadCredential=api_key:...`` (see the unit file).

    The unit sets an empty fallback so the service still starts without the
    file; empty means "no key from systemd".
    """
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    try:
        key = (Path(directory) / "api_key").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if key:
        _check_key(key, "credential api_key")
    return key or None


def _printers(raw: Any) -> tuple[PrinterConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("printers: expected an array of tables ([[printers]])")
    printers = [_build(PrinterConfig, entry, f"printers[{i}]") for i, entry in enumerate(raw)]
    return _unique_printers(printers)


def _unique_printers(printers: list[PrinterConfig]) -> tuple[PrinterConfig, ...]:
    seen: set[str] = set()
    for printer in printers:
        if printer.name in seen:
            raise ConfigError(f"printers: duplicate printer name {printer.name!r}")
        seen.add(printer.name)
    return tuple(printers)


def parse_printer_flag(text: str) -> PrinterConfig:
    """``NAME=DEVICE[@BAUD]`` from ``--printer``."""
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise ConfigError(f"--printer: expected NAME=DEVICE[@BAUD] (got {text!r})")
    # The last '@' starts the baud rate; a typo there must be an error, not part of
    # the device path. (A device path containing '@' can be given in the config file.)
    device, at, baud_text = rest.rpartition("@") if "@" in rest else (rest, "", "")
    baud = 115200
    if at:
        if not baud_text.isdigit():
            raise ConfigError(f"--printer {name}: baud must be a number (got {baud_text!r})")
        baud = int(baud_text)
    printer = PrinterConfig(name=name, device=device, baud=baud)
    printer.validate(f"--printer {name}")
    return printer


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Config:
    """Build the configuration: file (optional) < environment < ``overrides``.

    ``overrides`` uses dotted keys as the CLI produces them, e.g.
    ``{"server.port": 5002, "api_keys": ["..."], "printers": [PrinterConfig...]}``.
    """
    data: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    overrides = dict(overrides or {})

    top_level = {*_SECTIONS, "keys", "printers", "state_dir"}
    unknown = sorted(set(data) - top_level)
    if unknown:
        raise _unknown_key(unknown[0], unknown[0], top_level)

    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = dict(data.get(name, {})) if isinstance(data.get(name, {}), dict) else data[name]
        if isinstance(table, dict):
            for dotted, value in overrides.items():
                section, _, key = dotted.partition(".")
                if section == name and key and value is not None:
                    table[key] = value
        sections[name] = _build(cls, table, name)

    keys = list(_keys(data.get("keys", []), environ))
    credential = _credential_key(environ)
    if credential:
        keys.append(ApiKey(credential, Role.CONTROL, "credential"))
    env_key = environ.get("HYDROGEN_API_KEY")
    for index, key in enumerate([env_key, *overrides.get("api_keys", ())]):
        if key:
            where = "HYDROGEN_API_KEY" if index == 0 and env_key else "--api-key"
            _check_key(key, where)
            name = "env" if where == "HYDROGEN_API_KEY" else "cli"
            taken = sum(1 for k in keys if k.name == name or k.name.startswith(f"{name}-"))
            keys.append(ApiKey(key, Role.CONTROL, f"{name}-{taken + 1}" if taken else name))
    _unique_key_names(keys)

    if overrides.get("printers"):
        printers = _unique_printers(list(overrides["printers"]))
    else:
        printers = _printers(data.get("printers", []))

    _check_key_scopes(keys, printers)

    default = sections["octoprint"].default_printer
    if default and default not in {p.name for p in printers}:
        raise ConfigError(f"octoprint.default_printer: no printer named {default!r}")

    state_dir_value = overrides.get("state_dir") or data.get("state_dir")
    if state_dir_value is not None and not isinstance(state_dir_value, str | os.PathLike):
        raise ConfigError(f"state_dir: expected a string (got {state_dir_value!r})")
    state_dir = Path(state_dir_value) if state_dir_value else default_state_dir(environ)

    return Config(
        keys=tuple(keys),
        printers=printers,
        state_dir=state_dir.expanduser(),
        source=source,
        **sections,
    )


@dataclass(frozen=True)
class GeneratedKey:
    """The key a gateway with no configured key uses, and where it came from.

    ``created`` tells a first start (a new key: the operator must go and fetch it)
    from a restart (the key they already have still works).
    """

    api_key: ApiKey
    path: Path
    created: bool


def ensure_generated_key(config: Config) -> tuple[Config, GeneratedKey | None]:
    """With no key configured, use (or create) one kept in the state dir.

    The same key survives restarts, so a bookmarked dashboard or a script keeps
    working. Returns the new config and the key with its origin (None if keys were
    configured).
    """
    if config.keys:
        return config, None
    path = config.state_dir / "api_key"
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = ""
    except OSError as exc:
        raise ConfigError(f"state_dir: cannot read {path}: {exc.strerror}") from None
    created = len(key) < 8
    if not created:
        with contextlib.suppress(OSError):
            path.chmod(0o600)  # a copied-in file may be too open; the key is a secret
    else:
        key = secrets.token_urlsafe(24)
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(key + "\n")
        except OSError as exc:
            raise ConfigError(f"state_dir: cannot write {path}: {exc.strerror}") from None
    api_key = ApiKey(key, Role.CONTROL, "generated")
    return dataclasses.replace(config, keys=(api_key,)), GeneratedKey(api_key, path, created)
