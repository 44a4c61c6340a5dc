"""Config of the MCP gateway's security features and of OpenAPI upstreams.

These models are referenced from `crossway.config.mcp.McpBackendConfig` (owned by the MCP gateway
core); they live here so each feature's keys are documented next to each other:

- `McpAuthConfig`            -> `auth:` Crossway as an OAuth 2.1 protected resource for `/mcp`
                                (`crossway.mcp.auth`), validating JWTs with `JwtConfig`
                                (`crossway.policy.jwt`, reused by other protocols).
- `McpAuthorizationConfig`   -> `authorization:` CEL allow/deny rules per tool, prompt and resource
                                (`crossway.mcp.authz`).
- `PinningConfig`            -> `pinning:` tool-definition pinning and description scanning
                                (`crossway.mcp.pinning`).
- `UpstreamCredentialsConfig`-> `credentials:` on an HTTP or OpenAPI upstream: the token
                                Crossway gets for it (`crossway.mcp.auth.UpstreamCredentials`).

The OpenAPI upstream's keys are on `crossway.config.mcp.OpenApiServerConfig`.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from crossway.config.base import StrictModel
from crossway.config.policy import JwtConfig

DEFAULT_PIN_DB: Final = "mcp-pins.sqlite3"
DEFAULT_TOKEN_TIMEOUT: Final = 10.0
DEFAULT_TOKEN_REFRESH_MARGIN: Final = 30.0


class McpAuthConfig(StrictModel):
    """Crossway as an OAuth 2.1 protected resource (RFC 9728) in front of `/mcp`."""

    authorization_servers: list[str] = Field(min_length=1)
    """Issuer URLs of the authorization servers clients should get tokens from."""
    jwt: JwtConfig
    """How access tokens are validated."""
    resource: str | None = None
    """The canonical resource URI clients request tokens for (RFC 8707), e.g.
    `https://gw.example.com/mcp`. Required: it is the audience every token must name and the
    origin of the metadata URL (never taken from the client's `Host` header)."""
    scopes_supported: list[str] = Field(default_factory=list)
    """Scopes advertised in the protected-resource metadata."""
    required_scopes: list[str] = Field(default_factory=list)
    """Scopes every token must carry (`scope` or `scp` claim); a token without them gets 403."""
    resource_name: str | None = None
    """Human-readable name published in the metadata."""
    resource_documentation: str | None = None
    """URL of documentation published in the metadata."""


class McpAuthorizationConfig(StrictModel):
    """Who may see and use which tool, prompt and resource (CEL rules).

    Deprecated: the same rules as an `authorization` policy (docs/security.md).
    A deny rule that matches forbids; with allow rules set, one of them must match.
    """

    allow: list[str] = Field(default_factory=list)
    """CEL expressions; when any are given, something is allowed only if one of them is true."""
    deny: list[str] = Field(default_factory=list)
    """CEL expressions; something is forbidden if any of them is true (deny wins over allow)."""

    @field_validator("allow", "deny")
    @classmethod
    def _compile(cls, rules: list[str]) -> list[str]:
        # Compiled here so `crossway validate` reports a bad rule with its path; the compiled
        # programs are cached and reused when the backend is built.
        from crossway.policy.cel import RuleError, compile_rule

        problems = []
        for index, source in enumerate(rules):
            try:
                compile_rule(source)
            except RuleError as exc:
                problems.append(f"rule {index}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return rules


class PinningConfig(StrictModel):
    """Tool-definition pinning: remember each tool's definition, act when it changes."""

    mode: Literal["block", "flag", "off"] = "block"
    """On a changed definition: `block` hides the tool and refuses calls, `flag` keeps it but
    marks it and logs a warning, `off` disables pinning."""
    store: Literal["memory", "sqlite"] = "memory"
    """Where pins are kept: memory (changes are caught while this process runs) or a SQLite
    file (pins survive restarts, so a definition changed while Crossway was down is caught)."""
    path: str | None = None
    """SQLite file path. Unset: `$CROSSWAY_DATA_DIR/mcp-pins.sqlite3` (default data dir
    `./.crossway`)."""
    scan_descriptions: bool = True
    """Scan tool descriptions for injected instructions (hidden unicode, 'ignore previous
    instructions', ...) and flag them."""
    block_suspicious: bool = False
    """Also block (not just flag) tools whose description looks like a prompt injection."""


class ClientCredentialsConfig(StrictModel):
    """OAuth 2.0 client-credentials grant: Crossway gets its own token for the upstream."""

    token_url: str
    """Token endpoint of the authorization server."""
    client_id: str
    """Crossway's client id."""
    client_secret: SecretStr
    """Crossway's client secret (use `${VAR}`)."""
    scopes: list[str] = Field(default_factory=list)
    """Scopes requested."""
    audience: str | None = None
    """`audience` parameter, for servers that want one."""
    resource: str | None = None
    """RFC 8707 `resource` parameter (the upstream's canonical URI)."""
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    """How the client authenticates to the token endpoint."""
    timeout: float = Field(default=DEFAULT_TOKEN_TIMEOUT, gt=0)
    """Timeout of one token request."""


class TokenExchangeConfig(StrictModel):
    """RFC 8693 token exchange: the caller's token is swapped for one scoped to the upstream."""

    token_url: str
    """Token endpoint that performs the exchange."""
    client_id: str
    """Crossway's client id at that endpoint."""
    client_secret: SecretStr | None = None
    """Crossway's client secret (sent with HTTP Basic)."""
    audience: str | None = None
    """`audience` of the requested token."""
    resource: str | None = None
    """`resource` of the requested token (the upstream's URI)."""
    scopes: list[str] = Field(default_factory=list)
    """Scopes requested."""
    requested_token_type: str = "urn:ietf:params:oauth:token-type:access_token"
    """Token type asked for."""
    timeout: float = Field(default=DEFAULT_TOKEN_TIMEOUT, gt=0)
    """Timeout of one exchange."""


class UpstreamCredentialsConfig(StrictModel):
    """A token Crossway obtains for one upstream (static headers are the server's `headers`).

    The caller's own token is never forwarded.
    """

    client_credentials: ClientCredentialsConfig | None = None
    """Fetch and cache a token with the client-credentials grant."""
    token_exchange: TokenExchangeConfig | None = None
    """Exchange the caller's token for an upstream token (RFC 8693)."""
    refresh_margin: float = Field(default=DEFAULT_TOKEN_REFRESH_MARGIN, ge=0)
    """Seconds before expiry at which a cached token is renewed."""

    @model_validator(mode="after")
    def _one_grant(self) -> UpstreamCredentialsConfig:
        if self.client_credentials is not None and self.token_exchange is not None:
            raise ValueError("set at most one of client_credentials and token_exchange")
        return self


__all__ = [
    "ClientCredentialsConfig",
    "JwtConfig",
    "McpAuthConfig",
    "McpAuthorizationConfig",
    "PinningConfig",
    "TokenExchangeConfig",
    "UpstreamCredentialsConfig",
]
