"""Upstream OAuth credentials for MCP servers.

(Downstream OAuth — RFC 9728 protected-resource behaviour — is a mode of the `jwt` route
policy: `crossway.policy.jwt_policy` and `crossway.policy.protected_resource`.)

`UpstreamCredentials` gives each upstream its own credentials: static headers, a token
from the OAuth client-credentials grant (cached until shortly before it expires), or an RFC 8693
token exchange of the caller's token for one scoped to the upstream. The caller's token itself
is never sent upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

import aiohttp
import orjson
from pydantic import SecretStr

from crossway.config.mcp_security import (
    ClientCredentialsConfig,
    TokenExchangeConfig,
    UpstreamCredentialsConfig,
)
from crossway.errors import Unauthenticated, UpstreamError
from crossway.policy.jwt_policy import BEARER_ATTR, CALLER_TOKEN
from crossway.proxy.outbound import OutboundClient

log = logging.getLogger("crossway.mcp.auth")

DEFAULT_TOKEN_LIFETIME: Final = 300.0
EXCHANGE_CACHE_SIZE: Final = 1024
TOKEN_EXCHANGE_GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"


# -- upstream credentials -------------------------------------------------------------------------


class UpstreamCredentials:
    """The headers Crossway sends to one upstream: static ones plus an OAuth token if configured.

    `await headers(caller_token)` before each upstream request (or session); tokens are cached
    and renewed `refresh_margin` seconds before they expire, one renewal at a time.
    """

    def __init__(
        self,
        config: UpstreamCredentialsConfig | None = None,
        static_headers: Mapping[str, str | SecretStr] | None = None,
    ) -> None:
        self.config = config or UpstreamCredentialsConfig()
        self._static = {
            k: v.get_secret_value() if isinstance(v, SecretStr) else v
            for k, v in (static_headers or {}).items()
        }
        self._http: OutboundClient | None = None
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()
        self._exchanged: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._exchange_locks: dict[str, asyncio.Lock] = {}

    @property
    def needs_caller_token(self) -> bool:
        """Whether `headers()` must be given the caller's token (token exchange)."""
        return self.config.token_exchange is not None

    @property
    def dynamic(self) -> bool:
        """Whether the headers can change over time (a token grant is configured)."""
        return self.config.client_credentials is not None or self.needs_caller_token

    async def close(self) -> None:
        """Close the token endpoint client."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def headers(self, caller_token: str | None = None) -> dict[str, str]:
        """Headers for the next upstream request: the static ones plus `token_headers`."""
        return {**self._static, **await self.token_headers(caller_token)}

    async def token_headers(self, caller_token: str | None = None) -> dict[str, str]:
        """`Authorization` with the token for the next request (`{}` without a grant).

        For token exchange, `caller_token` defaults to the token of the request being served
        (`CALLER_TOKEN`).
        """
        if self.config.client_credentials is not None:
            return {"Authorization": "Bearer " + await self._client_credentials_token()}
        if self.config.token_exchange is not None:
            token = caller_token if caller_token is not None else CALLER_TOKEN.get()
            return {"Authorization": "Bearer " + await self._exchanged_token(token)}
        return {}

    def _fresh(self, entry: tuple[str, float] | None) -> str | None:
        if entry is not None and entry[1] - self.config.refresh_margin > time.monotonic():
            return entry[0]
        return None

    async def _client_credentials_token(self) -> str:
        token = self._fresh(self._token)
        if token is not None:
            return token
        async with self._lock:
            token = self._fresh(self._token)
            if token is not None:
                return token
            config = self.config.client_credentials
            assert config is not None
            self._token = await self._request_token(config, _client_credentials_form(config))
            return self._token[0]

    async def _exchanged_token(self, caller_token: str | None) -> str:
        if not caller_token:
            raise Unauthenticated(
                "this upstream exchanges the caller's token, but the request carried none "
                "(put a `jwt` policy on the route)",
                code="token_exchange_without_caller",
            )
        key = hashlib.sha256(caller_token.encode()).hexdigest()
        token = self._fresh(self._exchanged.get(key))
        if token is not None:
            self._exchanged.move_to_end(key)
            return token
        lock = self._exchange_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                token = self._fresh(self._exchanged.get(key))
                if token is not None:
                    return token
                config = self.config.token_exchange
                assert config is not None
                entry = await self._request_token(
                    config, _token_exchange_form(config, caller_token)
                )
                self._exchanged[key] = entry
                if len(self._exchanged) > EXCHANGE_CACHE_SIZE:
                    self._exchanged.popitem(last=False)
                return entry[0]
        finally:
            if not lock.locked():
                self._exchange_locks.pop(key, None)

    async def _request_token(
        self, config: ClientCredentialsConfig | TokenExchangeConfig, form: dict[str, str]
    ) -> tuple[str, float]:
        if self._http is None:
            self._http = OutboundClient()  # no redirects: a 3xx must not take the secret along
        auth = None
        secret = config.client_secret.get_secret_value() if config.client_secret else None
        if (
            isinstance(config, ClientCredentialsConfig)
            and config.auth_method == "client_secret_post"
        ):
            form["client_id"] = config.client_id
            form["client_secret"] = secret or ""
        elif secret is not None:
            auth = aiohttp.BasicAuth(config.client_id, secret)
        else:
            form["client_id"] = config.client_id
        try:
            async with self._http.post(
                config.token_url,
                data=form,
                auth=auth,
                headers={"accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=config.timeout),
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(
                f"token endpoint unreachable: {exc}", code="upstream_credentials"
            ) from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = {}
        if status != 200 or not isinstance(document, dict) or "access_token" not in document:
            detail = document.get("error") if isinstance(document, dict) else None
            log.warning("token endpoint %s answered %s (%s)", config.token_url, status, detail)
            raise UpstreamError(
                f"could not obtain a token for the upstream (token endpoint answered {status}"
                + (f": {detail})" if detail else ")"),
                code="upstream_credentials",
            )
        lifetime = document.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) else DEFAULT_TOKEN_LIFETIME
        return str(document["access_token"]), time.monotonic() + seconds


def _client_credentials_form(config: ClientCredentialsConfig) -> dict[str, str]:
    form = {"grant_type": "client_credentials"}
    if config.scopes:
        form["scope"] = " ".join(config.scopes)
    if config.audience:
        form["audience"] = config.audience
    if config.resource:
        form["resource"] = config.resource
    return form


def _token_exchange_form(config: TokenExchangeConfig, subject_token: str) -> dict[str, str]:
    form = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": config.requested_token_type,
    }
    if config.scopes:
        form["scope"] = " ".join(config.scopes)
    if config.audience:
        form["audience"] = config.audience
    if config.resource:
        form["resource"] = config.resource
    return form


__all__ = ["BEARER_ATTR", "CALLER_TOKEN", "UpstreamCredentials"]
