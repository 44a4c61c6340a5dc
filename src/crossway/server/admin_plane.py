"""The admin plane's front door: the console under `/ui`, the admin API everywhere else.

Whenever the admin plane listens beyond loopback, every API route but the probes (`/healthz`,
`/readyz`) needs `admin.token` as a Bearer token; without a token configured there they are
refused (403), so an admin plane exposed by mistake shows nothing. On loopback the API's own
rules apply (`crossway.server.admin_auth`), as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from crossway.errors import Forbidden, GatewayError
from crossway.server.admin_auth import AUTH_ERROR, _is_loopback
from crossway.server.admin_jwt import AUTHENTICATED, AdminAuth, unauthenticated

PROBES: Final = frozenset({"/healthz", "/readyz"})
"""Served to anyone, wherever the admin plane listens (liveness and readiness probes)."""


class AdminPlane:
    """ASGI app: `/ui...` to the console, the rest to the admin API (lifespan included)."""

    def __init__(
        self, api: Any, console: Callable[[], ASGIApp], view: Any, auth: AdminAuth
    ) -> None:
        self.api = api
        self._make_console = console
        self._console: ASGIApp | None = None
        self._console_lock = asyncio.Lock()
        self.view = view
        self.auth = auth

    async def console(self) -> ASGIApp:
        """The console's app, made (in a thread: it imports its modules) at first use."""
        if self._console is None:
            async with self._console_lock:
                if self._console is None:
                    self._console = await asyncio.to_thread(self._make_console)
        return self._console

    @property
    def routes(self) -> list[BaseRoute]:
        """The admin API's routes (the console's are not part of the API)."""
        routes: list[BaseRoute] = self.api.routes
        return routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.api(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path == "/ui" or path.startswith("/ui/"):
            console = await self.console()
            await console(scope, receive, send)
            return
        if scope["type"] == "http":
            refusal = await self._authenticate(scope, path)
            if refusal is not None:
                from crossway.server.admin_pins import _error

                await _error(refusal)(scope, receive, send)
                return
        await self.api(scope, receive, send)

    async def _authenticate(self, scope: Scope, path: str) -> GatewayError | None:
        """Check the request's admin credentials once (recorded in its scope state for the
        routes' own checks); the refusal when the admin plane is beyond loopback."""
        cfg = await asyncio.to_thread(self.view.current)
        admin = cfg.admin
        state = scope.setdefault("state", {})
        error: GatewayError | None = None
        if admin.protected:
            try:
                state[AUTHENTICATED] = await self.auth.check(admin, scope["headers"])
            except GatewayError as exc:
                state[AUTHENTICATED] = False
                state[AUTH_ERROR] = error = exc
        elif await self.auth.check(admin, scope["headers"]):
            state[AUTHENTICATED] = True  # the console's own call
        if _is_loopback(admin.host) or path in PROBES or state.get(AUTHENTICATED):
            return None
        if not admin.protected:
            return Forbidden(
                f"the admin plane listens on {admin.host}, beyond loopback, so it needs "
                "authentication: set admin.token (for example ${CROSSWAY_ADMIN_TOKEN}) or "
                "admin.jwt"
            )
        return error or unauthenticated(admin)
