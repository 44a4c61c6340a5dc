"""Config of `type: mcp` backends: many upstream MCP servers federated behind one endpoint.

```yaml
backends:
  tools:
    type: mcp
    session_key: ${CROSSWAY_MCP_SESSION_KEY}
    servers:
      everything: {type: stdio, command: npx, args: [-y, "@modelcontextprotocol/server-everything"]}
      weather:    {type: streamable_http, url: http://127.0.0.1:9000/mcp}
      legacy:     {type: sse, url: http://127.0.0.1:9001/sse}
```
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from crossway.config.base import StrictModel
from crossway.config.common import HttpUrl, UpstreamTls
from crossway.config.mcp_security import (
    McpAuthConfig,
    McpAuthorizationConfig,
    PinningConfig,
    UpstreamCredentialsConfig,
)
from crossway.config.policy import PolicyConfig, migrate_mcp_auth
from crossway.config.secrets import SecretArgs, SecretEnv, SecretHeaders
from crossway.config.store import MemoryStoreConfig, RevocationStoreConfig

DEFAULT_SEPARATOR: Final = "_"
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_CALL_TIMEOUT: Final = 300.0
DEFAULT_LIST_TIMEOUT: Final = 10.0
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
DEFAULT_SESSION_IDLE_SECONDS: Final = 3600.0
DEFAULT_SESSION_MAX_SECONDS: Final = 24 * 3600.0
MIN_SESSION_KEY_CHARS: Final = 32
WEAK_SESSION_KEYS: Final = frozenset(
    {
        "changeme",
        "change",
        "secret",
        "password",
        "passw0rd",
        "default",
        "example",
        "test",
        "crossway",
        "sessionkey",
        "mcpsessionkey",
        "key",
        "todo",
        "replaceme",
        "xxx",
    }
)
"""Placeholders seen in examples (compared lower-case without punctuation, also repeated)."""
KeyPath = tuple[str | int, ...]
"""Where a key is in the config file: `("backends", "tools", "session_keys", 1)`."""
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
PLACEHOLDER_MARKERS: Final = ("changeme", "replaceme", "yoursecret", "insertkey")
"""Keys containing these say they are placeholders, whatever surrounds them."""
DEFAULT_MAX_SESSIONS: Final = 100_000
DEFAULT_RESTART_MIN_BACKOFF: Final = 0.5
DEFAULT_RESTART_MAX_BACKOFF: Final = 30.0
DEFAULT_EVENT_BUFFER: Final = 256

logger = logging.getLogger("crossway.config")

SERVER_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9-]{1,32}$")


class McpTimeouts(StrictModel):
    """Upstream MCP timeouts, in seconds."""

    connect: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0)
    """Time to reach a server and finish its `initialize` (a stdio child's start-up included)."""
    call: float = Field(default=DEFAULT_CALL_TIMEOUT, gt=0)
    """Time a server may take to answer `tools/call`, `prompts/get`, `resources/read`..."""
    list: float = Field(default=DEFAULT_LIST_TIMEOUT, gt=0)
    """Time a server may take to answer a `*/list` request; a slower server is left out of
    that list (or fails it, with `fail_closed`)."""


class _ServerBase(StrictModel):
    prefix: bool = True
    """Prefix this server's tool and prompt names (`server_tool`) and resource URIs
    (`crossway://server/uri`). `false` exposes them unchanged (one-server setups, conformance)."""
    timeouts: McpTimeouts | None = None
    """Override the backend's `timeouts` for this server."""


class StdioServerConfig(_ServerBase):
    """A server Crossway spawns and talks to over stdin/stdout; supervised and restarted."""

    type: Literal["stdio"]
    """Transport kind."""
    command: str
    """Program to run (looked up on PATH)."""
    args: SecretArgs = Field(default_factory=list)
    """Its arguments."""
    env: SecretEnv = Field(default_factory=dict)
    """Extra environment variables (on top of Crossway's own PATH, HOME, LANG)."""
    inherit_env: bool = False
    """Pass Crossway's whole environment to the child (default: only PATH, HOME, LANG, TMPDIR)."""
    cwd: str | None = None
    """Working directory."""
    restart_min_backoff: float = Field(default=DEFAULT_RESTART_MIN_BACKOFF, gt=0)
    """First delay before restarting a child that died; doubles up to `restart_max_backoff`."""
    restart_max_backoff: float = Field(default=DEFAULT_RESTART_MAX_BACKOFF, gt=0)
    """Longest delay between restarts."""
    isolation: Literal["shared", "per_client"] = "shared"
    """`shared`: one child serves every client session (cheap; server-to-client requests go to
    the client whose call is in flight). `per_client`: each client session gets its own child,
    spawned at `initialize` and killed when the session ends (for servers that keep per-client
    state)."""


class _HttpServerBase(_ServerBase):
    url: HttpUrl
    """The server's endpoint."""
    headers: SecretHeaders = Field(default_factory=dict)
    """Headers sent on every request, e.g. the upstream's own `Authorization` (the client's
    token is never passed through)."""
    credentials: UpstreamCredentialsConfig | None = None
    """A token Crossway obtains for this server (OAuth client credentials or token exchange)."""
    tls: UpstreamTls | None = None
    """TLS to this server: CA file, client certificate, server name (default: system CAs)."""


class StreamableHttpServerConfig(_HttpServerBase):
    """A server speaking MCP Streamable HTTP (one endpoint, usually `/mcp`)."""

    type: Literal["streamable_http"]
    """Transport kind."""


class SseServerConfig(_HttpServerBase):
    """A server speaking the legacy HTTP+SSE transport (`GET /sse`, then POST to the endpoint
    it announces)."""

    type: Literal["sse"]
    """Transport kind."""


class OpenApiServerConfig(_ServerBase):
    """A plain REST API described by an OpenAPI 3 document; each operation becomes a tool.

    (Implemented by `crossway.mcp.openapi`; its keys are defined there.)
    """

    type: Literal["openapi"]
    """Transport kind."""
    spec: str
    """Path or http(s) URL of the OpenAPI 3 document (JSON or YAML)."""
    base_url: str | None = None
    """Where to send the calls; default: the document's first `servers` entry."""
    headers: SecretHeaders = Field(default_factory=dict)
    """Headers sent on every call (the API's own credentials)."""
    credentials: UpstreamCredentialsConfig | None = None
    """A token Crossway obtains for this API (OAuth client credentials or token exchange)."""
    tls: UpstreamTls | None = None
    """TLS to the API and to an http(s) `spec`: CA file, client certificate, server name."""
    include: list[str] = Field(default_factory=list)
    """Only expose these operations (by tool name, before prefixing); empty exposes all."""
    exclude: list[str] = Field(default_factory=list)
    """Never expose these operations (by tool name, before prefixing)."""


McpServerConfig = Annotated[
    StdioServerConfig | StreamableHttpServerConfig | SseServerConfig | OpenApiServerConfig,
    Field(discriminator="type"),
]


class McpBackendConfig(StrictModel):
    """An MCP gateway: many upstream MCP servers federated behind one endpoint."""

    type: Literal["mcp"]
    """Backend kind."""
    servers: dict[str, McpServerConfig] = Field(min_length=1)
    """The upstream MCP servers, by name. Names are `[A-Za-z0-9-]{1,32}` and prefix what each
    server offers (`name_tool`)."""
    separator: Literal["_", "-", "__"] = DEFAULT_SEPARATOR
    """Between the server name and the tool/prompt name. Names stay within
    `^[a-zA-Z0-9_-]{1,64}$` either way."""
    fail_closed: bool = Field(
        default=False, validation_alias=AliasChoices("fail_closed", "failClosed")
    )
    """If any server is down, fail list requests (and `initialize`) instead of leaving that
    server's tools out."""
    timeouts: McpTimeouts = Field(default_factory=McpTimeouts)
    """Upstream timeouts."""
    session_key: SecretStr | None = None
    """Secret the `Mcp-Session-Id` Crossway hands out is sealed with (AES-256-GCM under a key
    derived from it with HKDF-SHA256), so any replica sharing it can serve any session. Use
    `${VAR}` and at least 32 random characters
    (`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`). A missing or weak key is
    refused unless `listen.host` is loopback, where a random per-process key is used instead
    (sessions then stay on their process)."""
    session_keys: list[SecretStr] = Field(default_factory=list)
    """Instead of `session_key`, for rotation: the first key seals new ids, every key opens
    them. Rotate by putting the new key first, and drop the old one after
    `session_max_seconds`."""
    session_idle_seconds: float = Field(default=DEFAULT_SESSION_IDLE_SECONDS, gt=0)
    """A session without requests for this long ends (its upstream sessions are closed) and its
    id gets 404. Checked by each replica for the sessions it holds: a replica that never served
    a session cannot tell how long it was idle, and accepts it until `session_max_seconds`."""
    session_max_seconds: float = Field(default=DEFAULT_SESSION_MAX_SECONDS, gt=0)
    """A session id stops working this long after its `initialize`, busy or not, on every
    replica (its issue time is sealed into it); the client then starts a new session."""
    session_store: RevocationStoreConfig = Field(
        default_factory=lambda: MemoryStoreConfig(type="memory")
    )
    """Where ended sessions are recorded so their ids never work again: `{type: memory}` (this
    process) or `{type: redis, url: ...}` (every worker and replica sharing the Redis server;
    a Redis that cannot be reached fails session requests with 503)."""
    max_sessions: int = Field(default=DEFAULT_MAX_SESSIONS, gt=0)
    """Most downstream sessions held by one replica; beyond it `initialize` gets 503."""
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    """Largest JSON-RPC message accepted from a client or an upstream."""
    event_buffer: int = Field(default=DEFAULT_EVENT_BUFFER, ge=0)
    """Server-to-client messages kept per session stream for `Last-Event-ID` resumption."""
    server_name: str = "crossway"
    """`serverInfo.name` reported to clients."""
    instructions: str | None = None
    """`instructions` reported to clients (default: the servers' own, joined)."""
    auth: McpAuthConfig | None = None
    """Deprecated: use a `jwt` policy with `protected_resource` (docs/security.md). Still
    accepted: it becomes that policy on this backend, with a warning at load."""
    authorization: McpAuthorizationConfig | None = None
    """Deprecated: use an `authorization` policy (docs/security.md). Still accepted: it becomes
    that policy on this backend, with a warning at load."""
    policies: list[PolicyConfig] = Field(default_factory=list)
    """Policies inherited by every route to this backend (before the route's own). CEL rules
    that read `mcp` also filter the tools, prompts and resources each caller is shown."""
    pinning: PinningConfig = Field(default_factory=PinningConfig)
    """Tool-definition pinning and description scanning (on, in memory, by default)."""

    @field_validator("servers")
    @classmethod
    def _server_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not SERVER_NAME_PATTERN.match(name):
                raise ValueError(
                    f"server name {name!r} must be 1-32 characters of A-Z, a-z, 0-9 and '-'"
                )
        return value

    @model_validator(mode="after")
    def _migrate_deprecated_auth(self) -> McpBackendConfig:
        migrated = migrate_mcp_auth(self.auth, self.authorization)
        if migrated:
            logger.warning(
                "MCP backend keys 'auth'/'authorization' are deprecated: they now stand for "
                "route policies (see docs/security.md for the new form)"
            )
            return self.model_copy(
                update={
                    "policies": [*migrated, *self.policies],
                    "auth": None,
                    "authorization": None,
                }
            )
        return self

    @field_validator("session_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value: Any) -> Any:
        # `${CROSSWAY_MCP_SESSION_KEY:-}` left empty means "no key" (refused off loopback).
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_way_to_give_keys(self) -> McpBackendConfig:
        if self.session_key is not None and self.session_keys:
            raise ValueError("set session_key or session_keys, not both")
        return self

    def sealing_keys(self) -> list[tuple[str, str]]:
        """(config key path, secret) of every configured session key, the sealing one first;
        empty secrets (an unset `${VAR}`) included."""
        if self.session_keys:
            return [
                (f"session_keys[{i}]", key.get_secret_value())
                for i, key in enumerate(self.session_keys)
            ]
        if self.session_key is not None:
            return [("session_key", self.session_key.get_secret_value())]
        return []

    def session_key_problems(self) -> list[tuple[str, str]]:
        """(config key path, why) for a missing session key or each weak one."""
        keys = self.sealing_keys()
        if not keys or not any(secret for _, secret in keys):
            return [("session_key", "missing: set a random key of at least 32 characters")]
        return [(path, why) for path, secret in keys if (why := weak_key_reason(secret))]

    @model_validator(mode="after")
    def _separator_not_in_names(self) -> McpBackendConfig:
        if self.separator == "-":
            for name, server in self.servers.items():
                if "-" in name and server.prefix:
                    raise ValueError(
                        f"server name {name!r} contains the separator '-'; pick separator '_'"
                    )
        return self


def weak_key_reason(secret: str) -> str | None:
    """Why `secret` is too weak to seal session ids with, or None."""
    if not secret:
        return "missing: set a random key of at least 32 characters"
    folded = re.sub(r"[^a-z0-9]", "", secret.lower())
    placeholder = any(word in folded for word in PLACEHOLDER_MARKERS) or any(
        folded == word * (len(folded) // len(word))
        for word in WEAK_SESSION_KEYS
        if len(folded) % len(word) == 0
    )
    if placeholder:
        return "weak: a placeholder, not a secret (generate one with secrets.token_urlsafe(32))"
    if len(secret) < MIN_SESSION_KEY_CHARS:
        return f"weak: use at least {MIN_SESSION_KEY_CHARS} random characters"
    if len(set(secret)) < MIN_SESSION_KEY_CHARS // 4:
        return "weak: too few distinct characters to be random"
    return None


def is_loopback(host: str) -> bool:
    """Whether a listener bound to `host` is reachable from this machine only."""
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def session_key_problems(
    listen_host: str, backends: Mapping[str, object]
) -> list[tuple[KeyPath, str]]:
    """MCP backends whose session key is missing or weak while the listener is reachable from
    other machines (on loopback Crossway uses a random per-process key instead, and says so)."""
    if is_loopback(listen_host):
        return []
    problems: list[tuple[KeyPath, str]] = []
    for name, backend in backends.items():
        if isinstance(backend, McpBackendConfig):
            for key, why in backend.session_key_problems():
                field, _, index = key.partition("[")
                loc: KeyPath = ("backends", name, field, *([int(index[:-1])] if index else []))
                problems.append((loc, f"{why} (required when listen.host is not loopback)"))
    return problems
