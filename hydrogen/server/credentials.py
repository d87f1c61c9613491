"""What an app needs to decide who is calling: keys, tokens, the brute-force limit,
and the live WebSocket logins that revocation and token expiry end.

One :class:`Credentials` per app (``app[CREDENTIALS]``). A watcher polls the key
store's file stamp every :data:`WATCH_INTERVAL` seconds, so a key revoked or rotated
by ``hydrogen keys`` in another process closes its connections within a second; a
revocation over the API closes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hydrogen.config import Config
from hydrogen.dispatch import Session
from hydrogen.identity import Identity
from hydrogen.keyring import Keyring
from hydrogen.keystore import KeyStore, load_secret
from hydrogen.protocol import CloseCode
from hydrogen.server.limits import FailureLimiter
from hydrogen.tokens import TokenIssuer

log = logging.getLogger(__name__)

TOKEN_SECRET_FILE = "token_secret"
#: Seconds between looks at the key store file (revocation by the CLI).
WATCH_INTERVAL = 0.25


@dataclass(eq=False)
class Login:
    """One open WebSocket and what authenticated it."""

    session: Session
    #: Closes the socket with a code, after telling the client why (set by ws.py).
    end: Callable[[int, str, dict[str, Any]], Awaitable[None]]
    #: When the token it was opened (or last refreshed) with expires; None for a key.
    expires_at: float | None = None
    #: Set when ``expires_at`` changes (the expiry watcher starts over).
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The expiry watcher, for a token's connection.
    task: asyncio.Task[None] | None = None
    #: The role counted in ``active_by_role`` (a refresh keeps the role).
    role_label: str = ""

    def __post_init__(self) -> None:
        self.role_label = self.session.role.label

    @property
    def identity(self) -> Identity:
        return self.session.identity


class Credentials:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = KeyStore(config.state_dir)
        try:
            secret = load_secret(config.state_dir / TOKEN_SECRET_FILE)
        except OSError as exc:
            log.warning("cannot keep the token secret (%s); tokens end at restart", exc)
            secret = secrets.token_bytes(32)
        self.keyring = Keyring(config.keys, self.store, secret)
        self.tokens = TokenIssuer(secret, self.keyring.by_name)
        self.logins: dict[str, Login] = {}
        self.failures = FailureLimiter(config.auth.max_failures, config.auth.failure_window_seconds)
        self._seen_version = self.keyring.version

    def still_valid(self, identity: Identity) -> bool:
        """Does the key that authenticated ``identity`` still exist with that secret?"""
        if identity.via == "internal":
            return True
        record = self.keyring.by_name(identity.name)
        return record is not None and record.generation == identity.generation

    async def end_revoked(self) -> int:
        """Close every connection whose key is gone or rotated; returns how many."""
        doomed = [login for login in self.logins.values() if not self.still_valid(login.identity)]
        for login in doomed:
            log.info(
                "client %s: key %r was revoked or rotated; closing with %d",
                login.session.id,
                login.identity.name,
                CloseCode.CREDENTIALS_REVOKED,
            )
        await asyncio.gather(
            *(
                login.end(
                    CloseCode.CREDENTIALS_REVOKED,
                    "credentials revoked",
                    {"type": "auth_status", "status": "revoked"},
                )
                for login in doomed
            )
        )
        return len(doomed)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                self.keyring.refresh()
                if self.keyring.version != self._seen_version:
                    self._seen_version = self.keyring.version
                    await self.end_revoked()
            except Exception:
                log.exception("key store watch failed; will look again")


async def watch_ctx(credentials: Credentials) -> AsyncIterator[None]:
    task = asyncio.create_task(credentials.watch(), name="hydrogen-keys-watch")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
