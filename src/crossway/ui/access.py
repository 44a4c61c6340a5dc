"""Who may use the console, and the CSRF rule for everything that changes state.

    admin.token set            a signed-in session cookie (the login form exchanges the token
                               for one) or the token as a Bearer header; anything else is sent
                               to the login page (GET) or refused (401)
    no token, admin on loopback  open, as the admin API is: the pages say so; a request for
                               another host name is refused (DNS rebinding)
    no token, beyond loopback  refused (403): set admin.token

Every POST, PUT, PATCH and DELETE of a cookie session must carry the session's CSRF token (the
`csrf` form field or the `X-CSRF-Token` header), and must not come from another site (`Origin`,
`Sec-Fetch-Site`). A Bearer-token request carries no ambient credential, so it needs no CSRF
token.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections import deque
from typing import Any, Final, Literal

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crossway.config import Config
from crossway.errors import GatewayError
from crossway.server.admin_auth import _hostname, _is_loopback
from crossway.server.admin_jwt import AdminAuth
from crossway.ui.session import COOKIE, Session, SessionCodec, csrf_matches

Mode = Literal["token", "open", "closed"]

STATE_CHANGING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_FORM_BYTES: Final = 1024 * 1024
"""Largest form body the console reads (an edited config is the biggest)."""
PUBLIC_PATHS: Final = ("/ui/static/", "/ui/login")
"""Paths served before signing in (the login form and its assets)."""
LOGIN_FAILURES: Final = 10
LOGIN_WINDOW_SECONDS: Final = 300.0
"""At most `LOGIN_FAILURES` wrong tokens per client address in `LOGIN_WINDOW_SECONDS`."""


def mode_of(cfg: Config) -> Mode:
    """How the console is protected under `cfg`."""
    if cfg.admin.protected:
        return "token"
    return "open" if _is_loopback(cfg.admin.host) else "closed"


class ConsoleAccess:
    """The session codec for the current admin token, and the failed-login counter."""

    def __init__(self, auth: AdminAuth | None = None) -> None:
        self.auth = auth if auth is not None else AdminAuth()
        self._codecs: dict[str | None, SessionCodec] = {}
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def codec(self, cfg: Config) -> SessionCodec:
        """The session codec of the current admin token (with JWT admins only, or none, a key
        of this process: a restart or another replica then asks to sign in again)."""
        token = cfg.admin.token.get_secret_value() if cfg.admin.token is not None else None
        with self._lock:
            codec = self._codecs.get(token)
            if codec is None:
                # A reload with another token ends the old token's sessions.
                self._codecs = {token: (codec := SessionCodec(token))}
            return codec

    async def token_ok(self, cfg: Config, presented: str) -> bool:
        """Whether `presented` is the admin token or an admin JWT (a JWT that fails its
        checks is simply not accepted here: the login form says so)."""
        try:
            return await self.auth.check_token(cfg.admin, presented)
        except GatewayError:
            return False

    def throttled(self, client: str) -> bool:
        """Whether `client` has used up its failed logins for now."""
        window = self._failures.get(client)
        now = time.monotonic()
        while window and window[0] <= now - LOGIN_WINDOW_SECONDS:
            window.popleft()
        return window is not None and len(window) >= LOGIN_FAILURES

    def failed(self, client: str) -> None:
        if len(self._failures) > 10_000:  # many addresses: forget the idle ones
            self._failures = {k: v for k, v in self._failures.items() if v}
        self._failures.setdefault(client, deque()).append(time.monotonic())


def cookie_header(codec: SessionCodec, session: Session | None) -> str:
    """A `Set-Cookie` value holding `session` (None: clears the cookie)."""
    if session is None:
        return f"{COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict"
    max_age = max(0, int(session.expires - time.time()))
    value = codec.encode(session)
    return f"{COOKIE}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict"


def _cookie(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == COOKIE:
                    return str(val)
    return None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def same_site(scope: Scope) -> bool:
    """Whether a request comes from the console's own pages (or from no page at all)."""
    if _header(scope, b"sec-fetch-site") in ("cross-site", "same-site"):
        return False
    # Behind a proxy that rewrites Host, the name the browser used is in X-Forwarded-Host: a
    # page of another site cannot set that header (not without a CORS preflight, never
    # answered here), and the session's CSRF token is required besides.
    hosts = {_header(scope, b"host") or ""}
    forwarded = _header(scope, b"x-forwarded-host")
    if forwarded:
        hosts.add(forwarded.split(",")[0].strip())
    for name in (b"origin", b"referer"):
        value = _header(scope, name)
        if value is None:
            continue
        if value == "null":
            return False
        return urllib.parse.urlsplit(value).netloc in hosts
    return True


