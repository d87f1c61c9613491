"""Dashboard sessions: a signed cookie instead of a key in every request.

The cookie ``hydrogen_session`` holds a self-contained token, so it survives a
gateway restart without a session table::

    v1.<payload>.<signature>

``payload`` is base64url (no padding) of compact JSON ``{"r": role, "n": key name,
"p": printers or null, "iat": issued, "exp": expiry, "kf": key fingerprint}``;
``signature`` is base64url of HMAC-SHA256(secret, ``"v1." + payload``). The secret
is 32 random bytes kept in ``state_dir/session_secret`` (mode 0600, created on
first use). The key fingerprint is HMAC-SHA256(secret, ``"key\\0" + material``)
truncated to 16 bytes, where the material of a configured key is the key itself and
that of a stored key is its generation (which changes when it is rotated): a keyed
hash, so a cookie never carries anything that can be checked offline against
guessed keys. A token is only honoured while a key still has that fingerprint, with
the lower of the token's role and that key's current role and the printers both
allow. Removing, revoking or rotating a key therefore ends its sessions (and
downgrading it downgrades them); deleting ``session_secret`` ends every session.

Browsers send cookies on cross-site WebSocket handshakes and form POSTs, so
everything authenticated by this cookie that can change something also checks
``Origin`` (:func:`origin_allowed`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from hydrogen.config import ApiKey
from hydrogen.identity import Identity
from hydrogen.keyring import KeyRecord, Keyring
from hydrogen.keystore import load_secret
from hydrogen.protocol import ErrorCode, Role
from hydrogen.server.errors import json_error
from hydrogen.server.keys import CREDENTIALS, GATEWAY
from hydrogen.tokens import narrowest

log = logging.getLogger(__name__)

COOKIE_NAME = "hydrogen_session"
#: Seconds a session lasts (the cookie's Max-Age and the token's expiry).
DEFAULT_MAX_AGE = 7 * 24 * 3600
SECRET_FILE = "session_secret"
_VERSION = "v1"
_FINGERPRINT_BYTES = 16
_SECRET_BYTES = 32
#: A cookie larger than this is not ours (ours are about 150 characters).
_MAX_TOKEN_CHARS = 1024
#: HTTP methods that change nothing: no Origin check for cookie requests.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionManager:
    """Issues and verifies session tokens with the secret from ``state_dir``."""

    def __init__(
        self, state_dir: Path, *, max_age: int = DEFAULT_MAX_AGE, keyring: Keyring | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        self.max_age = max_age
        #: Resolves the key signed in with to its name, scope and generation.
        self.keyring = keyring
        self._secret: bytes | None = None

    # -- the secret ----------------------------------------------------------------
    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = self._load_secret()
        return self._secret

    def _load_secret(self) -> bytes:
        path = self.state_dir / SECRET_FILE
        try:
            return load_secret(path, _SECRET_BYTES)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot keep %s (%s); sessions end at restart", path, exc)
            return secrets.token_bytes(_SECRET_BYTES)

    # -- tokens ---------------------------------------------------------------------
    def fingerprint(self, key: str) -> bytes:
        digest = hmac.new(self.secret, b"key\0" + key.encode(), hashlib.sha256).digest()
        return digest[:_FINGERPRINT_BYTES]

    def _sign(self, payload: str) -> str:
        message = f"{_VERSION}.{payload}".encode("ascii")
        return _b64encode(hmac.new(self.secret, message, hashlib.sha256).digest())

    def issue(self, key: str, role: Role, *, now: float | None = None) -> str:
        """A token for someone who just proved they hold ``key`` (granting ``role``)."""
        issued = int(time.time() if now is None else now)
        record = self.keyring.lookup(key) if self.keyring is not None else None
        body: dict[str, Any] = {
            "r": role.label,
            "n": record.name if record is not None else "",
            "p": sorted(record.printers) if record and record.printers is not None else None,
            "iat": issued,
            "exp": issued + self.max_age,
            "kf": _b64encode(self.fingerprint(record.material if record else key)),
        }
        payload = _b64encode(json.dumps(body, separators=(",", ":")).encode())
        return f"{_VERSION}.{payload}.{self._sign(payload)}"

    def verify(
        self, token: str, keys: Iterable[ApiKey | KeyRecord], *, now: float | None = None
    ) -> Role | None:
        """The role ``token`` grants now, or None (forged, expired, or key gone)."""
        identity = self.verify_identity(token, keys, now=now)
        return identity.role if identity is not None else None

    def verify_identity(
        self, token: str, keys: Iterable[ApiKey | KeyRecord], *, now: float | None = None
    ) -> Identity | None:
        """Who ``token`` is now (the key's current name, role and scope narrowed by
        the token's), or None: forged, expired, or its key removed, revoked or rotated."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            return None
        version, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        if version != _VERSION or not payload or not signature:
            return None
        if not hmac.compare_digest(signature.encode("ascii", "replace"), self._sign_safe(payload)):
            return None
        try:
            body = json.loads(_b64decode(payload))
            role = Role.parse(body["r"])
            expires = body["exp"]
            fingerprint = _b64decode(body["kf"])
            scope = body.get("p")
            printers = frozenset(str(p) for p in scope) if isinstance(scope, list) else None
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            return None
        if not isinstance(expires, int) or isinstance(expires, bool):
            return None
        if expires <= (time.time() if now is None else now):
            return None
        granted: ApiKey | KeyRecord | None = None
        for entry in keys:  # every key is compared, whichever matches
            if hmac.compare_digest(self.fingerprint(_material(entry)), fingerprint) and (
                granted is None or entry.role > granted.role
            ):
                granted = entry
        if granted is None:
            return None
        return Identity(
            min(role, granted.role),
            "cookie",
            granted.name,
            narrowest(granted.printers, printers),
            getattr(granted, "generation", ""),
        )

    def _sign_safe(self, payload: str) -> bytes:
        try:
            return self._sign(payload).encode("ascii")
        except UnicodeEncodeError:
            return b""


def _material(entry: ApiKey | KeyRecord) -> str:
    return entry.material if isinstance(entry, KeyRecord) else entry.key


SESSIONS = web.AppKey("sessions", SessionManager)


def setup(app: web.Application) -> SessionManager:
    credentials = app.get(CREDENTIALS)
    manager = SessionManager(
        app[GATEWAY].config.state_dir,
        keyring=credentials.keyring if credentials is not None else None,
    )
    app[SESSIONS] = manager
    return manager


def cookie_identity(request: web.Request) -> Identity | None:
    """Who the request's session cookie says is calling, or None."""
    token = request.cookies.get(COOKIE_NAME)
    manager = request.app.get(SESSIONS)
    if not token or manager is None:
        return None
    credentials = request.app.get(CREDENTIALS)
    keys: Iterable[ApiKey | KeyRecord] = (
        credentials.keyring.records()
        if credentials is not None
        else request.app[GATEWAY].config.keys
    )
    return manager.verify_identity(token, keys)


def cookie_role(request: web.Request) -> Role | None:
    """The role the request's session cookie grants, or None."""
    identity = cookie_identity(request)
    return identity.role if identity is not None else None


def has_cookie(request: web.Request) -> bool:
    return bool(request.cookies.get(COOKIE_NAME))


# -- origins -------------------------------------------------------------------------
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _origin_tuple(text: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin or URL; None for ``null`` or garbage."""
    try:
        url = URL(text.strip())
    except (ValueError, TypeError):
        return None
    scheme = (url.scheme or "").lower()
    if scheme not in _DEFAULT_PORTS or not url.host:
        return None
    try:
        port = url.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, url.host.lower().rstrip("."), port


def request_scheme(request: web.Request) -> str:
    """``https`` when the request came over TLS (directly or via a TLS proxy).

    ``X-Forwarded-Proto`` cannot be forged by the cross-site pages these checks
    stop: a browser adds no such header to a WebSocket handshake or a form POST.
    """
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if forwarded in ("http", "https"):
        return forwarded
    return "https" if request.secure else "http"


def own_origin(request: web.Request) -> str:
    """The gateway's origin as the browser sees it: scheme and the ``Host`` header."""
    return f"{request_scheme(request)}://{request.host}"


def origin_allowed(request: web.Request, *, allow_referer: bool = False) -> bool:
    """Does ``Origin`` (else ``Referer``, if allowed) name this gateway or an allowed origin?"""
    presented = request.headers.get("Origin")
    if presented is None and allow_referer:
        presented = request.headers.get("Referer")
    if not presented:
        return False
    origin = _origin_tuple(presented)
    if origin is None:
        return False
    allowed = [own_origin(request), *request.app[GATEWAY].config.server.allowed_origins]
    return any(origin == _origin_tuple(entry) for entry in allowed)


def origin_refused(
    request: web.Request,
    message: str = "this request came from another origin; the session cookie is not accepted",
    hint: str = "add the origin to server.allowed_origins, or authenticate with a key",
) -> web.Response:
    """HTTP 403 for a cookie-authenticated request (or a sign-in) from a foreign (or no)
    origin: the protection against cross-site request forgery."""
    return json_error(
        403,
        ErrorCode.FORBIDDEN,
        message,
        {
            "origin": (request.headers.get("Origin") or "")[:200] or None,
            "expected": own_origin(request),
            "hint": hint,
        },
    )
