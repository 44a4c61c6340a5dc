"""Config of route policies: authentication, authorization and HTTP hygiene.

A route's `policies:` list (and a backend's or the listener's, inherited by their routes) holds
policies of these kinds, told apart by `type`:

```yaml
policies:
  - {type: jwt, issuer: https://idp.example.com, jwks_url: ..., audiences: [crossway]}
  - {type: api_key, mode: optional, keys: {ci: "sha256:9f86d0..."}}
  - {type: authorization, allow: ['llm.model == "gpt-4o-mini"', 'jwt.role == "admin"']}
```

Authentication policies have a `mode`:

- `strict` (default): the request must be authenticated when this policy has run — by this
  policy or by an earlier one in the chain (so `[api_key optional, jwt strict]` accepts either);
- `optional`: no credential is fine; a credential that is presented must be valid;
- `permissive`: an invalid credential is ignored (logged) and the request goes on anonymous.

A credential that is presented and invalid is refused in `strict` and `optional` mode, even
when an earlier policy already authenticated the caller.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Annotated, Any, Final, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from crossway.config.accounting import RateLimitConfig, VirtualKeyConfig
from crossway.config.base import StrictModel
from crossway.config.common import HttpUrl, UpstreamTls
from crossway.config.guardrails import GuardrailsConfig

AuthMode = Literal["strict", "optional", "permissive"]

DEFAULT_JWT_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
DEFAULT_CLOCK_SKEW: Final = 30.0
DEFAULT_JWKS_TTL: Final = 300.0
DEFAULT_JWKS_MIN_REFRESH: Final = 10.0
DEFAULT_JWKS_TIMEOUT: Final = 5.0
MIN_API_KEY_LENGTH: Final = 16
MIN_HMAC_SECRET_LENGTH: Final = 32
DEFAULT_BASIC_CACHE_SECONDS: Final = 60.0
DEFAULT_EXT_AUTHZ_TIMEOUT: Final = 1.0
DEFAULT_EXT_AUTHZ_CACHE_SECONDS: Final = 5.0
DEFAULT_CORS_MAX_AGE: Final = 600
_SHA256_KEY: Final = re.compile(r"^sha256:[0-9a-fA-F]{64}$")
_ORIGIN: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://(\*\.)?[^/*:\s]+(:[0-9]{1,5})?")


class _JwtSettings(StrictModel):
    """How to validate a JWT bearer token: keys, issuer, audience, clock skew."""

    jwks_url: str | None = None
    """URL of a JWKS document; fetched at start, cached for `jwks_ttl` and re-fetched when a
    token names an unknown `kid` (key rotation)."""
    jwks: dict[str, object] | None = None
    """An inline JWKS document (`{"keys": [...]}`) used instead of (or besides) `jwks_url`."""
    jwks_file: str | None = None
    """Path of a JWKS document on disk (read at config load and on reload)."""
    secret: SecretStr | None = None
    """Shared secret for HMAC-signed tokens (at least 32 characters); `algorithms` must then
    name the HS* algorithms to accept. Prefer asymmetric keys."""
    issuer: str | None = None
    """Required `iss` claim. Unset accepts any issuer (only sensible with keys nobody else
    signs with)."""
    audiences: list[str] = Field(default_factory=list)
    """Accepted `aud` values; the token must name at least one. Required, except on a policy
    with `protected_resource`, whose `resource` URI is then the required audience."""
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_JWT_ALGORITHMS))
    """Accepted signing algorithms; a token signed with any other is refused (`none` is never
    accepted). HS256/384/512 are accepted only when listed here and `secret` is set."""
    required_claims: list[str] = Field(default_factory=lambda: ["exp"])
    """Claims every token must carry."""
    clock_skew: float = Field(default=DEFAULT_CLOCK_SKEW, ge=0)
    """Seconds of leeway for `exp`, `nbf` and `iat`."""
    jwks_ttl: float = Field(default=DEFAULT_JWKS_TTL, gt=0)
    """Seconds a fetched JWKS is trusted before it is re-fetched."""
    jwks_min_refresh: float = Field(default=DEFAULT_JWKS_MIN_REFRESH, ge=0)
    """Least seconds between two fetches triggered by unknown `kid`s (stops token spraying
    from hammering the identity provider)."""
    jwks_timeout: float = Field(default=DEFAULT_JWKS_TIMEOUT, gt=0)
    """Timeout of one JWKS fetch."""

    @property
    def has_keys(self) -> bool:
        """Whether any verification key source is configured."""
        return bool(self.jwks_url or self.jwks or self.jwks_file or self.secret)

    @model_validator(mode="after")
    def _algorithms(self) -> _JwtSettings:
        if any(a.lower() == "none" for a in self.algorithms):
            raise ValueError("algorithm 'none' is not allowed")
        hmac_listed = [a for a in self.algorithms if a in HMAC_ALGORITHMS]
        if self.secret is not None:
            if len(self.secret.get_secret_value()) < MIN_HMAC_SECRET_LENGTH:
                raise ValueError(f"secret must be at least {MIN_HMAC_SECRET_LENGTH} characters")
            if not hmac_listed:
                raise ValueError("secret is set but algorithms lists no HS256/HS384/HS512")
        elif hmac_listed:
            raise ValueError(f"algorithms lists {hmac_listed[0]} but no secret is set")
        return self


class JwtConfig(_JwtSettings):
    """How to validate a JWT bearer token: keys, issuer, audience, clock skew."""

    @model_validator(mode="after")
    def _keys(self) -> JwtConfig:
        if not self.has_keys:
            raise ValueError("set at least one of jwks_url, jwks, jwks_file or secret")
        return self


class ProtectedResourceConfig(StrictModel):
    """OAuth 2.1 protected-resource behaviour (RFC 9728, as MCP requires): requests without a
    valid token get 401 with `WWW-Authenticate: Bearer resource_metadata=...`, and the metadata
    is published at `/.well-known/oauth-protected-resource` + the route's path."""

    resource: str
    """The canonical resource URI clients request tokens for (RFC 8707), e.g.
    `https://gw.example.com/mcp`. It is also the audience every token must name (besides any
    `audiences`), and the origin the metadata URL is built from — never the client's `Host`."""
    authorization_servers: list[str] = Field(min_length=1)
    """Issuer URLs of the authorization servers clients should get tokens from."""
    scopes_supported: list[str] = Field(default_factory=list)
    """Scopes advertised in the metadata."""
    resource_name: str | None = None
    """Human-readable name published in the metadata."""
    resource_documentation: str | None = None
    """URL of documentation published in the metadata."""

    @field_validator("resource")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or "#" in value:
            raise ValueError("resource must be an absolute http(s) URI without a fragment")
        return value


