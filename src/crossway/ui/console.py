"""The console app: login, static assets and every page, behind `ConsoleGate`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from crossway.config import Config
from crossway.ui.access import ConsoleAccess, ConsoleGate, client_address, cookie_header
from crossway.ui.api import AdminApi
from crossway.ui.headers import SecurityHeaders
from crossway.ui.render import ENV, bare_page

log = logging.getLogger("crossway.ui")

STATIC: Final = Path(__file__).parent / "static"


@dataclass
class Console:
    """What the pages share: the config source, the in-process admin API and admin-plane
    state (the upstream probe, the metrics registry)."""

    view: Any
    """The admin plane's `ConfigView` (`current() -> Config`)."""
    api: AdminApi = field(default_factory=AdminApi)
    access: ConsoleAccess = field(default_factory=ConsoleAccess)
    probe: Any = None
    """The admin plane's `UpstreamProbe` (reachability of every upstream, cached)."""
    registry: Callable[[], Any] | None = None
    """The metrics registry (every worker's samples)."""
    started: float = 0.0
    workers_mode: str = "single"


def config_of(request: Request) -> Config:
    """The config `ConsoleGate` read for this request."""
    cfg: Config = request.scope["state"]["ui_config"]
    return cfg


def _login_routes(console: Console) -> list[BaseRoute]:
    async def login_form(request: Request) -> Response:
        state = request.scope["state"]
        if state.get("ui_signed_in"):
            return RedirectResponse(_safe_next(request.query_params.get("next")), 303)
        return _login_page(request, None, request.query_params.get("next"))

    async def login(request: Request) -> Response:
        cfg = config_of(request)
        form = await request.form()
        next_url = _safe_next(str(form.get("next") or ""))
        if not cfg.admin.protected:
            return RedirectResponse(next_url, 303)
        client = client_address(request)
        if console.access.throttled(client):
            return _login_page(
                request, "Too many wrong tokens: wait a few minutes and try again.", next_url, 429
            )
        if not _secure_context(request):
            return _login_page(
                request,
                "The console's session cookie is Secure, and browsers keep Secure cookies only "
                "over HTTPS (or on loopback): serve the admin plane over HTTPS — admin.tls, or a "
                "TLS proxy in front that sets X-Forwarded-Proto: https — or reach it through a "
                "loopback tunnel (kubectl port-forward, ssh -L).",
                next_url,
                400,
            )
        token = str(form.get("token") or "")
        if not await console.access.token_ok(cfg, token):
            console.access.failed(client)
            return _login_page(request, "That is not the admin token.", next_url, 401)
        codec = request.scope["state"]["ui_codec"]
        session = codec.new(signed_in=True)  # a new id: never keep a pre-login session
        response = RedirectResponse(next_url, 303)
        response.headers.append("set-cookie", cookie_header(codec, session))
        return response

    async def logout(request: Request) -> Response:
        state = request.scope["state"]
        codec = state["ui_codec"]
        codec.end(state["ui_session"])
        response = RedirectResponse("/ui/login", 303)
        response.headers.append("set-cookie", cookie_header(codec, None))
        return response

    return [
        Route("/ui/login", login_form, methods=["GET"]),
        Route("/ui/login", login, methods=["POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
    ]


def _login_page(
    request: Request, error: str | None, next_url: str | None, status: int = 200
) -> Response:
    from starlette.responses import HTMLResponse

    state = request.scope["state"]
    session = state.get("ui_session")
    body = ENV.get_template("login.html").render(
        mode=state.get("ui_mode"),
        csrf=session.csrf if session else "",
        next=_safe_next(next_url),
        error=error,
    )
    return HTMLResponse(body, status_code=status, headers={"cache-control": "no-store"})


def _secure_context(request: Request) -> bool:
    """Whether the browser will keep a Secure cookie from this request: HTTPS (here or at a
    proxy in front) or a loopback host name."""
    from crossway.server.admin_auth import _hostname, _is_loopback

    if request.url.scheme == "https":
        return True
    if request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https":
        return True
    return _is_loopback(_hostname(request.headers.get("host", "")))


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if not value or not value.startswith("/ui") or value.startswith("//") or "\\" in value:
        return "/ui/"
    return value


def create_console(console: Console) -> ASGIApp:
    """The console's ASGI app, for every path under `/ui`."""
    from crossway.ui.pages import page_routes

    async def root(request: Request) -> Response:
        return RedirectResponse("/ui/", 307)

    async def startup() -> None:
        return None

    routes: list[BaseRoute] = [
        Route("/ui", root),
        *_login_routes(console),
        *page_routes(console),
    ]

    async def failed(request: Request, exc: Exception) -> Response:
        log.error("console %s %s failed", request.method, request.url.path, exc_info=exc)
        return HTMLResponse(
            bare_page("Something went wrong", "This page failed: the gateway's log says why."),
            status_code=500,
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        detail = "There is no such console page." if status == 404 else str(exc)
        return HTMLResponse(bare_page("Not found" if status == 404 else "Error", detail), status)

    app = Starlette(routes=routes, exception_handlers={Exception: failed, HTTPException: not_found})
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="static")
    return SecurityHeaders(ConsoleGate(app, view=console.view, access=console.access))
