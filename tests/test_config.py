"""Unit tests for hydrogen.config: TOML loading, validation, keys, printers and the state dir."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from hydrogen.config import (
    ApiKey,
    Config,
    ConfigError,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    PrinterConfig,
    ServerConfig,
    StatusConfig,
    default_state_dir,
    ensure_generated_key,
    load_config,
    parse_printer_flag,
)
from hydrogen.protocol import Role

#: Planted in every invalid file: no error message may ever contain it.
SECRET = "planted-secret-7f3a9c"
KEY_A = "key-aaaa-0123456789"
KEY_B = "key-bbbb-0123456789"


def write(tmp_path: Path, text: str, name: str = "hydrogen.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **kwargs: Any) -> Config:
    kwargs.setdefault("environ", {})
    return load_config(write(tmp_path, text), **kwargs)


def config_error(
    tmp_path: Path, text: str, prefix: str, *, plant: bool = True, **kwargs: Any
) -> str:
    """Load ``text`` (plus a planted valid key) and check the error names ``prefix`` first."""
    planted = f'\n[[keys]]\nname = "planted"\nkey = "{SECRET}"\n' if plant else ""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text + planted, **kwargs)
    message = str(info.value)
    assert message.startswith(prefix), message
    assert SECRET not in message
    assert "\n" not in message
    return message


# -- defaults and sections ------------------------------------------------------------------


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = load_config(None, environ={"XDG_STATE_HOME": str(tmp_path)})
    assert config.server == ServerConfig()
    assert config.limits == LimitsConfig()
    assert config.status == StatusConfig()
    assert config.metrics == MetricsConfig()
    assert config.log == LogConfig()
    assert config.keys == ()
    assert config.printers == ()
    assert config.state_dir == tmp_path / "hydrogen"
    assert config.source is None
    assert config.server.port == 5001
    assert config.server.host == "0.0.0.0"
    assert config.limits.queue_limit == 256
    assert config.log.level == "info"


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = load_config(path, environ={"XDG_STATE_HOME": str(tmp_path)})
    assert config.server == ServerConfig()
    assert config.source == str(path)


def test_every_section(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""
state_dir = "{tmp_path / "state"}"

[server]
host = "127.0.0.1"
port = 6001
ipv6 = true
ipv6_host = "::1"
allowed_origins = ["https://a.example", "https://b.example"]

[limits]
max_frame_bytes = 1000
max_connections = 10
max_connections_per_ip = 2
messages_per_second = 5
message_burst = 7
queue_limit = 8
drop_limit = 9
heartbeat_seconds = 0

[status]
interval = 2
slow_interval = 30.5

[metrics]
public = true

[log]
level = "debug"
format = "journal"

[[printers]]
name = "sim"
device = "simulator"

[[printers]]
name = "mk3"
device = "/dev/ttyACM0"
baud = 250000
window = 4
ok_timeout = 3
reconnect = false
""",
    )
    assert config.server == ServerConfig(
        host="127.0.0.1",
        port=6001,
        ipv6=True,
        ipv6_host="::1",
        allowed_origins=("https://a.example", "https://b.example"),
    )
    assert config.limits == LimitsConfig(
        max_frame_bytes=1000,
        max_connections=10,
        max_connections_per_ip=2,
        messages_per_second=5.0,
        message_burst=7,
        queue_limit=8,
        drop_limit=9,
        heartbeat_seconds=0.0,
    )
    # Integers are fine where a number is expected, and become floats.
    assert type(config.limits.messages_per_second) is float
    assert type(config.status.interval) is float
    assert config.status == StatusConfig(interval=2.0, slow_interval=30.5)
    assert config.metrics.public is True
    assert config.log == LogConfig(level="debug", format="journal")
    assert config.state_dir == tmp_path / "state"
    sim, mk3 = config.printers
    assert sim == PrinterConfig(name="sim", device="simulator")
    assert sim.is_simulator
    assert mk3.baud == 250000
    assert mk3.window == 4
    assert mk3.ok_timeout == 3.0
    assert mk3.reconnect is False
    assert not mk3.is_simulator


def test_overrides_beat_the_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[server]\nport = 6001\nhost = "127.0.0.1"\n[log]\nlevel = "debug"\n',
        overrides={"server.port": 7001, "server.host": None, "log.level": "error"},
    )
    assert config.server.port == 7001
    assert config.server.host == "127.0.0.1"  # None means "not given"
    assert config.log.level == "error"