class JwtPolicyConfig(_JwtSettings):
    """Authenticate callers by a JWT bearer token (`Authorization: Bearer <jwt>`)."""

    type: Literal["jwt"]
    """Policy kind."""
    mode: AuthMode = "strict"
    """`strict`, `optional` or `permissive` (see the module docs)."""
    issuers: list[JwtConfig] = Field(default_factory=list)
    """More issuers, each with its own keys, issuer and audiences; a token is checked against
    the one whose `issuer` matches its `iss` (the top-level keys count as one more issuer
    when given)."""
    required_scopes: list[str] = Field(default_factory=list)
    """Scopes every token must carry (`scope` or `scp` claim); a token without them gets 403."""
    protected_resource: ProtectedResourceConfig | None = None
    """Answer as an OAuth protected resource (RFC 9728): 401 challenges pointing at metadata."""
    forward: bool = False
    """Forward the caller's `Authorization` header upstream (default: Crossway consumes it)."""

    @model_validator(mode="after")
    def _keys_and_audiences(self) -> JwtPolicyConfig:
        if not self.has_keys and not self.issuers:
            raise ValueError("set jwks_url, jwks, jwks_file or secret, or list issuers")
        for config in ([self] if self.has_keys else []) + list(self.issuers):
            if not config.audiences and self.protected_resource is None:
                raise ValueError(
                    "set audiences (the aud values this gateway accepts) or protected_resource"
                )
        return self


