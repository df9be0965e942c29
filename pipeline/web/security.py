"""What stands between the web pages and the network.

    loopback   bound to 127.0.0.1 / localhost (the default), a request must name such a host (Host
               header): a page elsewhere that rebinds its DNS name to 127.0.0.1 is refused;
    token      bound to any other address, every request carries the access token: `?token=` once
               (then an HttpOnly, SameSite=Strict cookie, and the address is cleaned of it), or an
               `Authorization: Bearer` header; compared in constant time (hmac.compare_digest);
    CSRF       every state-changing request (POST ...) must come from the page itself: its Origin (or,
               when a browser sends none, its Referer) is this server, and its form carries the
               session's token (`csrf` field or `X-CSRF-Token` header). Always on, localhost included:
               any site a reviewer visits could otherwise post to http://127.0.0.1:8000.
The session (Flask's signed cookie: the reviewer's name and the CSRF token) is HttpOnly, SameSite=Lax."""
from __future__ import annotations

import hmac
import html
import ipaddress
import secrets
from urllib.parse import urlencode, urlsplit

from flask import Flask, redirect, request, session

TOKEN_COOKIE = "whale_token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    host = (host or "").strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def read_token(path) -> str:
    from pathlib import Path

    from pipeline.errors import PipelineError

    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise PipelineError(f"cannot read the access token: {e.strerror}", path) from None
    if len(token) < 16:
        raise PipelineError("the access token must be at least 16 characters", path)
    return token


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def csrf_field() -> str:
    return f'<input type="hidden" name="csrf" value="{html.escape(csrf_token())}">'


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def _refuse(status: int, message: str):
    body = (f'<!doctype html><html><head><meta charset="utf-8"><title>Refused</title></head><body>'
            f'<p class="error" id="refused">{html.escape(message)}</p></body></html>')
    return body, status, {"Content-Type": "text/html; charset=utf-8"}


def protect(app: Flask, require_token: bool = False, token: str | None = None, loopback_hosts: bool = True) -> Flask:
    """Installs the checks above on `app`. `require_token` is what binding to a non-loopback address
    turns on; `loopback_hosts` (binding to loopback) refuses requests for any other host name."""
    if require_token and not token:
        raise ValueError("require_token needs the token")
    if not app.secret_key:
        app.secret_key = secrets.token_bytes(32)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_NAME="whale_session")
    expected = token.encode() if token else b""

    @app.before_request
    def guard():
        if loopback_hosts and not is_loopback(_host_name(request.host)):
            return _refuse(400, f"this server answers only to 127.0.0.1 or localhost, not {request.host!r}")
        if require_token:
            auth = request.headers.get("Authorization", "")
            from_query = request.args.get("token")
            supplied = (auth[7:].strip() if auth.lower().startswith("bearer ") else None) \
                or request.cookies.get(TOKEN_COOKIE) or from_query
            if not supplied or not hmac.compare_digest(supplied.encode(), expected):
                return _refuse(401, "this page needs its access token: open the address printed when the server "
                                    "started (ending ?token=...), or send 'Authorization: Bearer TOKEN'")
            if from_query is not None and request.method in SAFE_METHODS:
                rest = [(k, v) for k, values in request.args.lists() if k != "token" for v in values]
                response = redirect(request.path + (f"?{urlencode(rest)}" if rest else ""), 303)
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
                return response
        if request.method not in SAFE_METHODS:
            here = _origin(request.host_url)
            origin = request.headers.get("Origin")
            referer = request.headers.get("Referer")
            if origin is not None:
                if origin.lower() != here:
                    return _refuse(403, f"cross-site request refused (from {origin})")
            elif referer is not None and _origin(referer) != here:
                return _refuse(403, f"cross-site request refused (from {_origin(referer) or 'an unknown page'})")
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf") or ""
            mine = session.get("csrf", "")
            if not mine or not hmac.compare_digest(sent.encode(), mine.encode()):
                return _refuse(403, "this form is out of date or did not come from this page (no valid CSRF token): "
                                    "reload the page and try again")
        return None

    return app
