"""Who may use the admin API's sensitive routes (tool pins, virtual keys, budgets, spend, logs).

With admin credentials configured (`admin.token`, `admin.jwt`), a route needs them (the admin
plane's front door checked them: `crossway.server.admin_plane`). Without any, it is served only
while the admin plane listens on loopback, and never to a browser (a request with an `Origin`
header): a web page the operator visits cannot reach it through their browser (the console
reaches it in process, behind its own login-free loopback rules and CSRF checks).
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import Request

from crossway.config.models import AdminConfig
from crossway.errors import Forbidden
from crossway.server.admin_jwt import AUTHENTICATED, unauthenticated

AUTH_ERROR = "admin_auth_error"
"""Scope state key: why the credentials a request carried were refused (a bad admin JWT)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host: str) -> str:
    """The name of a `Host` header (`[::1]:15000` -> `::1`, `127.0.0.1:80` -> `127.0.0.1`)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _check_token(request: Request, admin: AdminConfig) -> None:
    """Refuse `request` unless it carries admin credentials: the admin plane checked them
    (token, admin JWT or the console's own call) and recorded the answer in the scope; an app
    built without that front door compares the token itself."""
    state = request.scope.get("state") or {}
    if AUTH_ERROR in state:
        raise state[AUTH_ERROR]
    if AUTHENTICATED in state:
        if state[AUTHENTICATED]:
            return
        raise unauthenticated(admin)
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    expected = admin.token.get_secret_value().encode() if admin.token is not None else None
    if (
        expected is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(value.strip().encode(), expected)
    ):
        raise unauthenticated(admin)


def _check_change_allowed(
    request: Request, admin: AdminConfig, action: str = "change tool pins"
) -> None:
    """Refuse a request unless it carries the admin token, or (no token configured) the admin
    plane is on loopback and the request does not come from a browser. `action` completes the
    error messages ("set admin.token to <action>")."""
    if admin.protected:
        _check_token(request, admin)
        return
    if not _is_loopback(admin.host):
        raise Forbidden(
            f"the admin plane listens on {admin.host}, not loopback: set admin.token to {action}"
        )
    if "origin" in request.headers:
        raise Forbidden(f"browser requests cannot {action} unless admin.token is set")
    # DNS rebinding: a page whose name now resolves to 127.0.0.1 reaches this listener with its
    # own name in Host (and a same-origin GET carries no Origin).
    host = request.headers.get("host", "")  # absent: not a browser (they always send one)
    if host and not _is_loopback(_hostname(host)):
        raise Forbidden(
            f"requests for host {host!r} cannot {action} unless admin.token is set "
            "(use http://127.0.0.1 or http://localhost)"
        )


__all__ = ["AUTH_ERROR", "_check_change_allowed", "_check_token", "_is_loopback"]
