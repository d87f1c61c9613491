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
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydrogen.config_parse import (
    _build,
    _check_key,
    _check_key_scopes,
    _credential_key,
    _keys,
    _printers,
    _unique_key_names,
    _unique_printers,
    _unknown_key,
    did_you_mean,
    parse_printer_flag,
)
from hydrogen.config_sections import (
    ApiKey,
    AuditConfig,
    AuthConfig,
    ConfigError,
    JobsConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    OctoPrintConfig,
    PrinterConfig,
    ServerConfig,
    StatusConfig,
)
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
    "parse_printer_flag",
]


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    octoprint: OctoPrintConfig = field(default_factory=OctoPrintConfig)
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