class ConsoleGate:
    """ASGI middleware in front of every console route: access, sessions and CSRF."""

    def __init__(self, app: ASGIApp, *, view: Any, access: ConsoleAccess) -> None:
        self.app = app
        self.view = view
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        import asyncio

        cfg: Config = await asyncio.to_thread(self.view.current)
        path: str = scope["path"]
        mode = mode_of(cfg)
        state = scope.setdefault("state", {})
        state["ui_mode"] = mode
        state["ui_config"] = cfg
        if path.startswith("/ui/static/"):
            await self.app(scope, receive, send)
            return
        if mode == "closed":
            await _refuse(
                403,
                "The console is closed",
                f"The admin plane listens on {cfg.admin.host}, beyond loopback, and no admin "
                "token is set. Set admin.token (for example token: ${CROSSWAY_ADMIN_TOKEN}) to "
                "use the console there.",
            )(scope, receive, send)
            return
        if mode == "open":
            host = _header(scope, b"host")
            if host and not _is_loopback(_hostname(host)):
                await _refuse(
                    403,
                    "Wrong host name",
                    f"The open console answers only for 127.0.0.1 or localhost, not {host!r}: "
                    "set admin.token to reach it under another name.",
                )(scope, receive, send)
                return
        codec = self.access.codec(cfg)
        session = codec.decode(_cookie(scope))
        bearer = _bearer(scope)
        by_token = bearer is not None and await self.access.token_ok(cfg, bearer)
        issue: Session | None = None
        if session is None:
            session = codec.new(signed_in=mode == "open")
            issue = session
        elif mode == "open" and not session.signed_in:
            session = codec.new(signed_in=True)
            issue = session
        state["ui_session"] = session
        state["ui_codec"] = codec
        signed_in = session.signed_in or by_token
        state["ui_signed_in"] = signed_in
        method = scope["method"]
        if not signed_in and not path.startswith(PUBLIC_PATHS):
            if method in ("GET", "HEAD") and _header(scope, b"hx-request") is None:
                target = "/ui/login?" + urllib.parse.urlencode({"next": _next(scope)})
                response: Response = RedirectResponse(target, status_code=303)
            else:
                response = _page(
                    401, "Sign in first", "Your session has ended: sign in again at /ui/login."
                )
            await _with_cookie(response, codec, issue)(scope, receive, send)
            return
        # A Bearer credential is no ambient authority unless a browser sent it (a proxy in
        # front may add it to every request): then the CSRF rule applies as for a cookie.
        from_browser = any(
            _header(scope, name) is not None for name in (b"cookie", b"origin", b"sec-fetch-site")
        )
        if method in STATE_CHANGING and (not by_token or from_browser):
            receive, presented = await _csrf_field(scope, receive)
            if presented is None:
                presented = _header(scope, b"x-csrf-token")
            if not same_site(scope) or not csrf_matches(session, presented):
                await _with_cookie(
                    _page(
                        403,
                        "Request refused",
                        "This change did not come from a console page of this session (CSRF "
                        "check). Reload the page and try again.",
                    ),
                    codec,
                    issue,
                )(scope, receive, send)
                return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and issue is not None:
                headers = MutableHeaders(scope=message)
                if COOKIE not in headers.get("set-cookie", ""):
                    headers.append("set-cookie", cookie_header(codec, issue))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _bearer(scope: Scope) -> str | None:
    scheme, _, value = (_header(scope, b"authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _next(scope: Scope) -> str:
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    path = str(scope["path"])
    return path + (f"?{query}" if query else "")


async def _csrf_field(scope: Scope, receive: Receive) -> tuple[Receive, str | None]:
    """The `csrf` field of a form body, and a `receive` that replays the body it read."""
    kind = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return receive, None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            break
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    if size > MAX_FORM_BYTES:
        return replay, None
    if kind == "multipart/form-data":
        request = Request(scope, replay)
        form = await request.form()
        value = form.get("csrf")
        replayed = False  # the handler reads the body again
        return replay, value if isinstance(value, str) else None
    fields = urllib.parse.parse_qs(body.decode("latin-1"), keep_blank_values=True)
    values = fields.get("csrf")
    return replay, values[0] if values else None


def _with_cookie(response: Response, codec: SessionCodec, issue: Session | None) -> Response:
    if issue is not None:
        response.headers.append("set-cookie", cookie_header(codec, issue))
    return response


def _page(status: int, title: str, message: str) -> Response:
    from crossway.ui.render import bare_page

    return HTMLResponse(bare_page(title, message), status_code=status)


def _refuse(status: int, title: str, message: str) -> Response:
    return _page(status, title, message)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


__all__ = ["ConsoleAccess", "ConsoleGate", "Mode", "cookie_header", "mode_of", "same_site"]
