"""The dashboard: sign-in and sign-out, the page itself, and its static files.

Templates (``web/templates``) are rendered with aiohttp-jinja2; the page's
JavaScript talks to the gateway over one hydrogen-protocol WebSocket,
authenticated by the session cookie of :mod:`hydrogen.server.session`.

Where ``web/`` is found, first match wins (each must hold
``templates/dashboard.html``):

1. ``$HYDROGEN_WEB_DIR``, for packagers and for working on the page;
2. ``web/`` next to the ``hydrogen`` package: a checkout or an editable install;
3. ``<prefix>/share/hydrogen/web``, where ``pip install .`` puts it
   (``[options.data_files]`` in ``setup.cfg``), for the running interpreter's
   prefixes and the user base.

Caching: HTML is ``no-store``; a static file requested with ``?v=<hash of its
content>`` (the only way pages refer to them) is cached for a year as immutable,
and without (or with a stale) ``v`` it must be revalidated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import site
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from hydrogen import __version__
from hydrogen.identity import Identity
from hydrogen.server import audit_edge, auth, session
from hydrogen.server.keys import CREDENTIALS
from hydrogen.tokens import looks_like_jwt

log = logging.getLogger(__name__)

WEB_DIR_ENV = "HYDROGEN_WEB_DIR"
_SENTINEL = Path("templates") / "dashboard.html"
STATIC_PREFIX = "/static/"
IMMUTABLE = "public, max-age=31536000, immutable"

#: Security headers on every HTML page: no inline script, no framing (a framed
#: E-stop or "start print" button could be clickjacked), nothing leaves the origin.
HTML_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

#: Failed sign-ins allowed per client address per window before 429.
SIGNIN_FAILURES = 10
SIGNIN_WINDOW = 60.0


def candidate_web_dirs() -> list[Path]:
    """Where ``web/`` may be, in lookup order (see the module docstring)."""
    candidates: list[Path] = []
    if os.environ.get(WEB_DIR_ENV):
        candidates.append(Path(os.environ[WEB_DIR_ENV]))
    candidates.append(Path(__file__).resolve().parents[2] / "web")
    prefixes = [sysconfig.get_path("data"), sys.prefix, sys.exec_prefix]
    prefixes += [getattr(site, "USER_BASE", None) or "", "/usr/local", "/usr"]
    for prefix in prefixes:
        if prefix:
            path = Path(prefix) / "share" / "hydrogen" / "web"
            if path not in candidates:
                candidates.append(path)
    return candidates


def find_web_dir() -> Path | None:
    for candidate in candidate_web_dirs():
        if (candidate / _SENTINEL).is_file():
            return candidate.resolve()
    return None


class StaticFiles:
    """Content hashes for cache-busting URLs, recomputed when a file changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._hashes: dict[str, tuple[tuple[int, int], str]] = {}

    def version(self, name: str) -> str | None:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._hashes.get(name)
        if cached is None or cached[0] != stamp:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            cached = self._hashes[name] = (stamp, digest)
        return cached[1]

    def url(self, name: str) -> str:
        version = self.version(name)
        if version is None:
            raise FileNotFoundError(f"no static file {name!r} in {self.root}")
        return f"{STATIC_PREFIX}{name}?v={version}"


STATIC = web.AppKey("dashboard_static", StaticFiles)
SIGNIN_FAILURES_BY_IP = web.AppKey("dashboard_signin_failures", dict)


