"""Google service-account credentials -> OAuth access tokens (the JWT bearer grant, RFC 7523).

A signed JWT assertion (RS256, `iss` = the account's email, `aud` = its `token_uri`, scope
cloud-platform) is posted to the account's `token_uri`; the access token it returns is cached
until shortly before it expires, and one refresh serves every request waiting on it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from crossway.errors import UpstreamError, UpstreamUnreachable
from crossway.proxy.outbound import OutboundClient

CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"
ASSERTION_LIFETIME: Final = 3600
REFRESH_MARGIN: Final = 300.0
"""Refresh a token this many seconds before it expires."""
TOKEN_TIMEOUT: Final = 10.0
GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class ServiceAccount:
    """A service-account key and the access token currently issued for it."""

    def __init__(self, info: dict[str, Any], scope: str = CLOUD_PLATFORM_SCOPE) -> None:
        try:
            self.email = str(info["client_email"])
            key_pem = str(info["private_key"])
        except KeyError as exc:
            raise ValueError(f"service account JSON lacks {exc.args[0]}") from None
        if info.get("type", "service_account") != "service_account":
            raise ValueError(
                f"credentials of type {info.get('type')!r} are not a service account key"
            )
        self.project_id: str | None = info.get("project_id")
        self.key_id: str | None = info.get("private_key_id")
        self.token_uri = str(info.get("token_uri") or DEFAULT_TOKEN_URI)
        self.scope = scope
        self._key = load_pem_private_key(key_pem.encode(), password=None)
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_json(cls, text: str | bytes) -> ServiceAccount:
        data = orjson.loads(text)
        if not isinstance(data, dict):
            raise ValueError("service account JSON must be an object")
        return cls(data)

    def assertion(self, now: float | None = None) -> str:
        """The signed JWT exchanged for an access token."""
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": self.email,
            "scope": self.scope,
            "aud": self.token_uri,
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME,
        }
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)  # type: ignore[arg-type]

    async def token(self, session: OutboundClient) -> str:
        """A valid access token, fetched only when the cached one is (nearly) expired."""
        if self._token is not None and time.monotonic() < self._expires_at:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at:
                return self._token
            self._token, lifetime = await self._fetch(session)
            self._expires_at = time.monotonic() + max(0.0, lifetime - REFRESH_MARGIN)
            return self._token

    async def _fetch(self, session: OutboundClient) -> tuple[str, float]:
        form = {"grant_type": GRANT_TYPE, "assertion": self.assertion()}
        try:
            async with session.post(
                self.token_uri, data=form, timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT)
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnreachable(f"cannot reach the Google token endpoint: {exc}") from None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = {}
        if status != 200 or not isinstance(data, dict) or not data.get("access_token"):
            detail = (
                data.get("error_description") or data.get("error")
                if isinstance(data, dict)
                else None
            )
            # The gateway's credentials are at fault, not the caller's: a 502, and failover.
            raise UpstreamError(
                f"the Google token endpoint refused the service account {self.email}: "
                f"{detail or f'HTTP {status}'}"
            )
        return str(data["access_token"]), float(data.get("expires_in") or ASSERTION_LIFETIME)
