"""G-code files in the state dir: safe names, atomic uploads, cached metadata.

Uploads are written to a hidden temporary file in the same directory
(:meth:`FileStore.receive`) and renamed into place only once the whole request
has passed every check (:meth:`FileStore.commit`), so a failed, oversized or
interrupted upload leaves nothing behind, an existing file of that name is kept
exactly as it was, and a reader never sees half a file. Commits, deletes and
metadata writes of one name are serialised, so concurrent uploads of a name
leave one of them with its own metadata. Metadata (slicer estimates, line
counts) is scanned once, off the event loop, and kept beside the file with the
file's identity (inode, size, mtime), so listing stays cheap after a restart and
metadata never describes another file of the same name.

A job pins its file while it is being checked (:meth:`FileStore.pin`) and
verifies, in the same loop turn as its launch, that the name still holds the
file it checked (:meth:`FileStore.verify`); from then on the job manager's
``file_in_use`` keeps deletes and replacements away. Both checks run with no
await between them and the rename or unlink they guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

from hydrogen.jobs.filenames import (
    GCODE_SUFFIXES,
    MAX_NAME_LENGTH,
    FileError,
    check_name,
    safe_download_name,
)
from hydrogen.jobs.metadata import GcodeMetadata, scan_gcode

__all__ = [
    "GCODE_SUFFIXES",
    "MAX_NAME_LENGTH",
    "FileError",
    "FileInUse",
    "FileStore",
    "Pin",
    "StoredFile",
    "Upload",
    "check_name",
    "safe_download_name",
]

_META_DIR = ".meta"
_PART_PREFIX = ".upload-"


@dataclass(frozen=True, slots=True)
class FileInUse:
    """Why a file must not be replaced or deleted now, and the printer using it."""

    reason: str
    printer: str


#: What identifies one file on disk: a replacement or a rewrite changes it.
Identity = tuple[int, int, int, int]


def _identity(stat: os.stat_result) -> Identity:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class StoredFile:
    name: str
    size_bytes: int
    uploaded_at: float
    metadata: GcodeMetadata
    #: the file these figures describe (not part of the API)
    identity: Identity | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size_bytes": self.size_bytes,
            "uploaded_at": self.uploaded_at,
            "metadata": self.metadata.as_dict(),
        }


@dataclass
class Upload:
    """A received upload in its hidden temporary file, not yet visible."""

    name: str
    part: Path
    size: int
    metadata: GcodeMetadata
    identity: Identity
    committed: bool = False

    def discard(self) -> None:
        """Remove the temporary file (a no-op once committed)."""
        if not self.committed:
            with contextlib.suppress(OSError):
                self.part.unlink()


class FileStore:
    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._cache: dict[str, StoredFile] = {}
        #: one lock per name while it is in use: commits, deletes and metadata
        #: writes of one name never interleave
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}

    def prepare(self) -> None:
        """Create the directories and remove what a crash left half-written (uploads,
        deleted files not yet freed, metadata)."""
        (self.directory / _META_DIR).mkdir(parents=True, exist_ok=True)
        leftovers = [
            *self.directory.glob(_PART_PREFIX + "*"),
            *(self.directory / _META_DIR).glob("*.tmp"),
        ]
        for leftover in leftovers:
            with contextlib.suppress(OSError):
                leftover.unlink()

    def path(self, name: str) -> Path:
        return self.directory / check_name(name)

    @contextlib.asynccontextmanager
    async def _locked(self, name: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._lock_users[name] = self._lock_users.get(name, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[name] -= 1
            if not self._lock_users[name]:
                del self._lock_users[name], self._locks[name]

    # -- uploads ------------------------------------------------------------------------
    async def receive(self, name: str, chunks: AsyncIterator[bytes]) -> Upload:
        """Stream an upload into a hidden temporary file and scan it; nothing is
        visible until :meth:`commit`. On failure the temporary file is gone."""
        name = check_name(name)
        part = self.directory / f"{_PART_PREFIX}{secrets.token_hex(8)}"
        size = 0
        try:
            handle = await asyncio.to_thread(open, part, "xb")
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
                await asyncio.to_thread(handle.flush)
                identity = _identity(os.fstat(handle.fileno()))
            finally:
                await asyncio.to_thread(handle.close)
            if size == 0:
                raise FileError(400, "the uploaded file is empty")
            metadata = await asyncio.to_thread(scan_gcode, part)
        except BaseException:
            with contextlib.suppress(OSError):
                part.unlink()
            raise
        return Upload(name, part, size, metadata, identity)

    async def commit(
        self,
        upload: Upload,
        *,
        may_replace: Callable[[str], FileInUse | None] | None = None,
        check: Callable[[Path], str | None] | None = None,
    ) -> StoredFile:
        """Rename a received upload into place, replacing a file of that name.

        ``check(path)`` (run on the temporary file, off the loop) returns why the file
        must not be stored, or None: it is then refused (409) and an existing file of
        that name is kept. ``may_replace(name)`` returns why the name must not be
        replaced now (a job prints or waits for that file), or None: refused (409).
        On any failure the upload is discarded and the stored file is untouched.
        """
        name = upload.name
        try:
            if check is not None:
                problem = await asyncio.to_thread(check, upload.part)
                if problem is not None:
                    raise FileError(409, f"{name} cannot be printed: {problem}", name=name)
            async with self._locked(name):
                # Checked here, with no await before the replace: a job that started
                # or was queued during the upload is seen.
                busy = None if may_replace is None else may_replace(name)
                if busy is not None:
                    raise FileError(409, busy.reason, name=name, printer=busy.printer)
                os.replace(upload.part, self.directory / name)
                upload.committed = True
                stored = StoredFile(
                    name, upload.size, time.time(), upload.metadata, upload.identity
                )
                self._cache[name] = stored
                # Under the lock: the metadata on disk is that of the file just stored,
                # whatever other upload of this name commits next.
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(self._write_meta, stored)
        finally:
            upload.discard()
        return stored

    def _write_meta(self, stored: StoredFile) -> None:
        meta = self.directory / _META_DIR / (stored.name + ".json")
        data: dict[str, Any] = {
            "uploaded_at": stored.uploaded_at,
            "size_bytes": stored.size_bytes,
            "metadata": stored.metadata.as_dict(),
        }
        if stored.identity is not None:
            data["inode"], data["mtime_ns"] = stored.identity[1], stored.identity[3]
        # a temporary name of its own: two writers never share (and steal) one
        tmp = meta.with_name(f"{meta.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, meta)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    # -- reading ------------------------------------------------------------------------
    async def get(self, name: str) -> StoredFile:
        name = check_name(name)
        stat = await self._stat(name)
        cached = self._cache.get(name)
        if cached is not None and cached.identity == _identity(stat):
            return cached
        async with self._locked(name):
            # again under the lock: a commit of this name may just have finished
            stat = await self._stat(name)
            cached = self._cache.get(name)
            if cached is not None and cached.identity == _identity(stat):
                return cached
            stored = await asyncio.to_thread(self._load_or_scan, name, stat)
            self._cache[name] = stored
            return stored

    async def _stat(self, name: str) -> os.stat_result:
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
        return stat

    def _load_or_scan(self, name: str, stat: os.stat_result) -> StoredFile:
        meta = self.directory / _META_DIR / (name + ".json")
        identity = _identity(stat)
        try:
            data = json.loads(meta.read_text())
            if data["size_bytes"] == stat.st_size and (
                # metadata written before identities were kept: size only
                "inode" not in data
                or (data["inode"] == stat.st_ino and data["mtime_ns"] == stat.st_mtime_ns)
            ):
                return StoredFile(
                    name,
                    stat.st_size,
                    data["uploaded_at"],
                    GcodeMetadata.from_dict(data["metadata"]),
                    identity,
                )
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # Copied in by hand, rewritten in place or metadata lost: scan once and remember.
        stored = StoredFile(
            name, stat.st_size, stat.st_mtime, scan_gcode(self.directory / name), identity
        )
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
                    # a name on disk that is not its own normal form (copied in by hand)
                    # could not be fetched by the name shown: not listed
                    if check_name(entry.name) == entry.name:
                        out.append(entry.name)
        return out

    # -- pinning for jobs ---------------------------------------------------------------
    async def pin(self, name: str) -> Pin:
        """Hold ``name``'s file open, with its metadata, while a job checks it.

        Use as ``with await store.pin(name) as stored:``; call :meth:`verify` inside,
        right before registering the job, with no await in between.
        """
        name = check_name(name)
        path = self.directory / name
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = await asyncio.to_thread(os.open, path, flags)
        except FileNotFoundError:
            raise FileError(404, f"no file named {name!r}", name=name) from None
        except OSError as exc:
            # a symlink (ELOOP) or something else that is not a plain file we may read
            await self._stat(name)  # the clearer error: 404 or 400
            raise FileError(400, f"cannot read {name!r}: {exc.strerror}", name=name) from None
        pin = Pin(fd)
        try:
            pinned = os.fstat(fd)
            if not S_ISREG(pinned.st_mode):
                raise FileError(404, f"no file named {name!r}", name=name)
            stored = await self.get(name)
            if stored.identity != _identity(pinned):
                raise _replaced(name)
        except BaseException:
            pin.close()
            raise
        pin.stored = stored
        return pin

    def verify(self, stored: StoredFile) -> None:
        """Synchronously: the name still holds the file ``stored`` describes, or
        FileError 404 (deleted since) or 409 (replaced since)."""
        try:
            stat = os.lstat(self.directory / stored.name)
        except FileNotFoundError:
            raise FileError(
                404, f"{stored.name} was deleted while the job was starting", name=stored.name
            ) from None
        if _identity(stat) != stored.identity:
            raise _replaced(stored.name)

    # -- deleting -----------------------------------------------------------------------
    async def delete(
        self, name: str, *, may_delete: Callable[[str], FileInUse | None] | None = None
    ) -> None:
        """Remove a file. ``may_delete(name)`` returns why it must not go now (a job
        prints or waits for it), or None; checked with no await before the removal."""
        name = check_name(name)
        path = self.directory / name
        trash = self.directory / f"{_PART_PREFIX}{secrets.token_hex(8)}"
        async with self._locked(name):
            busy = None if may_delete is None else may_delete(name)
            if busy is not None:
                raise FileError(409, busy.reason, name=name, printer=busy.printer)
            try:
                if not S_ISREG(os.lstat(path).st_mode):
                    raise FileNotFoundError
                # a rename is instant; freeing a large file's blocks happens off the loop
                os.rename(path, trash)
            except FileNotFoundError:
                self._cache.pop(name, None)
                raise FileError(404, f"no file named {name!r}", name=name) from None
            self._cache.pop(name, None)
            with contextlib.suppress(OSError):
                await asyncio.to_thread((self.directory / _META_DIR / (name + ".json")).unlink)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(trash.unlink)


def _replaced(name: str) -> FileError:
    return FileError(
        409, f"{name} was replaced while the job was starting: start it again", name=name
    )


class Pin:
    """An open handle on a stored file: while held, its inode cannot be reused, so a
    name that still shows that inode at :meth:`FileStore.verify` held it throughout."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self.stored: StoredFile | None = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StoredFile:
        assert self.stored is not None
        return self.stored

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
