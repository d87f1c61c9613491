"""G-code files in the state dir: safe names, atomic uploads, cached metadata.

Uploads are written to a hidden temporary file in the same directory and
renamed into place only when complete, so a failed, oversized or interrupted
upload leaves nothing behind and a reader never sees half a file. Metadata
(slicer estimates, line counts) is scanned once, off the event loop, and kept
beside the file so listing stays cheap after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

from hydrogen.jobs.metadata import GcodeMetadata, scan_gcode

GCODE_SUFFIXES = (".gcode", ".gco", ".g")
MAX_NAME_LENGTH = 200
_META_DIR = ".meta"
_PART_PREFIX = ".upload-"


class FileError(Exception):
    """A refused file operation; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def check_name(name: str) -> str:
    """A plain file name we are willing to store, or FileError(400).

    Names come from clients (multipart filenames): no directories, no hidden
    files, no control characters, a G-code suffix.
    """
    if not isinstance(name, str) or not name:
        raise FileError(400, "a file name is required")
    name = unicodedata.normalize("NFC", name)
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise FileError(400, "file names must not contain paths or start with '.'", name=name[:80])
    if len(name) > MAX_NAME_LENGTH or len(name.encode("utf-8", "surrogatepass")) > 240:
        # filesystems limit names to 255 bytes, not characters
        raise FileError(400, f"file names are limited to {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise FileError(400, "file names must not contain control characters")
    if not name.lower().endswith(GCODE_SUFFIXES):
        raise FileError(
            400, f"only G-code files ({', '.join(GCODE_SUFFIXES)}) are accepted", name=name[:80]
        )
    return name


@dataclass(frozen=True)
class StoredFile:
    name: str
    size_bytes: int
    uploaded_at: float
    metadata: GcodeMetadata

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size_bytes": self.size_bytes,
            "uploaded_at": self.uploaded_at,
            "metadata": self.metadata.as_dict(),
        }


class FileStore:
    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._cache: dict[str, StoredFile] = {}

    def prepare(self) -> None:
        """Create the directories and remove uploads a crash left half-written."""
        (self.directory / _META_DIR).mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(_PART_PREFIX + "*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def path(self, name: str) -> Path:
        return self.directory / check_name(name)

    async def save(
        self,
        name: str,
        chunks: AsyncIterator[bytes],
        *,
        may_replace: Callable[[str], str | None] | None = None,
    ) -> StoredFile:
        """Stream an upload to disk; only a complete, in-limit upload appears.

        ``may_replace(name)`` returns why the name must not be replaced now (a job
        prints or waits for that file), or None; the upload is then refused (409).
        """
        name = check_name(name)
        part = self.directory / f"{_PART_PREFIX}{secrets.token_hex(8)}"
        size = 0
        try:
            handle = await asyncio.to_thread(open, part, "wb")
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FileError(
                            413,
                            f"file larger than {self.max_bytes} bytes",
                            max_bytes=self.max_bytes,
                        )
                    await asyncio.to_thread(handle.write, chunk)
            finally:
                await asyncio.to_thread(handle.close)
            if size == 0:
                raise FileError(400, "the uploaded file is empty")
            metadata = await asyncio.to_thread(scan_gcode, part)
            # Checked here, with no await before the replace: a job that started or
            # was queued during the upload is seen.
            busy = None if may_replace is None else may_replace(name)
            if busy is not None:
                raise FileError(409, busy, name=name)
            os.replace(part, self.directory / name)
        except BaseException:
            with contextlib.suppress(OSError):
                part.unlink()
            raise
        stored = StoredFile(name, size, time.time(), metadata)
        await asyncio.to_thread(self._write_meta, stored)
        self._cache[name] = stored
        return stored

    def _write_meta(self, stored: StoredFile) -> None:
        meta = self.directory / _META_DIR / (stored.name + ".json")
        tmp = meta.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "uploaded_at": stored.uploaded_at,
                    "size_bytes": stored.size_bytes,
                    "metadata": stored.metadata.as_dict(),
                }
            )
        )
        os.replace(tmp, meta)

    async def get(self, name: str) -> StoredFile:
        name = check_name(name)
        path = self.directory / name
        try:
            # lstat: a symlink planted in the files dir must not expose what it points at
            stat = await asyncio.to_thread(path.lstat)
        except FileNotFoundError:
            self._cache.pop(name, None)
            raise FileError(404, f"no file named {name!r}", name=name) from None
        except OSError as exc:
            raise FileError(400, f"cannot read {name!r}: {exc.strerror}", name=name) from None
        if not S_ISREG(stat.st_mode):
            raise FileError(404, f"no file named {name!r}", name=name)
        cached = self._cache.get(name)
        if cached is not None and cached.size_bytes == stat.st_size:
            return cached
        stored = await asyncio.to_thread(self._load_or_scan, name, stat)
        self._cache[name] = stored
        return stored

    def _load_or_scan(self, name: str, stat: os.stat_result) -> StoredFile:
        meta = self.directory / _META_DIR / (name + ".json")
        try:
            data = json.loads(meta.read_text())
            if data["size_bytes"] == stat.st_size:
                return StoredFile(
                    name,
                    stat.st_size,
                    data["uploaded_at"],
                    GcodeMetadata.from_dict(data["metadata"]),
                )
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # Copied in by hand or metadata lost: scan once and remember.
        stored = StoredFile(name, stat.st_size, stat.st_mtime, scan_gcode(self.directory / name))
        with contextlib.suppress(OSError):
            self._write_meta(stored)
        return stored

    async def list(self) -> list[StoredFile]:
        names = await asyncio.to_thread(self._names)
        files = []
        for name in names:
            with contextlib.suppress(FileError):
                files.append(await self.get(name))
        return sorted(files, key=lambda f: f.uploaded_at, reverse=True)

    def _names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        out = []
        for entry in os.scandir(self.directory):
            if entry.is_file(follow_symlinks=False) and not entry.name.startswith("."):
                with contextlib.suppress(FileError):
                    out.append(check_name(entry.name))
        return out

    async def delete(self, name: str) -> None:
        name = check_name(name)
        try:
            await asyncio.to_thread((self.directory / name).unlink)
        except FileNotFoundError:
            raise FileError(404, f"no file named {name!r}", name=name) from None
        with contextlib.suppress(OSError):
            (self.directory / _META_DIR / (name + ".json")).unlink()
        self._cache.pop(name, None)


def safe_download_name(name: str) -> str:
    """ASCII fallback for Content-Disposition."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