def test_overrides_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^server\.port: "):
        load_config(None, environ={}, overrides={"server.port": 99999})


def test_state_dir_override_and_expanduser(tmp_path: Path) -> None:
    config = load(tmp_path, 'state_dir = "/from/file"', overrides={"state_dir": str(tmp_path)})
    assert config.state_dir == tmp_path
    config = load(tmp_path, 'state_dir = "~/hydrogen-state"')
    assert config.state_dir == Path.home() / "hydrogen-state"


# -- errors name the key --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("bogus = 1", "bogus: unknown key"),
        ("[bogus]\na = 1", "bogus: unknown key"),
        ("[server]\nbogus = 1", "server.bogus: unknown key"),
        ("[limits]\nqueue_lmit = 1", "limits.queue_lmit: unknown key"),
        ("[printers]\nname = 'a'", "printers: "),
        ('[server]\nport = "5001"', "server.port: expected integer"),
        ("[server]\nport = 5001.0", "server.port: expected integer"),
        ("[server]\nport = true", "server.port: expected integer"),
        ("[limits]\nqueue_limit = 1.5", "limits.queue_limit: expected integer"),
        ("[limits]\nmessages_per_second = true", "limits.messages_per_second: expected number"),
        ('[limits]\nmessages_per_second = "5"', "limits.messages_per_second: expected number"),
        ('[metrics]\npublic = "yes"', "metrics.public: expected boolean"),
        ("[metrics]\npublic = 1", "metrics.public: expected boolean"),
        ("[server]\nhost = 127", "server.host: expected string"),
        ('[server]\nallowed_origins = "x"', "server.allowed_origins: expected list of string"),
        ('[server]\nallowed_origins = ["a", 1]', "server.allowed_origins[1]: expected string"),
        ("[server]\nport = 65536", "server.port: must be between 0 and 65535"),
        ("[server]\nport = -1", "server.port: must be between 0 and 65535"),
        ('[log]\nlevel = "verbose"', "log.level: must be one of"),
        ('[log]\nlevel = "INFO"', "log.level: must be one of"),
        ('[log]\nformat = "xml"', "log.format: must be one of"),
        ("[limits]\nqueue_limit = 0", "limits.queue_limit: must be at least 1"),
        ("[limits]\ndrop_limit = -5", "limits.drop_limit: must be at least 1"),
        ("[limits]\nmessages_per_second = 0", "limits.messages_per_second: must be > 0"),
        ("[limits]\nheartbeat_seconds = -1", "limits.heartbeat_seconds: must be >= 0"),
        ("[status]\ninterval = 0.01", "status.interval: must be 0.05..3600 s"),
        ("[status]\ninterval = 5\nslow_interval = 2", "status.slow_interval: must be >="),
        ("server = 5", "server: expected a table"),
        ("state_dir = 5", "state_dir: expected a string"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, prefix: str) -> None:
    config_error(tmp_path, text, prefix)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sever]\nport = 5002", "sever: unknown key (did you mean 'server'?)"),
        ("statedir = '/tmp/x'", "statedir: unknown key (did you mean 'state_dir'?)"),
        ("[server]\nprot = 5001", "server.prot: unknown key (did you mean 'port'?)"),
        (
            "[limits]\nqueue_lmit = 1",
            "limits.queue_lmit: unknown key (did you mean 'queue_limit'?)",
        ),
        (
            "[[printers]]\nname = 'a'\ndevice = '/dev/x'\nbaudrate = 9600",
            "printers[0].baudrate: unknown key (did you mean 'baud'?)",
        ),
        (
            '[[keys]]\nkeyfile = "/etc/hydrogen/key"',
            "keys[0].keyfile: unknown key (did you mean 'key_file'?)",
        ),
        # Nothing close: no guess, just the key.
        ("[server]\nfrobnicate = 1", "server.frobnicate: unknown key"),
        ("colour = 'blue'", "colour: unknown key"),
    ],
)
def test_an_unknown_key_suggests_the_closest_known_one(
    tmp_path: Path, text: str, message: str
) -> None:
    assert config_error(tmp_path, text, message, plant=False) == message


def test_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "hydrogen.toml"
    message = config_error(tmp_path, "[server\nport = 1", f"{path}: invalid TOML")
    assert "line" in message


