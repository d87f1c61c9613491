"""Logging set-up for the gateway: one line per event, no secrets, journald-aware.

Three properties matter more than looks:

* **One event, one line.** Printers, clients and exceptions supply text with newlines and
  control characters. Written raw, a printer answering ``"ok\\n2026-...Z ERROR ..."`` could
  forge log lines, and under systemd every stderr line becomes its own journal entry (with
  the continuation lines losing their priority). All control characters are therefore
  escaped (``\\n``, ``\\r``, ``\\x1b``...), in messages and tracebacks alike.
* **No secrets.** API keys travel in query strings (``?key=``), headers and the session
  cookie, and all of those end up in access logs and exception texts. Every handler
  :func:`configure_logging` installs redacts them before anything is formatted.
* **journald-native output.** Under systemd, lines carry a ``<N>`` syslog priority prefix
  (so ``journalctl -p warning`` works) and no timestamp (journald adds its own).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import TextIO

__all__ = [
    "FORMATS",
    "LEVELS",
    "JournalFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "escape_control",
    "redact",
    "stream_is_journal",
    "syslog_priority",
]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS: tuple[str, ...] = ("auto", "text", "journal")

_MASK = "***"

# A name starts a pattern only when it is not inside a longer word ("monkey=", "hotkey="),
# or right after an escape sequence, as in the repr of a header block
# ('Host: h\r\nX-Api-Key: ...').
_B = r"(?:(?<![\w-])|(?<=\\[nrt]))"

# Each pattern keeps group 1 (the name and separator) and replaces the secret after it.
# Values stop at whitespace, quotes, backslashes (escapes in reprs and source lines) and the
# separators of their context, so the rest of an access-log line ("&x=1 HTTP/1.1") survives.
_SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    # Query/form parameters: ?key=..., &api_key=..., apikey=..., token=...
    re.compile(
        _B + r"((?:api[_-]?key|key|access_token|token|password)=)[^\s&;#\"'<>\\]+",
        re.IGNORECASE,
    ),
    # The same names as JSON/TOML/dict entries: "api_key": "...", api_key = "..."
    re.compile(_B + r"(api_?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&#}\\]+", re.IGNORECASE),
    # Authorization and Proxy-Authorization: the scheme stays, all the rest of the value
    # goes (Digest and friends carry several secret parameters, some of them quoted).
    # Quoted as in a dict repr ('Authorization': 'Bearer x'), the value ends at its quote.
    re.compile(
        _B + r"((?:Proxy-)?Authorization[\"']?\s*[:=]\s*'(?:[\w-]+\s+)?)[^'\r\n\\]+",
        re.IGNORECASE,
    ),
    re.compile(
        _B + r"((?:Proxy-)?Authorization[\"']?\s*[:=]\s*\"(?:[\w-]+\s+)?)[^\"\r\n\\]+",
        re.IGNORECASE,
    ),
    re.compile(
        _B + r"((?:Proxy-)?Authorization[\"']?\s*[:=]\s*(?:[\w-]+[ \t]+)?)[^\s\"'\\][^\r\n\\]*",
        re.IGNORECASE,
    ),
    re.compile(_B + r"(X-Api-Key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;\\]+", re.IGNORECASE),
    # The session cookie in cookie-jar reprs and anywhere else it is named.
    re.compile(_B + r"(hydrogen_session[\"']?\s*[:=]\s*[\"']?)[^\s\"',;\\]+", re.IGNORECASE),
    # Wherever they appear, named or not: a stored key (its public id stays, to tell
    # which), a JWT (e.g. offered as the subprotocol ``access_token.<jwt>``).
    re.compile(r"(hgk_[0-9a-f]{10}_)[A-Za-z0-9_\-]+"),
    re.compile(r"(?<![\w-])(eyJ[A-Za-z0-9_\-]*\.)[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),
)

# Cookie: every value, whatever the cookie's name; Set-Cookie: the cookie's own value
# (its attributes, Path=/ and so on, stay readable).
_COOKIE_HEADER = re.compile(
    _B + r"((Set-)?Cookie[\"']?\s*[:=]\s*[\"']?)([^\r\n\\']*)", re.IGNORECASE
)
_COOKIE_PAIR = re.compile(r"((?:^|;)\s*[^=;\s]+\s*=)[^;]*")


def _mask_cookies(match: re.Match[str]) -> str:
    value = match.group(3)
    if match.group(2):  # Set-Cookie: only the first pair is the cookie
        first, sep, attributes = value.partition(";")
        return match.group(1) + _COOKIE_PAIR.sub(_keep_name, first) + sep + attributes
    return match.group(1) + _COOKIE_PAIR.sub(_keep_name, value)


def _keep_name(match: re.Match[str]) -> str:
    return match.group(1) + _MASK


# aiohttp's HTTP parser errors (LineTooLong, BadHttpMessage, InvalidHeader...) quote the
# raw bytes they choked on, which may be a header's value without its name (an over-long
# "Authorization: Key ..." shows only "Key ..."; an obsolete folded line shows only its
# continuation). No pattern can tell such a fragment is a secret, so in these exceptions'
# texts every quoted literal is masked.
_PARSER_ERROR_MODULE = "aiohttp.http_exceptions"
_QUOTED = re.compile(r"""(b?)(['"])(?:(?!\2)[^\\]|\\.)*+\2""", re.DOTALL)


def _echoes_raw_request(exc: BaseException) -> bool:
    return any(cls.__module__ == _PARSER_ERROR_MODULE for cls in type(exc).__mro__)


def _exception_chain(exc: BaseException | None) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain and len(chain) < 32:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _mask_raw_request(text: str, exceptions: list[BaseException]) -> str:
    """Mask the quoted raw request bytes in the texts of HTTP parser errors within ``text``."""
    for exc in exceptions:
        if not _echoes_raw_request(exc):
            continue
        try:
            raw = str(exc)
        except Exception:
            continue
        if raw:
            masked = _QUOTED.sub(lambda m: f"{m.group(1)}{m.group(2)}{_MASK}{m.group(2)}", raw)
            text = text.replace(raw, masked)
    return text


# C0 controls except tab, DEL, C1 controls (NEL \x85, CSI \x9b) and the Unicode line and
# paragraph separators: everything a terminal or a line splitter may treat specially.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r"}


def redact(text: str) -> str:
    """Return ``text`` with API keys, authorization headers and session cookies masked.

    Applied to every log message and exception text, because secrets reach logs through
    paths nobody reviews: aiohttp's access log prints request lines with ``?key=``, and
    client errors include the full URL in their message.
    """
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + _MASK, text)
    return _COOKIE_HEADER.sub(_mask_cookies, text)


def escape_control(text: str) -> str:
    """Escape line breaks and other control characters so ``text`` stays on one line."""

    def _escape(match: re.Match[str]) -> str:
        char = match.group()
        named = _NAMED_ESCAPES.get(char)
        if named is not None:
            return named
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(_escape, text)


class RedactingFilter(logging.Filter):
    """Render each record's message, redact it and store the result back on the record.

    The redacted text replaces ``msg`` and ``args`` is cleared, so no formatter or handler
    later in the chain can format the original arguments again. Exception and stack text
    is rendered and redacted the same way, and ``exc_info`` dropped, for the same reason.
    Never rejects a record.
    """

    _exception_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # Bad format arguments must not make logging raise into the caller.
            message = f"{record.msg!r} % {record.args!r} (unformattable log message)"
        args = record.args
        arg_values = args.values() if isinstance(args, Mapping) else args or ()
        logged = [a for a in arg_values if isinstance(a, BaseException)]
        record.msg = redact(_mask_raw_request(message, logged))
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                text = self._exception_formatter.formatException(record.exc_info)
                record.exc_text = _mask_raw_request(text, _exception_chain(record.exc_info[1]))
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class _OneLineFormatter(logging.Formatter):
    """Base formatter: message, exception and stack on one escaped line."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        parts = [record.message]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        body = escape_control(redact("\n".join(parts)))
        return f"{self.prefix(record)}{body}"

    def prefix(self, record: logging.LogRecord) -> str:
        raise NotImplementedError


class TextFormatter(_OneLineFormatter):
    """``2026-11-22T10:00:00.123Z INFO hydrogen.server: message`` (UTC, milliseconds)."""

    def prefix(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z {record.levelname} {record.name}: "


class JournalFormatter(_OneLineFormatter):
    """``<6>hydrogen.server: message``: the prefix journald turns into the entry's priority.

    No timestamp: journald records its own, and a second one only costs width.
    """

    def prefix(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{record.name}: "


def syslog_priority(levelno: int) -> int:
    """Map a logging level to a syslog priority (crit 2, err 3, warning 4, info 6, debug 7)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journald stream systemd connected us to.

    systemd sets ``$JOURNAL_STREAM`` to ``<st_dev>:<st_ino>`` of the socket it passes as
    stdout/stderr. Comparing it with the stream's own fstat (instead of trusting the
    variable alone) avoids journal output when stderr was redirected, or when the variable
    was inherited by a process started from a service shell.
    """
    env = os.environ if environ is None else environ
    raw = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = raw.partition(":")
    if not sep:
        return False
    try:
        expected = (int(dev), int(ino))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        # Malformed variable, or a stream without a file descriptor (StringIO raises
        # io.UnsupportedOperation, a subclass of both ValueError and OSError).
        return False
    return (st.st_dev, st.st_ino) == expected


class _HydrogenHandler(logging.StreamHandler):
    """Marks the handlers configure_logging owns, so a second call replaces only them."""


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Install the gateway's log handler on the root logger.

    ``level`` is a name from :data:`LEVELS` (case-insensitive). ``fmt`` is ``"text"``,
    ``"journal"`` or ``"auto"`` (journal when ``stream`` is systemd's journal stream, see
    :func:`stream_is_journal`). ``stream`` defaults to the current ``sys.stderr``, looked up
    at call time so that redirected or captured stderr is honoured. ``environ`` overrides
    ``os.environ`` for the auto-detection.

    Idempotent: handlers from an earlier call are removed and closed, handlers installed by
    anyone else (e.g. pytest's capture) are left alone.

    Raises ValueError for an unknown level or format.
    """
    levelno = LEVELS.get(level.lower()) if isinstance(level, str) else None
    if levelno is None:
        raise ValueError(f"invalid log level {level!r}: expected one of {', '.join(LEVELS)}")
    fmt_name = fmt.lower() if isinstance(fmt, str) else fmt
    if fmt_name not in FORMATS:
        raise ValueError(f"invalid log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    target = sys.stderr if stream is None else stream
    if fmt_name == "auto":
        fmt_name = "journal" if stream_is_journal(target, environ) else "text"

    formatter: logging.Formatter = JournalFormatter() if fmt_name == "journal" else TextFormatter()
    handler = _HydrogenHandler(target)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _HydrogenHandler)]:
        root.removeHandler(old)
        old.close()
    # First among the root's handlers: its filter redacts the record itself, so any
    # handler called after it (a test's capture, a debugging aid) gets it redacted too.
    # Logger filters would not do: a filter on the root logger never sees records
    # propagated from child loggers (aiohttp.server, aiohttp.access, hydrogen.*).
    root.handlers.insert(0, handler)
    root.setLevel(levelno)
