"""Tests for hydrogen.logsetup: formats, levels, journald detection, redaction, escaping."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import http_exceptions

from hydrogen.logsetup import (
    RedactingFilter,
    configure_logging,
    escape_control,
    redact,
    stream_is_journal,
)

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) ([\w.]+): (.*)$")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """configure_logging changes the root logger; put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if type(h).__name__ == "_HydrogenHandler"]


# --- formats and levels ---------------------------------------------------------------


def test_text_format() -> None:
    out = io.StringIO()
    configure_logging("info", "text", out)
    logging.getLogger("hydrogen.server").info("listening on %s:%d", "0.0.0.0", 7125)
    [line] = lines(out)
    match = TEXT_LINE.match(line)
    assert match, line
    assert match.groups() == ("INFO", "hydrogen.server", "listening on 0.0.0.0:7125")


def test_text_timestamp_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    configure_logging("info", "text", out)
    record = logging.LogRecord("hydrogen.x", logging.INFO, __file__, 1, "m", None, None)
    record.created = 1795341600.123456  # 2026-11-22T10:00:00.123456Z
    record.msecs = 123.0
    assert ours()[0].format(record) == "2026-11-22T10:00:00.123Z INFO hydrogen.x: m"


@pytest.mark.parametrize(
    ("method", "prefix"),
    [("debug", "<7>"), ("info", "<6>"), ("warning", "<4>"), ("error", "<3>"), ("critical", "<2>")],
)
def test_journal_prefixes(method: str, prefix: str) -> None:
    out = io.StringIO()
    configure_logging("debug", "journal", out)
    getattr(logging.getLogger("hydrogen.server"), method)("hello")
    assert lines(out) == [f"{prefix}hydrogen.server: hello"]


def test_level_filtering() -> None:
    out = io.StringIO()
    configure_logging("warning", "text", out)
    log = logging.getLogger("hydrogen.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [TEXT_LINE.match(line).group(1) for line in lines(out)] == ["WARNING", "ERROR"]


def test_level_and_format_are_case_insensitive() -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "Journal", out)
    logging.getLogger("hydrogen.test").debug("x")
    assert lines(out) == ["<7>hydrogen.test: x"]


@pytest.mark.parametrize(
    ("level", "fmt", "message"),
    [
        ("verbose", "text", "invalid log level 'verbose'"),
        ("info", "json", "invalid log format 'json'"),
    ],
)
def test_invalid_arguments(level: str, fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as excinfo:
        configure_logging(level, fmt, io.StringIO())
    assert "expected one of" in str(excinfo.value)


def test_reconfiguring_replaces_only_own_handler() -> None:
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    try:
        first, second = io.StringIO(), io.StringIO()
        configure_logging("info", "text", first)
        configure_logging("info", "journal", second)
        assert len(ours()) == 1
        assert foreign in logging.getLogger().handlers
        logging.getLogger("hydrogen.test").info("once")
        assert first.getvalue() == ""
        assert lines(second) == ["<6>hydrogen.test: once"]
    finally:
        logging.getLogger().removeHandler(foreign)


def test_default_stream_is_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "text")
    logging.getLogger("hydrogen.test").info("to stderr")
    assert "hydrogen.test: to stderr" in capsys.readouterr().err


# --- journald auto-detection ----------------------------------------------------------


@pytest.fixture
def file_stream(tmp_path: Path) -> Iterator[io.TextIOWrapper]:
    with open(tmp_path / "stderr.log", "w+", encoding="utf-8") as stream:
        yield stream


def journal_env(stream: io.TextIOWrapper) -> dict[str, str]:
    st = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_auto_picks_journal_when_stream_matches(file_stream: io.TextIOWrapper) -> None:
    configure_logging("info", "auto", file_stream, environ=journal_env(file_stream))
    logging.getLogger("hydrogen.test").info("hi")
    file_stream.flush()
    file_stream.seek(0)
    assert file_stream.read() == "<6>hydrogen.test: hi\n"


