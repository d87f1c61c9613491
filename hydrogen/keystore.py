"""Keys made at run time: ``state_dir/keys.json``, shared by the gateway and the CLI.

Only a salted slow hash of each secret is kept (``hashlib.scrypt``, n=2**14, r=8,
p=1: about 60 ms and 16 MiB per check), so a copied state dir does not give the
keys away. A secret is shown once, when it is made (``add``, ``rotate``).

A secret looks like ``hgk_<id>_<random>``: the 10 hex digits of ``id`` name the
entry, so a presented key is checked against one hash, not every one; the random
part is 32 bytes. The recognisable prefix also lets the log redaction mask a key
wherever it appears.

Edits (from ``hydrogen keys`` or from the gateway's key requests) take an exclusive
``flock`` on ``keys.lock``, read the file, change it and write it back by atomic
replace (a temporary file, fsync, rename), so two editors never lose each other's
change and a reader sees the old file or the new one, never half of one. Readers
take no lock; the gateway notices a change by the file's inode, size and mtime
(:meth:`KeyStore.stamp`). Stdlib only, no asyncio: the callers decide the thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydrogen.protocol import Role

log = logging.getLogger(__name__)

KEYS_FILE = "keys.json"
LOCK_FILE = "keys.lock"
PREFIX = "hgk_"
_ID_HEX = 10
_SECRET_BYTES = 32
#: scrypt's cost: 2**14 rounds of 8 blocks, 16 MiB; about 60 ms on a laptop core.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_SECRET_PATTERN = re.compile(rf"^{PREFIX}([0-9a-f]{{{_ID_HEX}}})_[A-Za-z0-9_\-]{{40,64}}$")


class KeyStoreError(Exception):
    """A refused edit or an unreadable store; ``kind`` is ``exists``, ``not_found``,
    ``invalid`` or ``broken``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class StoredKey:
    """One entry of the store: everything but the secret."""

    name: str
    role: Role
    printers: frozenset[str] | None
    #: Public: picks the entry a presented secret is checked against.
    key_id: str
    #: ``scrypt$n$r$p$salt$hash`` (base64url).
    hash: str = ""
    #: Changes with every rotation: tokens and cookies name it, so they die with it.
    generation: str = ""
    created_at: float = 0.0
    rotated_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.label,
            "printers": sorted(self.printers) if self.printers is not None else None,
            "key_id": self.key_id,
            "hash": self.hash,
            "generation": self.generation,
            "created_at": self.created_at,
            "rotated_at": self.rotated_at,
        }

    @classmethod
    def from_json(cls, data: Any) -> StoredKey:
        if not isinstance(data, dict):
            raise ValueError("an entry is not an object")
        printers = data.get("printers")
        return cls(
            name=str(data["name"]),
            role=Role.parse(str(data["role"])),
            printers=frozenset(str(p) for p in printers) if printers is not None else None,
            key_id=str(data["key_id"]),
            hash=str(data["hash"]),
            generation=str(data["generation"]),
            created_at=float(data.get("created_at") or 0.0),
            rotated_at=float(data["rotated_at"]) if data.get("rotated_at") else None,
        )


# -- secrets and their hashes ------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_secret(key_id: str) -> str:
    return f"{PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"


