"""Pure helpers of the Marlin line protocol: G-code validation and framing, the
firmware's error and M115 texts, and the regular expressions that recognise its lines.

No state: `hydrogen.printers.marlin.MarlinProtocol` uses them, and so can a test or a
tool that only needs to check a line or read a reply.
"""

from __future__ import annotations

import re
from functools import reduce
from operator import xor
from typing import Final

from hydrogen.printers.marlin_events import ErrorKind, FirmwareInfo

# Marlin's MAX_CMD_SIZE is 96 bytes including "N<n> ", "*<cs>" and the terminator, and
# longer lines are dropped or truncated by the firmware. 80 leaves room for line numbers
# up to 8 digits.
MAX_GCODE_LENGTH: Final = 80
# Commands that legitimately run for minutes before their ok.
LONG_COMMANDS: Final = frozenset(
    {"G4", "G28", "G29", "G33", "G34", "G35", "G76", "M0", "M1", "M48", "M109", "M190"}
    | {"M191", "M303", "M400", "M600", "M701", "M702"}
)
# Waits that M108 breaks (Marlin's wait_for_heatup and wait_for_user): heating waits
# and the user stops. Homing, probing and dwells cannot be broken and run to their end.
INTERRUPTIBLE_WAITS: Final = frozenset({"M0", "M1", "M109", "M190", "M191"})


def checksum(s: str) -> int:
    """XOR of every byte of `s` (the part of the line before ``*``)."""
    return reduce(xor, s.encode("ascii"), 0)


_UNSENDABLE = re.compile(r"[^ -~]|\*")
_COMMAND_WORD = re.compile(r"([A-Za-z])([+-]?\d+(?:\.\d+)?)")


def _command_word(text: str) -> str:
    match = _COMMAND_WORD.match(text)
    if match is None:
        return ""
    number = match[2]
    if "." not in number:
        number = str(int(number))
    return match[1].upper() + number


def validate_gcode(line: str) -> str:
    """Normalise one G-code line for sending or raise ValueError saying why it cannot
    be sent: comments (``;``) and surrounding whitespace are stripped, tabs become
    spaces and the command letter is upper-cased; nothing else is changed, so M117
    text keeps its case."""
    if not isinstance(line, str):
        raise ValueError(f"G-code must be a string, not {type(line).__name__}")
    text = line.split(";", 1)[0].replace("\t", " ").strip()
    if not text:
        raise ValueError("empty G-code line (nothing left after removing comments)")
    # One regex scan for the usual clean line; the loop below only says what is wrong.
    for position, char in enumerate(text if _UNSENDABLE.search(text) else ()):
        if char in "\r\n":
            raise ValueError("G-code line contains a line break; send one command per line")
        if not " " <= char <= "~":
            raise ValueError(
                f"G-code line contains a non-ASCII or control character {char!r} "
                f"at position {position}"
            )
    if "*" in text:
        raise ValueError("'*' is reserved for the checksum and cannot appear in G-code")
    if len(text) > MAX_GCODE_LENGTH:
        raise ValueError(
            f"G-code line is {len(text)} characters; the firmware accepts at most "
            f"{MAX_GCODE_LENGTH}"
        )
    word = _command_word(text)
    if not word:
        raise ValueError(
            f"not a G-code command: {text[:20]!r} does not start with a command word "
            "such as G1, M105 or T0"
        )
    if word[0] == "N":
        raise ValueError("line numbers are added by the gateway; remove the N word")
    if word == "M110":
        raise ValueError("M110 is reserved: the gateway manages line numbering")
    return text[0].upper() + text[1:]


def _classify_error(message: str) -> tuple[ErrorKind, bool]:
    low = message.lower()
    if "checksum" in low or "no line number" in low:
        return "checksum", False
    if "line number" in low or "expected line" in low:  # Repetier: "expected line 5 got 6"
        return "line_number", False
    thermal = ("mintemp", "maxtemp", "thermal runaway", "heating failed", "malfunction")
    if any(word in low for word in thermal):
        return "thermal", True
    if any(word in low for word in ("kill()", "halted", "printer stopped", "killed")):
        return "halted", True
    if "unknown command" in low:
        return "unknown_command", False
    return "generic", False


_ERROR_PRIORITY: Final[dict[ErrorKind, int]] = {
    "thermal": 4,
    "halted": 3,
    "unknown_command": 1,
    "generic": 0,
}


_INFO_KEY = re.compile(r"(?:(?<=\s)|^)([A-Z][A-Z0-9_]*):")


def _parse_firmware_info(lines: tuple[str, ...]) -> FirmwareInfo | None:
    fields: dict[str, str] = {}
    capabilities: dict[str, bool] = {}
    for line in lines:
        if line.startswith("Cap:"):
            name, _, value = line[4:].partition(":")
            if name.strip():
                capabilities[name.strip()] = value.strip() == "1"
            continue
        start = line.find("FIRMWARE_NAME:")
        if start < 0:
            continue
        text = line[start:]
        keys = list(_INFO_KEY.finditer(text))
        for key, following in zip(keys, [*keys[1:], None], strict=True):
            end = following.start() if following is not None else len(text)
            fields[key[1]] = text[key.end() : end].strip()
    if "FIRMWARE_NAME" not in fields and not capabilities:
        return None
    return FirmwareInfo(fields.get("FIRMWARE_NAME", ""), fields, capabilities)


_OK = re.compile(r"ok\b\s*(.*)", re.DOTALL)
_ADVANCED_OK = re.compile(r"N(\d+)\b")
_RESEND = re.compile(r"(?:resend|rs)\b[:\s]*N?:?\s*(\d+)", re.IGNORECASE)
_BUSY = re.compile(r"(?:echo:\s*)?busy:\s*(.*)", re.IGNORECASE)
_ERROR = re.compile(r"error:\s*(.*)", re.IGNORECASE)
_UNKNOWN = re.compile(r"echo:\s*(unknown command:.*)", re.IGNORECASE)
_ACTION = re.compile(r"//\s*action:\s*(\S*)\s*(.*)")
_EOL = re.compile(rb"[\r\n]")
# Whitespace and undecodable bytes around a line: noise after a reset glues itself to
# the front of "start" or "ok", which must still be recognised. A line of nothing but
# noise is dropped.
_EDGE_NOISE = re.compile(r"^[^\x21-\x7e]+|[^\x21-\x7e]+$")
