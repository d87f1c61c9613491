"""Reading TOML values into the sections: types checked, unknown keys named (with a
guess at what was meant), secrets read from the environment or a file.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydrogen.config_sections import (
    _NAME,
    ApiKey,
    ConfigError,
    PrinterConfig,
)
from hydrogen.protocol import Role


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