def _check_api_key(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    if raw.startswith("sha256:"):
        if not _SHA256_KEY.match(raw):
            raise ValueError("a sha256: key must be 'sha256:' followed by 64 hex digits")
    elif len(raw) < MIN_API_KEY_LENGTH:
        raise ValueError(f"API keys must be at least {MIN_API_KEY_LENGTH} characters")
    return value


class ApiKeyAuth(StrictModel):
    """Require callers to present one of these keys (as `Authorization: Bearer` or `x-api-key`)."""

    type: Literal["api_key"]
    """Policy kind."""
    mode: AuthMode = "strict"
    """`strict`, `optional` or `permissive` (see the module docs)."""
    keys: dict[str, SecretStr] = Field(min_length=1)
    """Key name -> key, or `sha256:<hex>` of the key (so the config need not hold the key).
    The name becomes the caller's identity. Keys are at least 16 characters."""
    header: str | None = None
    """Read the key from this header only (default: `Authorization: Bearer` or `x-api-key`)."""
    forward: bool = False
    """Forward the key header upstream (default: Crossway consumes it)."""

    @field_validator("keys")
    @classmethod
    def _valid_keys(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        digests: set[str] = set()
        for name, value in keys.items():
            try:
                _check_api_key(value)
            except ValueError as exc:
                raise ValueError(f"key {name!r}: {exc}") from None
            digest = key_digest(value.get_secret_value())
            if digest in digests:
                raise ValueError(f"key {name!r} is the same as another key")
            digests.add(digest)
        return keys


def key_digest(configured: str) -> str:
    """The hex SHA-256 of a configured key (`sha256:<hex>` is already one)."""
    if configured.startswith("sha256:"):
        return configured[7:].lower()
    return hashlib.sha256(configured.encode()).hexdigest()


class BasicAuthConfig(StrictModel):
    """HTTP Basic authentication against an htpasswd file (bcrypt entries)."""

    type: Literal["basic_auth"]
    """Policy kind."""
    mode: AuthMode = "strict"
    """`strict`, `optional` or `permissive` (see the module docs)."""
    htpasswd: str
    """Path of an htpasswd file with bcrypt (`$2y$`/`$2b$`) entries (`htpasswd -B`); read at
    load and on reload, and again whenever the file changes. Any other kind of entry (MD5
    `$apr1$`, `{SHA}`, crypt, plain text) is a config error."""
    realm: str = "crossway"
    """Realm named in the `WWW-Authenticate` challenge."""
    cache_seconds: float = Field(default=DEFAULT_BASIC_CACHE_SECONDS, ge=0)
    """How long a verified user/password pair is remembered (in memory, as a keyed hash), so
    a client sending it on every request costs one bcrypt check per period; 0 disables."""
    forward: bool = False
    """Forward the caller's `Authorization` header upstream (default: Crossway consumes it)."""

    @field_validator("htpasswd")
    @classmethod
    def _bcrypt_file(cls, value: str) -> str:
        from crossway.policy.basic_auth import read_htpasswd

        read_htpasswd(value)  # HtpasswdError is a ValueError naming the file and line
        return value


class MtlsAuthConfig(StrictModel):
    """Authenticate callers by the TLS client certificate the listener verified
    (`listen.tls.client_auth`), read from the ASGI TLS extension. granian 2.8 verifies client
    certificates but does not pass them on, so behind it this policy finds none (see
    `crossway.policy.mtls`)."""

    type: Literal["mtls"]
    """Policy kind."""
    mode: AuthMode = "strict"
    """`strict`, `optional` or `permissive` (see the module docs)."""
    identity: Literal["subject", "san"] = "subject"
    """What becomes the caller's `sub`: the certificate subject DN, or its first SAN
    (DNS name, URI or e-mail)."""
    allowed: list[str] = Field(default_factory=list)
    """Accepted identities, compared with `sub` (empty: any certificate the listener's CA
    verified); another verified certificate gets 403."""
    source: Literal["tls", "header"] = "tls"
    """Where the verified certificate comes from: `tls`, this listener's handshake (the ASGI
    TLS extension); or `header`, a TLS-terminating proxy in front (Envoy, nginx) that verified
    it and passes it in `header` — believed only from `listen.trusted_proxies`, ignored (and
    the caller unauthenticated) from anyone else."""
    header: str = "x-forwarded-client-cert"
    """With `source: header`: the header the proxy sets."""
    header_format: Literal["xfcc", "pem"] = "xfcc"
    """`xfcc`: Envoy's `X-Forwarded-Client-Cert` (`Hash=...;Cert="<url-encoded PEM>";Subject=
    "...";URI=...;DNS=...`, the last element is the proxy's own verification); `pem`: a
    URL-encoded PEM certificate (nginx `$ssl_client_escaped_cert`)."""


class ExtAuthzConfig(StrictModel):
    """Ask an external HTTP service whether a request may pass (your own policy engine).

    Crossway POSTs `{"method", "path", "query", "route", "source", "headers", "identity"}` as
    JSON (`headers`: only those listed in `headers`; `identity`: what earlier policies set); a
    2xx allows (a JSON object answer's `identity` object, with a `sub`, becomes the caller's
    identity), 401/403 refuse with that status (a string `reason` is shown to the caller),
    anything else is an error handled by `fail_open`. Not an authentication policy (no
    `mode`): it decides every request, so put it after the policies that authenticate.
    """

    type: Literal["ext_authz"]
    """Policy kind."""
    url: HttpUrl
    """The authorization service's endpoint."""
    timeout: float = Field(default=DEFAULT_EXT_AUTHZ_TIMEOUT, gt=0)
    """Seconds to wait for its answer."""
    fail_open: bool = False
    """Let requests through when the service is down or answers an error (default: refuse
    with 503)."""
    cache_seconds: float = Field(default=DEFAULT_EXT_AUTHZ_CACHE_SECONDS, ge=0)
    """Remember a decision (allow or refuse, never an error) for this long, per distinct
    question asked (credential headers, method, path, query, source, identity); 0 disables."""
    headers: list[str] = Field(default_factory=lambda: ["authorization", "x-api-key"])
    """Request headers sent to the service."""
    forward: bool = False
    """Forward the headers sent to the service upstream too (default: once the service allows
    a request, Crossway consumes them, like any credential it checked)."""
    tls: UpstreamTls | None = None
    """TLS to the service (CA file, client certificate, server name; default: system CAs)."""


class RoleGrant(StrictModel):
    """What one role may use; `"*"` means anything of that kind."""

    models: list[str] = Field(default_factory=list)
    """LLM models (`llm.model`)."""
    tools: list[str] = Field(default_factory=list)
    """MCP tools (`mcp.tool.name`, as clients see them)."""
    agents: list[str] = Field(default_factory=list)
    """A2A agents (`a2a.agent`)."""


class RolesConfig(StrictModel):
    """Role shortcuts: a claim's value -> what it may use, expanded into `allow` rules."""

    claim: str = "role"
    """The JWT claim holding the caller's role (a string or a list of strings)."""
    grants: dict[str, RoleGrant] = Field(min_length=1)
    """Role -> grants. The role `"*"` applies to every authenticated caller."""

    @field_validator("claim")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("claim must be an identifier ([A-Za-z_][A-Za-z0-9_]*)")
        return value


class AuthorizationConfig(StrictModel):
    """Allow / deny rules in CEL over the request's attributes (see docs/security.md).

    A deny rule that is true forbids (403); with allow rules set, one of them must be true. A
    rule that fails to evaluate (a missing key) counts as true for deny and false for allow.
    """

    type: Literal["authorization"]
    """Policy kind."""
    allow: list[str] = Field(default_factory=list)
    """CEL expressions; when any are given (or `roles`), a request passes only if one is true."""
    deny: list[str] = Field(default_factory=list)
    """CEL expressions; a request is forbidden if any is true (deny wins over allow)."""
    roles: RolesConfig | None = None
    """Role shortcuts, expanded into more `allow` rules."""

    @model_validator(mode="after")
    def _compile(self) -> AuthorizationConfig:
        # Compiled here so `crossway validate` reports a bad rule with its path; the compiled
        # programs are cached and reused when the policy is built.
        from crossway.policy.cel import RuleError, compile_rule

        problems = []
        for kind, rules in (("allow", self.allow), ("deny", self.deny)):
            for index, source in enumerate(rules):
                try:
                    compile_rule(source)
                except RuleError as exc:
                    problems.append(f"{kind}[{index}]: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        if not (self.allow or self.deny or self.roles):
            raise ValueError("set allow, deny or roles")
        return self


class CorsConfig(StrictModel):
    """Cross-origin resource sharing for browser clients. Runs before every other request
    policy of the chain (preflights carry no credentials), wherever it is listed."""

    type: Literal["cors"]
    """Policy kind."""
    allow_origins: list[str] = Field(min_length=1)
    """Origins allowed (`https://app.example.com`, compared without regard to case), one
    wildcard label (`https://*.example.com`: any subdomain), or `"*"` for any (never with
    credentials)."""
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST", "DELETE", "OPTIONS"])
    """Methods allowed in preflight answers (`"*"`: whatever the browser asks for)."""
    allow_headers: list[str] = Field(
        default_factory=lambda: [
            "authorization",
            "content-type",
            "x-api-key",
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
        ]
    )
    """Request headers allowed in preflight answers (`"*"`: whatever the browser asks for)."""
    expose_headers: list[str] = Field(default_factory=lambda: ["mcp-session-id", "x-request-id"])
    """Response headers a browser script may read."""
    allow_credentials: bool = False
    """Let browsers send cookies / credentials."""
    max_age: int = Field(default=DEFAULT_CORS_MAX_AGE, ge=0)
    """Seconds a browser may cache a preflight answer."""

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for value in values:
            if value != "*" and not _ORIGIN.fullmatch(value.rstrip("/")):
                raise ValueError(
                    f"{value!r} is not an origin: write scheme://host[:port] (no path), "
                    "'*', or one wildcard label as in https://*.example.com"
                )
        return values

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_origins '*' cannot be combined with allow_credentials")
        return self


class IpFilterConfig(StrictModel):
    """Allow or deny callers by source address (the real client address: `X-Forwarded-For`
    counts only from `listen.trusted_proxies`)."""

    type: Literal["ip"]
    """Policy kind."""
    allow: list[str] = Field(default_factory=list)
    """CIDRs allowed (empty: any not denied)."""
    deny: list[str] = Field(default_factory=list)
    """CIDRs denied (wins over allow)."""

    @field_validator("allow", "deny")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address or CIDR") from None
        return values


def migrate_mcp_auth(auth: Any, authorization: Any) -> list[Any]:
    """The policies the deprecated MCP backend keys `auth:` (a `McpAuthConfig`) and
    `authorization:` (a `McpAuthorizationConfig`) stand for."""
    policies: list[Any] = []
    if auth is not None:
        if not auth.resource:
            raise ValueError(
                "auth.resource is required: the public URI of this MCP endpoint (e.g. "
                "https://gw.example.com/mcp); it is no longer taken from the client's Host header"
            )
        settings = auth.jwt.model_dump(exclude_unset=True)
        policies.append(
            JwtPolicyConfig.model_validate(
                {
                    **settings,
                    "type": "jwt",
                    "required_scopes": list(auth.required_scopes),
                    "protected_resource": {
                        "resource": auth.resource,
                        "authorization_servers": list(auth.authorization_servers),
                        "scopes_supported": list(auth.scopes_supported),
                        "resource_name": auth.resource_name,
                        "resource_documentation": auth.resource_documentation,
                    },
                }
            )
        )
    if authorization is not None and (authorization.allow or authorization.deny):
        policies.append(
            AuthorizationConfig(
                type="authorization",
                allow=list(authorization.allow),
                deny=list(authorization.deny),
            )
        )
    return policies


PolicyConfig = Annotated[
    JwtPolicyConfig
    | ApiKeyAuth
    | BasicAuthConfig
    | MtlsAuthConfig
    | ExtAuthzConfig
    | AuthorizationConfig
    | CorsConfig
    | IpFilterConfig
    | VirtualKeyConfig
    | RateLimitConfig
    | GuardrailsConfig,
    Field(discriminator="type"),
]
"""One configured policy."""


__all__ = [
    "ApiKeyAuth",
    "AuthMode",
    "AuthorizationConfig",
    "BasicAuthConfig",
    "CorsConfig",
    "ExtAuthzConfig",
    "IpFilterConfig",
    "JwtConfig",
    "JwtPolicyConfig",
    "MtlsAuthConfig",
    "PolicyConfig",
    "ProtectedResourceConfig",
    "RoleGrant",
    "RolesConfig",
    "key_digest",
]