@pytest.mark.parametrize(
    "text",
    [f'[[keys]]\nkey = "{SECRET}', f'[[keys]]\nkey = "{SECRET}\\q"', f"[[keys]]\nkey = {SECRET}"],
)
def test_bad_toml_never_echoes_a_key(tmp_path: Path, text: str) -> None:
    config_error(tmp_path, text, f"{tmp_path / 'hydrogen.toml'}: invalid TOML", plant=False)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"{path}: file not found"


def test_directory_as_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert str(info.value).startswith(f"{tmp_path}: cannot read")


# -- keys ------------------------------------------------------------------------------------


def test_key_inline_with_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, f'[[keys]]\nkey = "{KEY_A}"')
    assert config.keys == (ApiKey(KEY_A, Role.CONTROL, "key0"),)


def test_key_from_environment(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[[keys]]\nname = "grafana"\nrole = "monitor"\nkey_env = "MON_KEY"',
        environ={"MON_KEY": KEY_A},
    )
    assert config.keys == (ApiKey(KEY_A, Role.MONITOR, "grafana"),)


def test_key_env_not_set(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, '[[keys]]\nkey_env = "MON_KEY"', "keys[0].key_env: ", environ={"MON_KEY": ""}
    )
    assert "MON_KEY is not set" in message


def test_key_from_file_is_stripped(tmp_path: Path) -> None:
    key_file = tmp_path / "secret"
    key_file.write_text(f"  {KEY_B}\n", encoding="utf-8")
    config = load(tmp_path, f'[[keys]]\nname = "ops"\nkey_file = "{key_file}"')
    assert config.keys == (ApiKey(KEY_B, Role.CONTROL, "ops"),)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_key_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "missing" if kind == "missing" else tmp_path
    message = config_error(tmp_path, f'[[keys]]\nkey_file = "{path}"', "keys[0].key_file: ")
    assert "cannot read" in message


@pytest.mark.parametrize(
    "entry",
    ['name = "a"', f'key = "{KEY_A}"\nkey_env = "X"', f'key = "{KEY_A}"\nkey_file = "/x"',
     'key_env = "X"\nkey_file = "/x"'],
)  # fmt: skip
def test_exactly_one_key_source(tmp_path: Path, entry: str) -> None:
    message = config_error(tmp_path, f"[[keys]]\n{entry}", "keys[0]: ", environ={"X": KEY_B})
    assert "exactly one of key, key_env or key_file" in message
    assert KEY_A not in message
    assert KEY_B not in message


@pytest.mark.parametrize("value", ['""', "12345678", "true"])
def test_key_source_must_be_a_non_empty_string(tmp_path: Path, value: str) -> None:
    message = config_error(tmp_path, f"[[keys]]\nkey = {value}", "keys[0].key: ")
    assert "12345678" not in message


@pytest.mark.parametrize("short", ["short", "1234567", "has space in it", "tab\there-1234"])
def test_bad_key_is_rejected_without_echoing_it(tmp_path: Path, short: str) -> None:
    text = f"[[keys]]\nkey = {short!r}".replace("'", '"').replace("\t", "\\t")
    message = config_error(tmp_path, text, "keys[0].key: ")
    assert "at least 8 printable characters" in message
    assert short not in message


def test_short_key_from_env_and_file_not_echoed(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, '[[keys]]\nkey_env = "K"', "keys[0].key_env: ", environ={"K": "tiny7"}
    )
    assert "tiny7" not in message
    key_file = tmp_path / "k"
    key_file.write_text("tiny8\n", encoding="utf-8")
    message = config_error(tmp_path, f'[[keys]]\nkey_file = "{key_file}"', "keys[0].key_file: ")
    assert "tiny8" not in message


def test_duplicate_key_names(tmp_path: Path) -> None:
    text = f'[[keys]]\nname = "a"\nkey = "{KEY_A}"\n[[keys]]\nname = "a"\nkey = "{KEY_B}"'
    message = config_error(tmp_path, text, "keys[1].name: ")
    assert KEY_A not in message
    assert KEY_B not in message


def test_default_key_names_are_unique(tmp_path: Path) -> None:
    config = load(tmp_path, f'[[keys]]\nkey = "{KEY_A}"\n[[keys]]\nkey = "{KEY_B}"')
    assert [k.name for k in config.keys] == ["key0", "key1"]


