"""Admin authentication: the admin token, an admin JWT (`admin.jwt`), or the console's own
in-process calls.

`AdminAuth.check(cfg, headers)` decides once per request; the admin plane records the answer
in the request's scope state (`AUTHENTICATED`), where every route's own check reads it.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final

from crossway.config.models import AdminConfig, AdminJwtConfig
from crossway.errors import Forbidden, Unauthenticated
from crossway.policy.api_key import looks_like_jwt
from crossway.policy.jwt import JwtValidator

AUTHENTICATED: Final = "admin_authenticated"
"""Scope state key: True when the request carries valid admin credentials."""
CONSOLE_HEADER: Final = "x-crossway-console"
"""Header of the console's in-process API calls (its value never leaves the process)."""


def role_of(claims: Mapping[str, Any], path: str) -> list[str]:
    """The roles at dotted `path` in `claims` (a string or a list there)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return []
        value = value.get(part)
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


class AdminAuth:
    """Checks admin credentials; holds the JWT validator of the current `admin.jwt`."""

    def __init__(self) -> None:
        self.console_secret = secrets.token_urlsafe(32)
        self._config: AdminJwtConfig | None = None
        self._validator: JwtValidator | None = None
        self._lock: asyncio.Lock | None = None

    def console_headers(self) -> dict[str, str]:
        """Headers that authenticate the console's own in-process API calls."""
        return {CONSOLE_HEADER: self.console_secret}

    async def check(self, admin: AdminConfig, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether `headers` carry admin credentials. A JWT that fails validation or lacks the
        admin role raises (401 / 403), naming why; no credentials at all is just False."""
        bearer: str | None = None
        for name, value in headers:
            if name == CONSOLE_HEADER.encode():
                if hmac.compare_digest(value, self.console_secret.encode()):
                    return True
            elif name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    bearer = rest.strip()
        if bearer is None:
            return False
        return await self.check_token(admin, bearer)

    async def check_token(self, admin: AdminConfig, presented: str) -> bool:
        """Whether `presented` is the admin token or an admin JWT (see `check`)."""
        if admin.token is not None and hmac.compare_digest(
            presented.encode(), admin.token.get_secret_value().encode()
        ):
            return True
        if admin.jwt is None or not looks_like_jwt(presented.encode("latin-1")):
            return False
        validator = await self._validator_for(admin.jwt)
        claims = await validator.validate(presented)
        if admin.jwt.role not in role_of(claims, admin.jwt.role_claim):
            raise Forbidden(
                f"the token is valid but its {admin.jwt.role_claim!r} claim lacks the "
                f"{admin.jwt.role!r} role"
            )
        return True

    async def _validator_for(self, config: AdminJwtConfig) -> JwtValidator:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._validator is None or self._config != config:
                if self._validator is not None:
                    await self._validator.close()
                self._validator = JwtValidator(config)
                self._config = config
                await self._validator.start()
            return self._validator

    async def aclose(self) -> None:
        if self._validator is not None:
            await self._validator.close()
            self._validator = None


def unauthenticated(admin: AdminConfig, what: str = "this admin route") -> Unauthenticated:
    """The 401 for a request without admin credentials."""
    needs = "admin.token as a Bearer token"
    if admin.jwt is not None:
        needs = (
            f"a Bearer JWT with the {admin.jwt.role!r} role"
            if admin.token is None
            else "admin.token or an admin JWT as a Bearer token"
        )
    return Unauthenticated(f"{what} needs {needs}", headers={"www-authenticate": "Bearer"})
