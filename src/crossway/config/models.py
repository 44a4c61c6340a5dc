"""The root config: where Crossway listens, which routes it serves and the backends behind them."""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator

from crossway.config.a2a import A2aBackendConfig
from crossway.config.accounting import AccountingConfig
from crossway.config.base import LocatedProblems, StrictModel
from crossway.config.common import Timeouts, UpstreamTls
from crossway.config.llm import LlmBackendConfig
from crossway.config.mcp import McpBackendConfig, session_key_problems
from crossway.config.policy import JwtConfig, PolicyConfig
from crossway.config.secrets import MatchHeaders, SecretHeaders
from crossway.config.telemetry import TelemetryConfig
from crossway.config.tls import ListenTls

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080
DEFAULT_ADMIN_PORT: Final = 15000
DEFAULT_MAX_BODY_BYTES: Final = 10 * 1024 * 1024
DEFAULT_DRAIN_SECONDS: Final = 30.0


class ListenConfig(StrictModel):
    """The data-plane listener."""

    host: str = DEFAULT_HOST
    """Address to bind."""
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    """TCP port to bind (0 picks a free one)."""
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    """Largest request body accepted; larger ones get 413."""
    drain_seconds: float = Field(default=DEFAULT_DRAIN_SECONDS, ge=0)
    """On shutdown, how long requests in flight may take to finish."""
    policies: list[PolicyConfig] = Field(default_factory=list)
    """Policies inherited by every route (run first, before the backend's and the route's)."""
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    """CIDRs of proxies in front of Crossway whose `X-Forwarded-For`/`-Proto`/`-Host` are
    believed (e.g. `[10.0.0.0/8]`); from any other peer those headers are replaced. Default
    none: the TCP peer is the client."""
    tls: ListenTls | None = None
    """Serve HTTPS (and mutual TLS) with these certificates (default: plain HTTP); see
    `crossway.config.tls`."""


class AdminJwtConfig(JwtConfig):
    """Admins signed in by JWT/OIDC: a token from the identity provider (as a Bearer header,
    or pasted into the console's login form) whose `role_claim` holds `role`."""

    role_claim: str = "roles"
    """Claim holding the caller's roles: a string or a list; dots reach into nested claims
    (`realm_access.roles` for Keycloak)."""
    role: str = "admin"
    """The role that makes a caller an admin."""

    @model_validator(mode="after")
    def _audience(self) -> AdminJwtConfig:
        if not self.audiences:
            raise ValueError("set audiences (the aud values admin tokens must carry)")
        return self


class AdminConfig(StrictModel):
    """The admin plane: health, readiness, metrics and the effective config."""

    enabled: bool = True
    """Serve the admin plane at all."""
    host: str = DEFAULT_HOST
    """Address to bind. Keep it on loopback unless it is protected by other means."""
    port: int = Field(default=DEFAULT_ADMIN_PORT, ge=0, le=65535)
    """TCP port to bind."""
    token: SecretStr | None = None
    """Bearer token the admin API's changing routes (approving or forgetting MCP tool pins) and
    every virtual-key, team, user, spend, budget and request-log route (reads too) require, and
    the console's login form exchanges for a session. Beyond loopback every admin route but
    `/healthz` and `/readyz` requires it (or `jwt`). Unset (and no `jwt`): the admin plane is
    open on a loopback `host` (not to browsers for the sensitive API routes) and closed beyond
    loopback."""
    tls: ListenTls | None = None
    """Serve the admin plane (API and console) over HTTPS: `cert_file` and `key_file`; with
    `client_ca_file` and `client_auth`, callers need a client certificate as well. The
    console's session cookie is `Secure`: beyond loopback, serve it over HTTPS (here or at a
    proxy in front)."""
    jwt: AdminJwtConfig | None = None
    """Admins by JWT/OIDC as well as (or instead of) `token`: a valid token with the admin
    role is accepted wherever the admin token is."""

    @property
    def protected(self) -> bool:
        """Whether admin authentication (a token or JWTs) is configured."""
        return self.token is not None or self.jwt is not None


class PathMatch(StrictModel):
    """How a route matches the request path: exactly one of `exact`, `prefix` or `regex`."""

    exact: str | None = None
    """The path must equal this."""
    prefix: str | None = None
    """The path must start with this, at a segment boundary (`/v1` matches `/v1/x`, not `/v10`)."""
    regex: str | None = None
    """The path must fully match this regular expression."""

    @model_validator(mode="after")
    def _one_kind(self) -> PathMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of exact, prefix or regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        for value in (self.exact, self.prefix):
            if value is not None and not value.startswith("/"):
                raise ValueError("paths must start with '/'")
        return self


class RouteMatch(StrictModel):
    """Conditions a request must meet for a route to take it; all given ones must hold."""

    host: str | None = None
    """Host header (port ignored); `*.example.com` matches any subdomain."""
    path: PathMatch = Field(default_factory=lambda: PathMatch(prefix="/"))
    """Path condition; default matches everything."""
    methods: list[str] | None = None
    """HTTP methods; default any."""
    headers: MatchHeaders = Field(default_factory=dict)
    """Headers that must be present with exactly these values (names are case-insensitive)."""

    @field_validator("methods")
    @classmethod
    def _upper(cls, v: list[str] | None) -> list[str] | None:
        return [m.upper() for m in v] if v is not None else None