@pytest.mark.parametrize("name", ["", "has space", "-x", "a" * 65, "1"])
def test_bad_key_name(tmp_path: Path, name: str) -> None:
    text = f'[[keys]]\nname = "{name}"\nkey = "{KEY_A}"'
    if name == "1":
        text = f'[[keys]]\nname = 1\nkey = "{KEY_A}"'
    config_error(tmp_path, text, "keys[0].name: ")


@pytest.mark.parametrize(
    ("role", "expected"),
    [('"monitor"', Role.MONITOR), ('"control"', Role.CONTROL), ('"Monitor"', Role.MONITOR)],
)
def test_key_roles(tmp_path: Path, role: str, expected: Role) -> None:
    config = load(tmp_path, f'[[keys]]\nkey = "{KEY_A}"\nrole = {role}')
    assert config.keys[0].role is expected


@pytest.mark.parametrize("role", ['"root"', '""', "2", "true"])
def test_bad_key_role(tmp_path: Path, role: str) -> None:
    message = config_error(tmp_path, f'[[keys]]\nkey = "{KEY_A}"\nrole = {role}', "keys[0].role: ")
    assert KEY_A not in message


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        (f'keys = "{SECRET}"', "keys: expected an array of tables"),
        (f'keys = ["{SECRET}"]', "keys[0]: expected a table"),
        (f'[[keys]]\nkey = "{KEY_A}"\nsecret = "x"', "keys[0].secret: unknown key"),
    ],
)
def test_bad_keys_structure(tmp_path: Path, text: str, prefix: str) -> None:
    # ``keys`` is not an array of tables here, so no key can be planted after it.
    config_error(tmp_path, text, prefix, plant=text.startswith("[[keys]]"))


def test_env_and_cli_keys_are_added_as_control(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f'[[keys]]\nname = "mon"\nrole = "monitor"\nkey = "{KEY_A}"',
        environ={"HYDROGEN_API_KEY": KEY_B},
        overrides={"api_keys": ["cli-key-0123456789"]},
    )
    assert config.keys == (
        ApiKey(KEY_A, Role.MONITOR, "mon"),
        ApiKey(KEY_B, Role.CONTROL, "env"),
        ApiKey("cli-key-0123456789", Role.CONTROL, "cli"),
    )


def test_cli_keys_without_env(tmp_path: Path) -> None:
    config = load_config(None, environ={"HYDROGEN_API_KEY": ""}, overrides={"api_keys": [KEY_A]})
    assert config.keys == (ApiKey(KEY_A, Role.CONTROL, "cli"),)


def test_short_env_key_rejected_without_echo() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"HYDROGEN_API_KEY": "tiny-1"})
    assert str(info.value).startswith("HYDROGEN_API_KEY: ")
    assert "tiny-1" not in str(info.value)


def test_short_cli_key_rejected_without_echo() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"HYDROGEN_API_KEY": KEY_A}, overrides={"api_keys": ["tiny-2"]})
    assert str(info.value).startswith("--api-key: ")
    assert "tiny-2" not in str(info.value)


def test_systemd_credential_key(tmp_path: Path) -> None:
    (tmp_path / "api_key").write_text(f"{KEY_A}\n", encoding="utf-8")
    config = load_config(None, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.keys == (ApiKey(KEY_A, Role.CONTROL, "credential"),)
    (tmp_path / "api_key").write_text("", encoding="utf-8")
    assert load_config(None, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}).keys == ()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_config(None, environ={"CREDENTIALS_DIRECTORY": str(empty)}).keys == ()


