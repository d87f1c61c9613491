"""Short-lived signed tokens (JWT, HS256) for browsers and third-party apps.

PyJWT signs and checks them (not a hand-written JWT: the algorithm confusions,
``alg: none`` and claim checks are where home-made JWT code goes wrong). The
algorithm is pinned to HS256 on both sides; the secret is 32 random bytes in
``state_dir/token_secret`` (mode 0600), so tokens survive a restart and deleting
the file ends them all.

Claims: ``sub`` (the key's name), ``role``, ``printers`` (a list, or null for all),
``iat``, ``exp``, ``jti`` and ``gen``, the generation of the key (see
:mod:`hydrogen.keyring`). A token is honoured only while a key of that name has that
generation, with the lower of the token's and the key's role and the intersection of
their scopes: revoking or rotating the key ends its tokens at once, and a key
narrowed later narrows its tokens too. One-shot tokens (``"use": "oneshot"``) are
good for one GET within their lifetime; the used ids are kept in memory until they
expire (a restart within that minute forgets them: documented).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from hydrogen.identity import Identity
from hydrogen.keyring import KeyRecord
from hydrogen.protocol import Role

ALGORITHM = "HS256"
ONESHOT_TTL_SECONDS = 60
#: Longer than any token we issue is not ours (a header that long is refused unread).
MAX_TOKEN_CHARS = 4096
_USED_LIMIT = 100_000


class TokenError(Exception):
    """Why a token is refused: ``expired``, ``invalid``, ``revoked`` or ``used``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    name: str
    role: Role
    printers: frozenset[str] | None
    issued_at: int
    expires_at: int
    jti: str
    generation: str
    oneshot: bool = False


def looks_like_jwt(text: str) -> bool:
    return text.count(".") == 2 and text.startswith("eyJ")


class TokenIssuer:
    def __init__(
        self,
        secret: bytes,
        resolve: Callable[[str], KeyRecord | None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._resolve = resolve
        self._clock = clock
        self._used: dict[str, int] = {}

    def issue(
        self,
        identity: Identity,
        *,
        role: Role,
        printers: frozenset[str] | None,
        ttl: int,
        oneshot: bool = False,
    ) -> tuple[str, Claims]:
        """A token for ``identity``; the caller has checked it is no broader than it."""
        now = int(self._clock())
        claims = Claims(
            name=identity.name,
            role=role,
            printers=printers,
            issued_at=now,
            expires_at=now + ttl,
            jti=secrets.token_urlsafe(12),
            generation=identity.generation,
            oneshot=oneshot,
        )
        body: dict[str, object] = {
            "sub": claims.name,
            "role": role.label,
            "printers": sorted(printers) if printers is not None else None,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.jti,
            "gen": claims.generation,
        }
        if oneshot:
            body["use"] = "oneshot"
        return jwt.encode(body, self._secret, algorithm=ALGORITHM), claims

    def verify(self, token: str, *, oneshot: bool = False) -> tuple[Identity, Claims]:
        """The identity ``token`` grants now; raises :class:`TokenError`.

        ``oneshot`` selects the kind accepted: a one-shot token is refused where an
        ordinary one is expected, and the other way round.
        """
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("invalid")
        try:
            body = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "iat", "exp", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("expired") from None
        except jwt.InvalidTokenError:
            raise TokenError("invalid") from None
        claims = _claims(body)
        if claims is None or claims.oneshot != oneshot:
            raise TokenError("invalid")
        if claims.expires_at <= self._clock():  # PyJWT allows exp == now
            raise TokenError("expired")
        record = self._resolve(claims.name)
        if record is None or not secrets.compare_digest(record.generation, claims.generation):
            raise TokenError("revoked")
        if oneshot:
            self._use(claims)
        printers = narrowest(record.printers, claims.printers)
        role = min(record.role, claims.role)
        return Identity(role, "token", record.name, printers, record.generation), claims

    def _use(self, claims: Claims) -> None:
        now = self._clock()
        if len(self._used) > _USED_LIMIT or len(self._used) % 256 == 0:
            self._used = {j: exp for j, exp in self._used.items() if exp > now}
        if claims.jti in self._used:
            raise TokenError("used")
        self._used[claims.jti] = claims.expires_at


def narrowest(first: frozenset[str] | None, second: frozenset[str] | None) -> frozenset[str] | None:
    """The printers both scopes allow (None is every printer)."""
    if first is None:
        return second
    if second is None:
        return first
    return first & second


def _claims(body: dict[str, object]) -> Claims | None:
    try:
        printers = body.get("printers")
        if printers is not None and not (
            isinstance(printers, list) and all(isinstance(p, str) for p in printers)
        ):
            return None
        name, jti, gen = body["sub"], body["jti"], body.get("gen", "")
        iat, exp = body["iat"], body["exp"]
        if not all(isinstance(v, str) for v in (name, jti, gen)):
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp)):
            return None
        return Claims(
            name=str(name),
            role=Role.parse(str(body["role"])),
            printers=frozenset(printers) if isinstance(printers, list) else None,
            issued_at=int(iat),  # type: ignore[call-overload]
            expires_at=int(exp),  # type: ignore[call-overload]
            jti=str(jti),
            generation=str(gen),
            oneshot=body.get("use") == "oneshot",
        )
    except (KeyError, ValueError, AttributeError):
        return None
