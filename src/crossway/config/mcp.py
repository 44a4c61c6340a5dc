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

import re
from typing import Annotated, Any, Final, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from crossway.config.base import StrictModel
from crossway.config.mcp_security import (
    McpAuthConfig,
    McpAuthorizationConfig,
    PinningConfig,
    UpstreamCredentialsConfig,
)

DEFAULT_SEPARATOR: Final = "_"
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_CALL_TIMEOUT: Final = 300.0
DEFAULT_LIST_TIMEOUT: Final = 10.0
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
DEFAULT_SESSION_IDLE_SECONDS: Final = 3600.0
DEFAULT_MAX_SESSIONS: Final = 100_000
DEFAULT_RESTART_MIN_BACKOFF: Final = 0.5
DEFAULT_RESTART_MAX_BACKOFF: Final = 30.0
DEFAULT_EVENT_BUFFER: Final = 256

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
    args: list[str] = Field(default_factory=list)
    """Its arguments."""
    env: dict[str, str] = Field(default_factory=dict)
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
    url: str
    """The server's endpoint."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Headers sent on every request, e.g. the upstream's own `Authorization` (the client's
    token is never passed through)."""
    credentials: UpstreamCredentialsConfig | None = None
    """A token Crossway obtains for this server (OAuth client credentials or token exchange)."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value


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
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Headers sent on every call (the API's own credentials)."""
    credentials: UpstreamCredentialsConfig | None = None
    """A token Crossway obtains for this API (OAuth client credentials or token exchange)."""
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
    """Secret that seals session state into the `Mcp-Session-Id` Crossway hands out, so any
    replica sharing the key can serve any session. Any string; use `${VAR}`. Without it a
    random per-process key is used and sessions stay on the replica that made them."""
    session_idle_seconds: float = Field(default=DEFAULT_SESSION_IDLE_SECONDS, gt=0)
    """Idle sessions are dropped (and their upstream sessions closed) after this long."""
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
    """Require an OAuth access token (JWT) on `/mcp` and publish RFC 9728 metadata."""
    authorization: McpAuthorizationConfig | None = None
    """CEL rules deciding which tools, prompts and resources each caller sees and uses."""
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
    def _separator_not_in_names(self) -> McpBackendConfig:
        if self.separator == "-":
            for name, server in self.servers.items():
                if "-" in name and server.prefix:
                    raise ValueError(
                        f"server name {name!r} contains the separator '-'; pick separator '_'"
                    )
        return self