# -- printers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ('[[printers]]\ndevice = "simulator"', "printers[0].name: required key missing"),
        ('[[printers]]\nname = "a"', "printers[0].device: required key missing"),
        ('[[printers]]\nname = "a"\ndevice = ""', "printers[0].device: must not be empty"),
        ('[[printers]]\nname = "a b"\ndevice = "simulator"', "printers[0].name: "),
        ('[[printers]]\nname = "a"\ndevice = "simulator"\nwindow = 0', "printers[0].window: "),
        ('[[printers]]\nname = "a"\ndevice = "simulator"\nwindow = 33', "printers[0].window: "),
        ('[[printers]]\nname = "a"\ndevice = "simulator"\nbaud = 0', "printers[0].baud: "),
        (
            '[[printers]]\nname = "a"\ndevice = "simulator"\nok_timeout = 0',
            "printers[0].ok_timeout",
        ),
        ('[[printers]]\nname = "a"\ndevice = "simulator"\nbogus = 1', "printers[0].bogus: unknown"),
        (
            '[[printers]]\nname = "a"\ndevice = "simulator"\n'
            '[[printers]]\nname = "b"\ndevice = "simulator"\nbaud = "fast"',
            "printers[1].baud: expected integer",
        ),
        (
            '[[printers]]\nname = "a"\ndevice = "simulator"\n'
            '[[printers]]\nname = "a"\ndevice = "/dev/ttyUSB0"',
            "printers: duplicate printer name 'a'",
        ),
    ],
)
def test_invalid_printers(tmp_path: Path, text: str, prefix: str) -> None:
    config_error(tmp_path, text, prefix)


@pytest.mark.parametrize("window", [1, 32])
def test_printer_window_bounds_accepted(tmp_path: Path, window: int) -> None:
    config = load(tmp_path, f'[[printers]]\nname = "a"\ndevice = "simulator"\nwindow = {window}')
    assert config.printers[0].window == window


def test_printer_overrides_replace_the_file(tmp_path: Path) -> None:
    flag = parse_printer_flag("cli=simulator")
    config = load(
        tmp_path,
        '[[printers]]\nname = "file"\ndevice = "simulator"',
        overrides={"printers": [flag]},
    )
    assert config.printers == (flag,)


def test_duplicate_printer_overrides() -> None:
    with pytest.raises(ConfigError, match=r"^printers: duplicate printer name 'a'"):
        load_config(
            None,
            environ={},
            overrides={"printers": [parse_printer_flag("a=simulator")] * 2},
        )


@pytest.mark.parametrize(
    ("flag", "name", "device", "baud"),
    [
        ("a=/dev/ttyUSB0", "a", "/dev/ttyUSB0", 115200),
        ("b=/dev/ttyACM0@250000", "b", "/dev/ttyACM0", 250000),
        ("c=simulator", "c", "simulator", 115200),
        ("d=/dev/serial/by-id/usb@1@57600", "d", "/dev/serial/by-id/usb@1", 57600),
    ],
)
def test_parse_printer_flag(flag: str, name: str, device: str, baud: int) -> None:
    printer = parse_printer_flag(flag)
    assert printer == PrinterConfig(name=name, device=device, baud=baud)
    assert printer.is_simulator is (device == "simulator")


