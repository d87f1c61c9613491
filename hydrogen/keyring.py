"""Every key the gateway accepts, by secret and by name: the config's and the store's.

The one place a presented secret becomes a :class:`KeyRecord` (name, role, printer
scope, generation). The transports turn a record into an
:class:`~hydrogen.identity.Identity`; tokens and cookies name a record and its
generation, so they die with the key (revoked) or its secret (rotated).

**Why a cache in front of the slow hash is safe.** A stored key is checked with
scrypt (about 60 ms) the first time this process sees it. On success the
HMAC-SHA256 of the presented secret under a random per-process key is remembered,
with the entry's hash it matched; later presentations cost one HMAC and a dict
lookup (about a microsecond). The cache holds only secrets that already passed the
slow hash here, its key never leaves memory (a dump of the cache cannot be checked
against guesses offline, unlike an unkeyed digest), a hit still requires the entry
to carry the very hash it matched (a rotation or revocation misses at once), and it
is emptied whenever the store file changes. Failures are never cached; the
brute-force limit bounds how many slow checks wrong keys can cause. Pure apart from
the store's file reads: no asyncio, no aiohttp (:meth:`Keyring.warm` is the one
coroutine, and it only moves the slow hash off the event loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from hydrogen.config import ApiKey
from hydrogen.identity import Identity
from hydrogen.keystore import KeyStore, KeyStoreError, StoredKey, key_id_of, verify_secret
from hydrogen.protocol import Role

log = logging.getLogger(__name__)

#: Verified secrets remembered at most (an attacker cannot grow it: only good keys enter).
CACHE_LIMIT = 4096


@dataclass(frozen=True)
class KeyRecord:
    """A key as the rest of the gateway sees it: never its secret."""

    name: str
    role: Role
    printers: frozenset[str] | None
    #: Changes when the secret does; tokens carry it (never the secret).
    generation: str
    #: ``config`` or ``store``.
    source: str
    created_at: float | None = None
    rotated_at: float | None = None
    #: What the session cookie's key fingerprint is made from (secret-derived).
    material: str = field(default="", repr=False)

    def identity(self, via: str) -> Identity:
        return Identity(self.role, via, self.name, self.printers, self.generation)

    def describe(self) -> dict[str, object]:
        """What ``keys`` lists: never the secret, nor its hash."""
        return {
            "name": self.name,
            "role": self.role.label,
            "printers": sorted(self.printers) if self.printers is not None else None,
            "source": self.source,
            "created_at": self.created_at,
            "rotated_at": self.rotated_at,
        }


class Keyring:
    def __init__(
        self,
        config_keys: Iterable[ApiKey],
        store: KeyStore | None,
        pepper: bytes,
    ) -> None:
        self._config = tuple(config_keys)
        self.store = store
        self._pepper = pepper
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[str, str]] = {}
        self._config_records = [self._config_record(k) for k in self._config]
        self._stored: dict[str, StoredKey] = {}
        self._by_id: dict[str, StoredKey] = {}
        self._stamp: tuple[int, int, int] | None = None
        #: Bumped on every change of the store (the connections watcher compares it).
        self.version = 0
        self.refresh(force=True)

    # -- the store, reloaded when its file changes -----------------------------------
    def refresh(self, *, force: bool = False) -> bool:
        """Reload the store if its file changed; True when it did.

        One ``stat`` call (about a microsecond), so it runs on every authentication: a
        key the CLI adds works at once, one it revokes fails at once.
        """
        if self.store is None:
            return False
        stamp = self.store.stamp()
        if stamp == self._stamp and not force:
            return False
        try:
            entries = self.store.load()
        except KeyStoreError as exc:
            # Keep what we had: a half-edited file by hand must not lock everyone out.
            log.error("%s; keeping the keys loaded before", exc.message)
            return False
        reserved = {k.name for k in self._config}
        stored = {}
        for entry in entries:
            if entry.name in reserved:
                log.warning(
                    "stored key %r is ignored: the configuration has one so named", entry.name
                )
                continue
            stored[entry.name] = entry
        self._stamp = stamp
        self._stored = stored
        self._by_id = {e.key_id: e for e in stored.values()}
        self._cache.clear()
        self.version += 1
        return True

    # -- lookups -----------------------------------------------------------------------
    def records(self) -> list[KeyRecord]:
        self.refresh()
        return self._config_records + [self._stored_record(e) for e in self._stored.values()]

    def by_name(self, name: str) -> KeyRecord | None:
        self.refresh()
        for record in self._config_records:
            if record.name == name:
                return record
        entry = self._stored.get(name)
        return self._stored_record(entry) if entry is not None else None

    def config_names(self) -> set[str]:
        return {k.name for k in self._config}

    def lookup(self, secret: str) -> KeyRecord | None:
        """The key ``secret`` is, or None. Fast after the first success (see the module)."""
        if not secret:
            return None
        self.refresh()
        key_id = key_id_of(secret)
        if key_id is None:
            return self._config_lookup(secret)
        entry = self._by_id.get(key_id)
        if entry is None:
            return None
        digest = self._digest(secret)
        cached = self._cache.get(digest)
        if cached is not None and hmac.compare_digest(cached[1], entry.hash):
            return self._stored_record(entry)
        if not verify_secret(secret, entry.hash):
            return None
        self._remember(digest, entry)
        return self._stored_record(entry)

    async def warm(self, secret: str) -> None:
        """Do a first slow check off the event loop, so :meth:`lookup` then hits the cache."""
        key_id = key_id_of(secret) if secret else None
        if key_id is None:
            return
        self.refresh()
        entry = self._by_id.get(key_id)
        if entry is None or self._digest(secret) in self._cache:
            return
        if await asyncio.to_thread(verify_secret, secret, entry.hash):
            self._remember(self._digest(secret), entry)

    def _remember(self, digest: bytes, entry: StoredKey) -> None:
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (entry.key_id, entry.hash)

    def _digest(self, secret: str) -> bytes:
        return hmac.new(
            self._cache_key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).digest()

    def _config_lookup(self, secret: str) -> KeyRecord | None:
        """Every configured key is compared, whatever matches (constant time);
        the same secret configured twice grants the higher role."""
        try:
            candidate = secret.encode()
        except UnicodeEncodeError:
            return None
        found: KeyRecord | None = None
        for entry, record in zip(self._config, self._config_records, strict=True):
            if secrets.compare_digest(candidate, entry.key.encode()) and (
                found is None or record.role > found.role
            ):
                found = record
        return found

    # -- records -----------------------------------------------------------------------
    def _config_record(self, key: ApiKey) -> KeyRecord:
        # Keyed, so a token's generation claim is no offline test of a weak config key.
        mac = hmac.new(self._pepper, f"gen\0{key.name}\0{key.key}".encode(), hashlib.sha256)
        return KeyRecord(
            key.name, key.role, key.printers, mac.hexdigest()[:16], "config", material=key.key
        )

    @staticmethod
    def _stored_record(entry: StoredKey) -> KeyRecord:
        return KeyRecord(
            entry.name,
            entry.role,
            entry.printers,
            entry.generation,
            "store",
            entry.created_at,
            entry.rotated_at,
            material=f"\0store\0{entry.generation}",
        )