RoutePolicy = PolicyConfig
"""One configured policy (kept as a name for older imports)."""


class Route(StrictModel):
    """Traffic matching `match` goes to `backend` after passing `policies`."""

    name: str
    """Name used in metrics, logs and errors."""
    match: RouteMatch = Field(default_factory=RouteMatch)
    """Which requests this route takes."""
    backend: str
    """Name of a backend in `backends`."""
    strip_prefix: bool = False
    """Remove the matched path prefix before the backend sees the path."""
    max_body_bytes: int | None = Field(default=None, gt=0)
    """Largest request body this route accepts (overrides `listen.max_body_bytes`, up or
    down); larger ones get 413."""
    policies: list[PolicyConfig] = Field(default_factory=list)
    """Policies of this route (after the listener's and the backend's), in order; see
    docs/security.md."""


class HttpBackendConfig(StrictModel):
    """A plain HTTP upstream: Crossway reverse-proxies requests to it unchanged."""

    type: Literal["http"]
    """Backend kind."""
    url: str
    """Base URL of the upstream; the request path is appended to its path."""
    headers: SecretHeaders = Field(default_factory=dict)
    """Headers added to every upstream request (override the client's); values are secrets."""
    timeouts: Timeouts = Field(default_factory=Timeouts)
    """Connect / first-byte / idle timeouts."""
    tls: UpstreamTls | None = None
    """TLS to the upstream: CA file, client certificate, server name (default: system CAs)."""
    policies: list[PolicyConfig] = Field(default_factory=list)
    """Policies inherited by every route to this backend (before the route's own)."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return v.rstrip("/")


BackendConfig = Annotated[
    HttpBackendConfig | LlmBackendConfig | McpBackendConfig | A2aBackendConfig,
    Field(discriminator="type"),
]


class Config(StrictModel):
    """A whole Crossway config file."""

    listen: ListenConfig = Field(default_factory=ListenConfig)
    """Data-plane listener."""
    admin: AdminConfig = Field(default_factory=AdminConfig)
    """Admin plane listener."""
    routes: list[Route] = Field(default_factory=list)
    """Routes, tried in order; the first that matches takes the request."""
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    """Backends by name."""
    accounting: AccountingConfig = Field(default_factory=AccountingConfig)
    """Virtual keys, spend, budgets and shared rate limits: where they are stored."""
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    """Traces, access logs and the request log store (docs/observability.md)."""

    @model_validator(mode="after")
    def _references(self) -> Config:
        problems = reference_problems(
            [(r.name, r.backend) for r in self.routes], set(self.backends)
        )
        if problems:
            loc, msg = problems[0]
            raise ValueError(f"{format_loc(loc)}: {msg}")
        weak = session_key_problems(self.listen.host, self.backends)
        if weak:
            raise LocatedProblems(weak)
        if self.accounting.store.type != "redis":
            for where, policy in self._all_policies():
                limits = getattr(policy, "limits", None) if policy.type == "rate_limit" else None
                for i, limit in enumerate(limits or ()):
                    if limit.mode == "global":
                        raise ValueError(
                            f"{where}.limits[{i}].mode: a global limit is shared through "
                            "Redis; set `accounting.store: {type: redis, url: ...}` or use "
                            "mode: local"
                        )
        return self

    def _all_policies(self) -> list[tuple[str, PolicyConfig]]:
        """Every configured policy with where it is configured."""
        out: list[tuple[str, PolicyConfig]] = [
            (f"listen.policies[{i}]", p) for i, p in enumerate(self.listen.policies)
        ]
        for name, backend in self.backends.items():
            for i, p in enumerate(getattr(backend, "policies", ())):
                out.append((f"backends.{name}.policies[{i}]", p))
        for r, route in enumerate(self.routes):
            out.extend((f"routes[{r}].policies[{i}]", p) for i, p in enumerate(route.policies))
        return out


Loc = tuple[str | int, ...]


def reference_problems(routes: list[tuple[str, str]], backends: set[str]) -> list[tuple[Loc, str]]:
    """Cross-references pydantic cannot check per field: each route's backend exists, names are unique."""
    problems: list[tuple[Loc, str]] = []
    seen: set[str] = set()
    for i, (name, backend) in enumerate(routes):
        if backend not in backends:
            known = ", ".join(sorted(backends)) or "none defined"
            problems.append(
                (("routes", i, "backend"), f"unknown backend {backend!r} (known: {known})")
            )
        if name in seen:
            problems.append((("routes", i, "name"), f"duplicate route name {name!r}"))
        seen.add(name)
    return problems


def format_loc(loc: Loc) -> str:
    """`("routes", 0, "backend")` -> `routes[0].backend`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"
