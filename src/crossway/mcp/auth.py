"""OAuth for the MCP gateway, on both sides.

Downstream, `ProtectedResource` makes `/mcp` an OAuth 2.1 protected resource: it publishes RFC 9728
metadata at `/.well-known/oauth-protected-resource` and at the path-suffixed form
(`/.well-known/oauth-protected-resource/mcp`), answers requests without a valid bearer token with
401 and `WWW-Authenticate: Bearer resource_metadata="..."` (plus `error="invalid_token"` when a
token was presented but is bad), and validates JWTs with `crossway.policy.jwt`. The caller's
claims become `ctx.identity`.

Upstream, `UpstreamCredentials` gives each upstream its own credentials: static headers, a token
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
from contextvars import ContextVar
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import SecretStr

from crossway.config.mcp_security import (
    ClientCredentialsConfig,
    McpAuthConfig,
    TokenExchangeConfig,
    UpstreamCredentialsConfig,
)
from crossway.errors import Forbidden, MethodNotAllowed, Unauthenticated, UpstreamError
from crossway.policy.jwt import JwtValidator, bearer_token
from crossway.server.asgi import header, send_response
from crossway.server.context import RequestContext
from crossway.types import Receive, Scope, Send

log = logging.getLogger("crossway.mcp.auth")

WELL_KNOWN: Final = "/.well-known/oauth-protected-resource"
DEFAULT_ENDPOINT_PATH: Final = "/mcp"
METADATA_MAX_AGE: Final = 3600
BEARER_ATTR: Final = "auth.bearer"
"""`ctx.attrs` key holding the caller's raw token, for token exchange only (never forwarded)."""
CALLER_TOKEN: ContextVar[str | None] = ContextVar("crossway_mcp_caller_token", default=None)
"""The validated bearer token of the request being served (set by `ProtectedResource`).

Upstream work started while serving a request runs in (a copy of) its context, so
`UpstreamCredentials` can exchange the caller's token without the federation passing it along.
"""
DEFAULT_TOKEN_LIFETIME: Final = 300.0
EXCHANGE_CACHE_SIZE: Final = 1024
TOKEN_EXCHANGE_GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ProtectedResource:
    """The `AuthGate` of an MCP backend with `auth:` configured.

    Call it with every request the backend receives (before anything else); it returns True when
    it answered the request itself (metadata), raises `Unauthenticated` / `Forbidden` carrying
    the `WWW-Authenticate` header when the caller may not in, and returns False otherwise.
    """

    def __init__(
        self, config: McpAuthConfig, *, endpoint_path: str = DEFAULT_ENDPOINT_PATH
    ) -> None:
        self.config = config
        self.endpoint_path = "/" + endpoint_path.strip("/")
        self.validator = JwtValidator(config.jwt)
        self._required = frozenset(config.required_scopes)

    async def start(self) -> None:
        """Fetch the JWKS."""
        await self.validator.start()

    async def close(self) -> None:
        """Release the JWKS client."""
        await self.validator.close()

    # -- RFC 9728 -----------------------------------------------------------------------------

    def resource_url(self, scope: Scope, path: str | None = None) -> str:
        """The resource identifier: the configured one, else this request's origin + `path`
        (default: the request's own path, or the endpoint path for a metadata request)."""
        if self.config.resource:
            return self.config.resource
        host = (header(scope, b"host") or b"").decode("latin-1")
        if not host:
            server = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        if path is None:
            path = scope["path"]
            if not path or path.startswith(WELL_KNOWN):
                path = self.endpoint_path
        return f"{scope.get('scheme', 'http')}://{host}{path}"

    def metadata_url(self, scope: Scope) -> str:
        """Where the metadata of this resource is published (the path-suffixed form)."""
        resource = urlsplit(self.resource_url(scope))
        suffix = resource.path.rstrip("/")
        return f"{resource.scheme}://{resource.netloc}{WELL_KNOWN}{suffix}"

    def metadata(self, scope: Scope, path: str | None = None) -> dict[str, Any]:
        """The protected-resource metadata document."""
        config = self.config
        document: dict[str, Any] = {
            "resource": self.resource_url(scope, path),
            "authorization_servers": list(config.authorization_servers),
            "bearer_methods_supported": ["header"],
        }
        if config.scopes_supported:
            document["scopes_supported"] = list(config.scopes_supported)
        if config.jwt.algorithms:
            document["resource_signing_alg_values_supported"] = list(config.jwt.algorithms)
        if config.resource_name:
            document["resource_name"] = config.resource_name
        if config.resource_documentation:
            document["resource_documentation"] = config.resource_documentation
        return document

    def challenge(
        self, scope: Scope, error: str | None = None, description: str | None = None
    ) -> str:
        """The `WWW-Authenticate` value of a 401/403 (RFC 6750 + RFC 9728)."""
        parts = [f"resource_metadata={_quote(self.metadata_url(scope))}"]
        if error:
            parts.append(f"error={_quote(error)}")
        if description:
            parts.append(f"error_description={_quote(description)}")
        scopes = self.config.required_scopes or self.config.scopes_supported
        if scopes:
            parts.append(f"scope={_quote(' '.join(scopes))}")
        return "Bearer " + ", ".join(parts)

    # -- the gate -----------------------------------------------------------------------------

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> bool:
        path: str = scope["path"]
        if path == WELL_KNOWN or path.startswith(WELL_KNOWN + "/"):
            if scope["method"] not in ("GET", "HEAD"):
                raise MethodNotAllowed("metadata is read with GET", headers={"allow": "GET, HEAD"})
            resource_path = path[len(WELL_KNOWN) :] or None
            body = orjson.dumps(self.metadata(scope, resource_path))
            await send_response(
                send,
                200,
                b"" if scope["method"] == "HEAD" else body,
                [
                    (b"content-type", b"application/json"),
                    (b"cache-control", f"public, max-age={METADATA_MAX_AGE}".encode()),
                    (b"access-control-allow-origin", b"*"),
                ],
            )
            return True
        if scope["method"] == "OPTIONS":
            return False  # CORS preflight carries no credentials
        token = bearer_token(scope["headers"])
        if token is None:
            raise Unauthenticated(
                "this MCP endpoint needs an OAuth access token",
                code="unauthorized",
                headers={"www-authenticate": self.challenge(scope)},
            )
        try:
            claims = await self.validator.validate(token)
        except Unauthenticated as exc:
            exc.headers = {"www-authenticate": self.challenge(scope, "invalid_token", exc.message)}
            raise
        if self._required:
            granted = _scopes(claims)
            missing = self._required - granted
            if missing:
                raise Forbidden(
                    "token lacks required scopes: " + " ".join(sorted(missing)),
                    code="insufficient_scope",
                    headers={
                        "www-authenticate": self.challenge(
                            scope, "insufficient_scope", "token lacks required scopes"
                        )
                    },
                )
        ctx.identity = claims
        ctx.attrs[BEARER_ATTR] = token
        CALLER_TOKEN.set(token)
        return False


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(str(s) for s in raw)
    return frozenset()


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
        self._http: aiohttp.ClientSession | None = None
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
                "(configure `auth:` on the MCP backend)",
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
            self._http = aiohttp.ClientSession()
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


__all__ = ["BEARER_ATTR", "CALLER_TOKEN", "WELL_KNOWN", "ProtectedResource", "UpstreamCredentials"]