def test_auto_reads_os_environ(
    file_stream: io.TextIOWrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", journal_env(file_stream)["JOURNAL_STREAM"])
    assert stream_is_journal(file_stream)


def test_auto_picks_text_when_stream_differs(file_stream: io.TextIOWrapper, tmp_path: Path) -> None:
    with open(tmp_path / "other", "w", encoding="utf-8") as other:
        env = journal_env(other)
    configure_logging("info", "auto", file_stream, environ=env)
    logging.getLogger("hydrogen.test").info("hi")
    file_stream.flush()
    file_stream.seek(0)
    assert TEXT_LINE.match(file_stream.read().rstrip("\n"))


@pytest.mark.parametrize("value", [None, "", "garbage", "1:x", "12"])
def test_stream_is_journal_rejects_bad_values(
    file_stream: io.TextIOWrapper, value: str | None
) -> None:
    env = {} if value is None else {"JOURNAL_STREAM": value}
    assert not stream_is_journal(file_stream, env)


def test_stream_is_journal_without_fileno() -> None:
    assert not stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


# --- redaction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            'GET /?key=abc123&x=1 HTTP/1.1" 200',
            'GET /?key=***&x=1 HTTP/1.1" 200',
        ),
        ("/api/printers?api_key=s3cr3t", "/api/printers?api_key=***"),
        ("/ws?x=1&apikey=s3cr3t#frag", "/ws?x=1&apikey=***#frag"),
        ("/ws?API_KEY=s3cr3t HTTP/1.1", "/ws?API_KEY=*** HTTP/1.1"),
        ("Authorization: Key abc123", "Authorization: Key ***"),
        # The rest of the value goes: schemes like Digest carry several secrets.
        ("authorization: Bearer eyJhbGc.x.y, next", "authorization: Bearer ***"),
        (
            'Authorization: Digest username="u", response="6629fae4"',
            "Authorization: Digest ***",
        ),
        ("Proxy-Authorization: Basic dTpw", "Proxy-Authorization: Basic ***"),
        ('{"Authorization": "Key abc"}', '{"Authorization": "Key ***"}'),
        ("{'Authorization': 'Bearer tok'}", "{'Authorization': 'Bearer ***'}"),
        ("X-Api-Key: abc123", "X-Api-Key: ***"),
        ("{'X-Api-Key': 'abc123'}", "{'X-Api-Key': '***'}"),
        # Every cookie's value, not only ours: other apps on the host share the cookie jar.
        (
            "Cookie: theme=dark; hydrogen_session=abcdef; x=1",
            "Cookie: theme=***; hydrogen_session=***; x=***",
        ),
        ("{'Cookie': 'other_app=s3cr3t'}", "{'Cookie': 'other_app=***'}"),
        ("/ws?token=s3cr3t&x=1", "/ws?token=***&x=1"),
        ("/ws?access_token=s3cr3t", "/ws?access_token=***"),
        (
            "Set-Cookie: hydrogen_session=abcdef; HttpOnly; Path=/",
            "Set-Cookie: hydrogen_session=***; HttpOnly; Path=/",
        ),
        ('{"api_key": "abc123", "port": 7125}', '{"api_key": "***", "port": 7125}'),
        ('api_key = "abc123"', 'api_key = "***"'),
        (
            r"b'GET / HTTP/1.1\r\nX-Api-Key: abc123\r\nCookie: hydrogen_session=s1\r\n'",
            r"b'GET / HTTP/1.1\r\nX-Api-Key: ***\r\nCookie: hydrogen_session=***\r\n'",
        ),
        (r"'line\nkey=abc123'", r"'line\nkey=***'"),
    ],
)
def test_redact_forms(raw: str, expected: str) -> None:
    assert redact(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "monkey=banana hotkey=F5",
        "key: value of the matter",
        "G28 ; home all axes",
        "session=abc other_cookie=1",
    ],
)
def test_redact_leaves_innocent_text(text: str) -> None:
    assert redact(text) == text


def test_redact_is_idempotent() -> None:
    once = redact("/?key=abc&api_key=def Authorization: Key ghi")
    assert redact(once) == once
    assert "abc" not in once and "def" not in once and "ghi" not in once


def test_access_log_line_redacted() -> None:
    out = io.StringIO()
    configure_logging("info", "text", out)
    logging.getLogger("aiohttp.access").info(
        '%s "%s" %s', "192.0.2.7", "GET /?key=abc123&x=1 HTTP/1.1", 200
    )
    [line] = lines(out)
    assert line.endswith('aiohttp.access: 192.0.2.7 "GET /?key=***&x=1 HTTP/1.1" 200')


def test_exception_text_redacted_and_single_line() -> None:
    out = io.StringIO()
    configure_logging("info", "journal", out)
    try:
        raise RuntimeError("upstream said no for http://h/api?key=abc123\nX-Api-Key: abc123")
    except RuntimeError:
        logging.getLogger("hydrogen.server").exception("request to %s failed", "/?key=abc123")
    [line] = lines(out)
    assert "abc123" not in line
    assert line.startswith("<3>hydrogen.server: request to /?key=*** failed\\nTraceback")
    assert "RuntimeError: upstream said no for http://h/api?key=***\\nX-Api-Key: ***" in line


def test_filter_protects_other_handlers_after_it() -> None:
    """Once the filter ran, the record itself no longer carries the secret."""
    record = logging.LogRecord(
        "hydrogen.x", logging.ERROR, __file__, 1, "auth %s", ("Authorization: Key abc",), None
    )
    try:
        raise ValueError("key=abc")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record) is True
    assert record.msg == "auth Authorization: Key ***"
    assert not record.args
    assert record.exc_info is None
    assert "abc" not in (record.exc_text or "")
    assert "ValueError: key=***" in (record.exc_text or "")
    assert "abc" not in logging.Formatter().format(record)