@pytest.mark.parametrize(
    ("flag", "prefix"),
    [
        ("/dev/ttyUSB0", "--printer: expected NAME=DEVICE[@BAUD]"),
        ("a=", "--printer: expected NAME=DEVICE[@BAUD]"),
        ("a=/dev/ttyUSB0@fast", "--printer a: baud must be a number"),
        ("a=/dev/ttyUSB0@", "--printer a: baud must be a number"),
        ("a=/dev/ttyUSB0@-5", "--printer a: baud must be a number"),
        ("a=/dev/ttyUSB0@0", "--printer a.baud: must be positive"),
        ("a b=simulator", "--printer a b.name: "),
        ("a=@250000", "--printer a.device: must not be empty"),
    ],
)
def test_parse_printer_flag_errors(flag: str, prefix: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_printer_flag(flag)
    assert str(info.value).startswith(prefix), str(info.value)


# -- role_for ----------------------------------------------------------------------------------


def keyed(*keys: ApiKey) -> Config:
    return dataclasses.replace(load_config(None, environ={}), keys=keys)


def test_role_for() -> None:
    config = keyed(ApiKey(KEY_A, Role.MONITOR, "mon"), ApiKey(KEY_B, Role.CONTROL, "ctl"))
    assert config.role_for(KEY_A) is Role.MONITOR
    assert config.role_for(KEY_B) is Role.CONTROL


@pytest.mark.parametrize("order", [(Role.MONITOR, Role.CONTROL), (Role.CONTROL, Role.MONITOR)])
def test_role_for_a_key_listed_twice_is_the_highest(order: tuple[Role, Role]) -> None:
    config = keyed(ApiKey(KEY_A, order[0], "one"), ApiKey(KEY_A, order[1], "two"))
    assert config.role_for(KEY_A) is Role.CONTROL


@pytest.mark.parametrize("candidate", ["", "wrong-key-0123456", KEY_A[:-1], KEY_A + "x", "é"])
def test_role_for_unknown_key_is_none(candidate: str) -> None:
    assert keyed(ApiKey(KEY_A, Role.CONTROL)).role_for(candidate) is None


def test_role_for_without_keys_is_none() -> None:
    assert keyed().role_for(KEY_A) is None


# -- generated key -------------------------------------------------------------------------------


def test_ensure_generated_key_creates_a_private_file_and_reuses_it(tmp_path: Path) -> None:
    state = tmp_path / "nested" / "state"
    config = load_config(None, environ={}, overrides={"state_dir": str(state)})
    updated, generated = ensure_generated_key(config)
    assert generated is not None
    key = generated.api_key
    assert key.role is Role.CONTROL
    assert key.name == "generated"
    assert len(key.key) >= 32
    assert updated.keys == (key,)
    assert updated.role_for(key.key) is Role.CONTROL
    path = state / "api_key"
    assert generated.path == path
    assert path.read_text(encoding="utf-8") == key.key + "\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    again, generated_again = ensure_generated_key(config)
    assert generated_again is not None
    assert generated_again.api_key.key == key.key
    assert again.keys == (generated_again.api_key,)


def test_ensure_generated_key_tells_a_new_key_from_a_stored_one(tmp_path: Path) -> None:
    # The banner says "generated" only when the operator has a new key to fetch.
    config = load_config(None, environ={}, overrides={"state_dir": str(tmp_path)})
    _, first = ensure_generated_key(config)
    _, second = ensure_generated_key(config)
    assert first is not None and first.created is True
    assert second is not None and second.created is False


def test_ensure_generated_key_replaces_a_too_short_file(tmp_path: Path) -> None:
    (tmp_path / "api_key").write_text("short\n", encoding="utf-8")
    config = load_config(None, environ={}, overrides={"state_dir": str(tmp_path)})
    _, generated = ensure_generated_key(config)
    assert generated is not None and generated.created
    assert generated.api_key.key != "short"
    assert (tmp_path / "api_key").read_text(encoding="utf-8").strip() == generated.api_key.key


def test_ensure_generated_key_leaves_configured_keys_alone(tmp_path: Path) -> None:
    config = load_config(
        None, environ={"HYDROGEN_API_KEY": KEY_A}, overrides={"state_dir": str(tmp_path)}
    )
    updated, generated = ensure_generated_key(config)
    assert generated is None
    assert updated is config
    assert not (tmp_path / "api_key").exists()


def test_ensure_generated_key_unwritable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    config = load_config(None, environ={}, overrides={"state_dir": str(blocker / "sub")})
    with pytest.raises(ConfigError, match=r"^state_dir: "):
        ensure_generated_key(config)


# -- state dir, secrecy, immutability --------------------------------------------------------------


def test_default_state_dir_prefers_systemd_state_directory() -> None:
    environ = {"STATE_DIRECTORY": "/var/lib/hydrogen:/var/lib/other", "XDG_STATE_HOME": "/x"}
    assert default_state_dir(environ) == Path("/var/lib/hydrogen")


def test_default_state_dir_uses_xdg_state_home() -> None:
    assert default_state_dir({"XDG_STATE_HOME": "/xdg/state"}) == Path("/xdg/state/hydrogen")
    assert default_state_dir({"STATE_DIRECTORY": "", "XDG_STATE_HOME": "/s"}) == Path("/s/hydrogen")


def test_default_state_dir_falls_back_to_home() -> None:
    expected = Path.home() / ".local" / "state" / "hydrogen"
    assert default_state_dir({}) == expected
    assert default_state_dir({"XDG_STATE_HOME": ""}) == expected


def test_load_config_uses_environ_for_the_state_dir() -> None:
    config = load_config(None, environ={"STATE_DIRECTORY": "/var/lib/hydrogen"})
    assert config.state_dir == Path("/var/lib/hydrogen")


def test_repr_never_contains_the_key() -> None:
    key = ApiKey(KEY_A, Role.MONITOR, "mon")
    assert KEY_A not in repr(key)
    assert "mon" in repr(key)
    assert KEY_A not in repr(keyed(key))
    assert KEY_A not in str(keyed(key))


def test_config_is_frozen() -> None:
    config = load_config(None, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.keys = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ApiKey(KEY_A).role = Role.MONITOR  # type: ignore[misc]
