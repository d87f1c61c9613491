"""Which names a G-code file may be stored under, and the error every refused file
operation raises (`FileError`, with the HTTP status to answer with).

A name is one plain, NFC-normalised path component: no separators or look-alikes of
them, no leading dot or space, no control or invisible characters, a G-code suffix.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

GCODE_SUFFIXES = (".gcode", ".gco", ".g")
MAX_NAME_LENGTH = 200

#: Characters that look like a path separator but have no compatibility mapping to
#: one (those that do, such as U+FF0F FULLWIDTH SOLIDUS, are caught by NFKC).
_SLASH_LOOKALIKES = frozenset(
    "\u2044\u2215\u2216\u2571\u2572\u27cb\u27cd\u29f5\u29f8\u29f9\u1735\u2cc6"
)
#: Characters that look like a full stop on the baseline without mapping to one.
_DOT_LOOKALIKES = frozenset("\ua4f8\u0701\u0702\U00010a50\u2e31")


class FileError(Exception):
    """A refused file operation; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def _refusal(char: str) -> str | None:
    """Why ``char`` may not appear in a file name, or None.

    One rule: nothing invisible, and nothing that looks like a path separator, a dot
    or a space without being one, so a name can never pass for a path or for
    another file's name.
    """
    category = unicodedata.category(char)
    if category[0] == "C":
        return "an invisible control or formatting character"
    if category in ("Zl", "Zp"):
        return "a line break"
    if category == "Zs" and char != " ":
        return "it looks like a space"
    if char in "./\\":
        return None
    compat = unicodedata.normalize("NFKC", char)
    if char in _SLASH_LOOKALIKES or "/" in compat:
        return "it looks like '/'"
    if "\\" in compat:
        return "it looks like '\\'"
    if char in _DOT_LOOKALIKES or "." in compat:
        return "it looks like '.'"
    return None


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def _shown(name: str) -> str:
    """The name with every refused character written as a ``\\uXXXX`` escape."""
    return "".join(
        (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}") if _refusal(c) else c
        for c in name[:80]
    )


def check_name(name: str) -> str:
    """A plain file name we are willing to store (NFC-normalised), or FileError(400).

    Names come from clients (multipart filenames, URLs, requests): no directories,
    no hidden files, no character that is invisible or that looks like a path
    separator, a dot or a space without being one (the first such character is
    named in the error), a G-code suffix. Names are stored and shown in NFC, so a
    decomposed ``é`` and a precomposed one are the same name.
    """
    if not isinstance(name, str) or not name:
        raise FileError(400, "a file name is required")
    try:
        name = unicodedata.normalize("NFC", name)
    except ValueError:  # lone surrogates from a hostile URL
        raise FileError(400, "file names must be valid Unicode") from None
    for position, char in enumerate(name):
        why = _refusal(char)
        if why is not None:
            raise FileError(
                400,
                f"file names must not contain {_describe(char)} ({why})",
                name=_shown(name),
                character=f"U+{ord(char):04X}",
                position=position,
            )
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise FileError(400, "file names must not contain paths or start with '.'", name=name[:80])
    if name.startswith(" "):
        raise FileError(400, "file names must not start with a space", name=name[:80])
    if len(name) > MAX_NAME_LENGTH or len(name.encode("utf-8")) > 240:
        # filesystems limit names to 255 bytes, not characters
        raise FileError(400, f"file names are limited to {MAX_NAME_LENGTH} characters")
    if not name.lower().endswith(GCODE_SUFFIXES):
        raise FileError(
            400, f"only G-code files ({', '.join(GCODE_SUFFIXES)}) are accepted", name=name[:80]
        )
    return name


def safe_download_name(name: str) -> str:
    """ASCII fallback for Content-Disposition."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