def test_unformattable_message_does_not_raise() -> None:
    # Fed to our handler directly: pytest's own capture handler re-raises on bad arguments.
    out = io.StringIO()
    configure_logging("info", "text", out)
    record = logging.LogRecord(
        "hydrogen.test", logging.INFO, __file__, 1, "%d items with key=%s", ("many",), None
    )
    ours()[0].handle(record)
    [line] = lines(out)
    assert "unformattable" in line
    assert "many" in line


def test_stack_info_redacted_and_single_line() -> None:
    out = io.StringIO()
    configure_logging("info", "text", out)
    key = "abc123"  # the caller's source line shows up in the stack
    logging.getLogger("hydrogen.test").info("where am I ?key=%s", key, stack_info=True)
    [line] = lines(out)
    assert "abc123" not in line
    assert "\\nStack (most recent call last):" in line


# --- one event, one line ----------------------------------------------------------------


def test_newlines_escaped_cannot_forge_lines() -> None:
    out = io.StringIO()
    configure_logging("info", "text", out)
    hostile = "ok\n2026-11-22T10:00:00.000Z ERROR hydrogen.auth: admin logged in\r\nok"
    logging.getLogger("hydrogen.printers").info("printer said %r", "x")
    logging.getLogger("hydrogen.printers").info("printer said %s", hostile)
    got = lines(out)
    assert len(got) == 2
    assert got[1].endswith(
        "printer said ok\\n2026-11-22T10:00:00.000Z ERROR hydrogen.auth: admin logged in\\r\\nok"
    )


def test_journal_priority_cannot_be_forged() -> None:
    out = io.StringIO()
    configure_logging("info", "journal", out)
    logging.getLogger("hydrogen.printers").info("echo:%s", "busy\n<0>kernel: panic")
    assert lines(out) == ["<6>hydrogen.printers: echo:busy\\n<0>kernel: panic"]


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("bell\x07", "bell\\x07"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("nel\x85", "nel\\x85"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("tab\tstays", "tab\tstays"),
        ("Düse 215 °C", "Düse 215 °C"),
    ],
)
def test_escape_control(raw: str, escaped: str) -> None:
    assert escape_control(raw) == escaped
    assert len(escape_control(raw).splitlines()) == 1


# --- aiohttp's parser errors quote raw request bytes --------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        # An over-long Authorization header: only its value is quoted, no name to match.
        lambda: http_exceptions.LineTooLong(b"Key s3cr3t-k3y" + b"a" * 90 + b"...", 8190),
        # An obsolete folded header: the continuation line alone.
        lambda: http_exceptions.InvalidHeader(b" s3cr3t-k3y"),
        lambda: http_exceptions.BadHttpMessage("Unexpected whitespace:\n\n  b' s3cr3t-k3y'\n  ^"),
        lambda: http_exceptions.BadStatusLine("GET /?%6Bey=s3cr3t-k3y HTTP/9"),
    ],
)
def test_parser_error_text_is_masked(error: Any) -> None:
    out = io.StringIO()
    configure_logging("debug", "text", out)
    try:
        raise error()
    except http_exceptions.HttpProcessingError as exc:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "h")
        logging.getLogger("hydrogen.server").info("bad request: %s", exc)
    got = lines(out)
    assert len(got) == 2
    assert all("s3cr3t" not in line for line in got), got
    assert "***" in got[0] and "***" in got[1]


def test_parser_error_as_a_cause_is_masked_too() -> None:
    out = io.StringIO()
    configure_logging("info", "text", out)
    try:
        try:
            folded = b" " + b"s3cr3t-k3y"  # not on the raising line, as it is shown
            raise http_exceptions.InvalidHeader(folded)
        except http_exceptions.HttpProcessingError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError:
        logging.getLogger("hydrogen.server").exception("failed")
    [line] = lines(out)
    assert "s3cr3t" not in line
    assert "RuntimeError: wrapped" in line


def test_other_exceptions_keep_their_quoted_text() -> None:
    out = io.StringIO()
    configure_logging("info", "text", out)
    try:
        raise KeyError("printer 'mk3'")
    except KeyError:
        logging.getLogger("hydrogen.printers").exception("lookup failed")
    [line] = lines(out)
    assert "printer 'mk3'" in line


def test_our_handler_runs_first_so_every_root_handler_sees_redacted_records() -> None:
    seen: list[str] = []

    class Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    root = logging.getLogger()
    earlier = Collector()
    root.addHandler(earlier)  # installed before ours, as a test runner's capture is
    try:
        configure_logging("info", "text", io.StringIO())
        logging.getLogger("aiohttp.access").info("GET /?token=%s", "s3cr3t")
    finally:
        root.removeHandler(earlier)
    assert seen == ["GET /?token=***"]