def key_id_of(secret: str) -> str | None:
    """The entry a presented secret claims to be, or None if it is not one of ours."""
    match = _SECRET_PATTERN.match(secret) if len(secret) < 100 else None
    return match.group(1) if match else None


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Does ``secret`` match ``stored`` (compared in constant time)?"""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = _scrypt(secret, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=64 * 1024 * 1024,
        dklen=_HASH_BYTES,
    )


def load_secret(path: Path, size: int = 32) -> bytes:
    """A random secret kept in ``path`` (mode 0600), made on first use.

    ``O_EXCL``: two processes starting at once agree on whichever wrote first.
    """
    for _ in range(3):
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            pass
        else:
            with contextlib.suppress(ValueError):
                secret = bytes.fromhex(text)
                if len(secret) >= size:
                    with contextlib.suppress(OSError):
                        path.chmod(0o600)  # a copied-in file may be too open
                    return secret
            log.warning("%s is not a valid secret; making a new one", path)
            with contextlib.suppress(OSError):
                path.unlink()
        secret = secrets.token_bytes(size)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secret.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return secret
    raise OSError(f"cannot settle {path}")


# -- the store ------------------------------------------------------------------------------


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise KeyStoreError(
            "invalid", "a key name is 1-64 letters, digits, '_', '-' or '.' (not starting with one)"
        )


class KeyStore:
    """The key file in ``state_dir``; every method does blocking file I/O."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / KEYS_FILE

    def stamp(self) -> tuple[int, int, int] | None:
        """Changes whenever the file is replaced (inode) or rewritten (size, mtime)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def load(self) -> tuple[StoredKey, ...]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise KeyStoreError("broken", f"cannot read {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
            entries = tuple(StoredKey.from_json(e) for e in data["keys"])
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError("broken", f"{self.path} is not a valid key store: {exc}") from None
        return entries

    def get(self, name: str) -> StoredKey | None:
        return next((k for k in self.load() if k.name == name), None)

    # -- edits ---------------------------------------------------------------------------
    def add(
        self,
        name: str,
        role: Role,
        printers: Iterable[str] | None = None,
        *,
        reserved: Iterable[str] = (),
    ) -> tuple[StoredKey, str]:
        """A new key; returns it and its secret (the only time the secret exists)."""
        check_name(name)
        if name in set(reserved):
            raise KeyStoreError("exists", f"a key named {name!r} is in the configuration")
        with self._edit() as keys:
            if any(k.name == name for k in keys):
                raise KeyStoreError("exists", f"a key named {name!r} already exists")
            taken = {k.key_id for k in keys}
            key_id = secrets.token_hex(_ID_HEX // 2)
            while key_id in taken:
                key_id = secrets.token_hex(_ID_HEX // 2)
            secret = new_secret(key_id)
            entry = StoredKey(
                name=name,
                role=role,
                printers=frozenset(printers) if printers is not None else None,
                key_id=key_id,
                hash=hash_secret(secret),
                generation=secrets.token_hex(8),
                created_at=time.time(),
            )
            keys.append(entry)
        return entry, secret

    def revoke(self, name: str) -> StoredKey:
        with self._edit() as keys:
            entry = self._find(keys, name)
            keys.remove(entry)
        return entry

    def rotate(self, name: str) -> tuple[StoredKey, str]:
        """A new secret (and generation) for ``name``; the old one stops working."""
        with self._edit() as keys:
            old = self._find(keys, name)
            secret = new_secret(old.key_id)
            new = StoredKey(
                name=old.name,
                role=old.role,
                printers=old.printers,
                key_id=old.key_id,
                hash=hash_secret(secret),
                generation=secrets.token_hex(8),
                created_at=old.created_at,
                rotated_at=time.time(),
            )
            keys[keys.index(old)] = new
        return new, secret

    @staticmethod
    def _find(keys: list[StoredKey], name: str) -> StoredKey:
        for entry in keys:
            if entry.name == name:
                return entry
        raise KeyStoreError("not_found", f"no stored key named {name!r}")

    @contextlib.contextmanager
    def _edit(self) -> Iterator[list[StoredKey]]:
        """Lock, read, let the caller change the list, write it back atomically."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            keys = list(self.load())
            yield keys
            self._write(keys)
        finally:
            os.close(fd)  # closing drops the lock

    def _write(self, keys: list[StoredKey]) -> None:
        body = json.dumps({"version": 1, "keys": [k.to_json() for k in keys]}, indent=1) + "\n"
        tmp = self.path.with_name(f".{KEYS_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.state_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