def setup(app: web.Application, web_dir: Path | None = None) -> None:
    """Sessions, sign-in/out routes, templates and ``/static/``."""
    session.setup(app)
    app[SIGNIN_FAILURES_BY_IP] = {}
    web_dir = web_dir or find_web_dir()
    if web_dir is None:
        log.warning(
            "dashboard files not found (looked in %s); set %s to the web/ directory",
            ", ".join(str(p) for p in candidate_web_dirs()),
            WEB_DIR_ENV,
        )
    else:
        static = StaticFiles((web_dir / "static").resolve())
        app[STATIC] = static
        env = aiohttp_jinja2.setup(
            app,
            loader=jinja2.FileSystemLoader(str(web_dir / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            default_helpers=False,
        )
        env.globals["static_url"] = static.url
        env.globals["version"] = __version__
        app.router.add_static(STATIC_PREFIX, static.root, name="static", follow_symlinks=False)
        app.on_response_prepare.append(_cache_headers)
    app.router.add_get("/login", login_page)
    app.router.add_get("/admin", admin_page)
    app.router.add_post("/login", sign_in)
    app.router.add_post("/logout", sign_out)


async def _cache_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not request.path.startswith(STATIC_PREFIX) or response.status >= 400:
        return
    static = request.app.get(STATIC)
    name = request.path[len(STATIC_PREFIX) :]
    wanted = request.query.get("v")
    if static is not None and wanted and wanted == static.version(name):
        response.headers["Cache-Control"] = IMMUTABLE
    else:
        response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"


def _render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    if aiohttp_jinja2.APP_KEY not in request.app:
        return _no_web_dir(status)
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers.update(HTML_HEADERS)
    return response


def _no_web_dir(status: int = 200) -> web.Response:
    text = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Hydrogen</title>"
        "<h1>Hydrogen gateway</h1><p>The dashboard files were not found. "
        f"Set <code>{WEB_DIR_ENV}</code> to the <code>web/</code> directory of the source. "
        'The API works: <a href="/api/system/health">health</a>.</p>'
    )
    return web.Response(text=text, content_type="text/html", status=status, headers=HTML_HEADERS)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


async def index(request: web.Request) -> web.StreamResponse:
    """``GET /`` from a browser: the dashboard when signed in, else the sign-in page."""
    role = session.cookie_role(request)
    if role is None:
        return _redirect("/login")
    # The role only hides controls before the WebSocket's welcome frame confirms it.
    return _render(request, "dashboard.html", {"role": role.label})


async def admin_page(request: web.Request) -> web.StreamResponse:
    """``GET /admin``: keys and the audit log. The page is the same for every role; what
    it may read and change is decided by each request (admin only), as everywhere."""
    role = session.cookie_role(request)
    if role is None:
        return _redirect("/login")
    return _render(request, "admin.html", {"role": role.label})


async def login_page(request: web.Request) -> web.StreamResponse:
    if session.cookie_role(request) is not None:
        return _redirect("/")
    expired = session.has_cookie(request)
    return _render(
        request,
        "login.html",
        {"error": "Your session has ended. Sign in again." if expired else None},
    )


def _login_error(request: web.Request, status: int, message: str) -> web.Response:
    response = _render(request, "login.html", {"error": message}, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Key realm="hydrogen"'
    return response


def _signin_blocked(request: web.Request) -> bool:
    """Has this address used up its failed sign-ins for the current window?"""
    start, count = request.app[SIGNIN_FAILURES_BY_IP].get(request.remote or "", (0.0, 0))
    return time.monotonic() - start <= SIGNIN_WINDOW and count >= SIGNIN_FAILURES


def _record_failure(request: web.Request) -> None:
    failures: dict[str, tuple[float, int]] = request.app[SIGNIN_FAILURES_BY_IP]
    ip = request.remote or ""
    now = time.monotonic()
    start, count = failures.get(ip, (now, 0))
    if now - start > SIGNIN_WINDOW:
        start, count = now, 0
    if len(failures) > 10_000:  # bounded memory, whatever the traffic
        failures.clear()
    failures[ip] = (start, count + 1)


#: Why a sign-in or sign-out needs the gateway's own Origin (or Referer). Browsers send
#: Origin with every POST, so a real browser only meets this from a foreign page (a
#: cross-site request forgery, which cannot read the answer) or through a proxy that
#: changes Host: the JSON error's ``expected`` and ``hint`` are for its administrator.
_ORIGIN_HINT = (
    "sign in from this gateway's own page; behind a proxy, add the origin the browser"
    " uses to server.allowed_origins"
)


def _foreign_form(request: web.Request, action: str) -> web.Response:
    return session.origin_refused(
        request,
        f"this {action} did not come from the gateway's own page (Origin or Referer);"
        " refused to protect against cross-site request forgery",
        _ORIGIN_HINT,
    )


async def sign_in(request: web.Request) -> web.StreamResponse:
    if not session.origin_allowed(request, allow_referer=True):
        return _foreign_form(request, "sign-in")
    if _signin_blocked(request):
        response = _login_error(request, 429, "Too many failed attempts. Wait a minute.")
        response.headers["Retry-After"] = str(int(SIGNIN_WINDOW))
        return response
    form = await request.post()
    key = form.get("key")
    key = key.strip() if isinstance(key, str) else ""
    identity = await _key_identity(request, key)
    role = identity.role if identity is not None else None
    if role is None:
        _record_failure(request)
        log.info("dashboard sign-in refused for %s: wrong key", request.remote)
        # (what was typed is never recorded: it may be a near miss of a real key)
        audit_edge.record(request, None, "sign_in", outcome="auth_failed", via="dashboard")
        return _login_error(request, 401, "That key is not valid for this gateway.")
    manager = request.app[session.SESSIONS]
    token = manager.issue(key, role)
    response = _redirect("/")
    response.set_cookie(
        session.COOKIE_NAME,
        token,
        max_age=manager.max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=session.request_scheme(request) == "https",
    )
    log.info("dashboard sign-in from %s (role %s)", request.remote, role.label)
    audit_edge.record(request, identity, "sign_in", via="dashboard")
    return response


async def _key_identity(request: web.Request, key: str) -> Identity | None:
    """Who a typed key is, from the config or the key store (a key made at run time
    signs in too); a token is not a key to sign in with."""
    if not key or looks_like_jwt(key):
        return None
    credentials = request.app.get(CREDENTIALS)
    if credentials is not None:
        await credentials.keyring.warm(key)  # a stored key's slow hash, off the loop
    identity = auth.identify_credential(request.app, key, via="cookie")
    return dataclasses.replace(identity, via="cookie") if identity is not None else None


async def sign_out(request: web.Request) -> web.StreamResponse:
    if not session.origin_allowed(request, allow_referer=True):
        return _foreign_form(request, "sign-out")
    response = _redirect("/login")
    response.del_cookie(
        session.COOKIE_NAME,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=session.request_scheme(request) == "https",
    )
    return response
