"""`McpBackend`: the `type: mcp` backend — MCP servers federated behind one endpoint.

Paths (relative to the route): `/mcp` (Streamable HTTP, both protocol eras), `/sse` and
`/message` (legacy HTTP+SSE). Access control is the route's policy chain; tool pinning is a
hook (`crossway.mcp.hooks`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from crossway.config.mcp import (
    McpBackendConfig,
    SseServerConfig,
    StdioServerConfig,
    StreamableHttpServerConfig,
    weak_key_reason,
)
from crossway.config.store import MemoryStoreConfig
from crossway.errors import GatewayError, NotFound
from crossway.mcp import jsonrpc
from crossway.mcp.downstream.http import send_json
from crossway.mcp.downstream.sse import LegacySseTransport
from crossway.mcp.downstream.streamable import StreamableHttpTransport
from crossway.mcp.federation import Federation
from crossway.mcp.hooks import McpHooks
from crossway.mcp.sealing import SessionSealer
from crossway.mcp.store import REVOKED_NAMESPACE, SessionStore
from crossway.mcp.upstream.base import Upstream
from crossway.mcp.upstream.http import StreamableHttpUpstream
from crossway.mcp.upstream.sse import SseUpstream
from crossway.mcp.upstream.stdio import StdioUpstream
from crossway.server.backend import Backend, ErrorResponse, error_headers
from crossway.server.context import RequestContext
from crossway.store.revocations import MemoryRevocations, RevocationStore, build_revocations
from crossway.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

STREAMABLE_PATHS: Final = frozenset({"", "/", "/mcp", "/mcp/"})
SSE_PATHS: Final = frozenset({"/sse", "/sse/"})
MESSAGE_PATHS: Final = frozenset({"/message", "/messages", "/messages/"})


def build_upstreams(cfg: McpBackendConfig) -> dict[str, Upstream]:
    """One `Upstream` per configured server."""
    upstreams: dict[str, Upstream] = {}
    for name, server in cfg.servers.items():
        timeouts = server.timeouts or cfg.timeouts
        if isinstance(server, StdioServerConfig):
            upstreams[name] = StdioUpstream(name, server, timeouts, cfg.max_message_bytes)
        elif isinstance(server, StreamableHttpServerConfig):
            upstreams[name] = StreamableHttpUpstream(name, server, timeouts, cfg.max_message_bytes)
        elif isinstance(server, SseServerConfig):
            upstreams[name] = SseUpstream(name, server, timeouts, cfg.max_message_bytes)
        else:
            from crossway.mcp.openapi import OpenApiUpstream  # type: ignore[import-not-found]

            upstreams[name] = OpenApiUpstream(name, server, timeouts)
    return upstreams


class McpBackend(Backend):
    """Serves MCP clients from many upstream MCP servers."""

    parses = True  # each call runs the route's parsed phase (with `mcp` attributes)

    def __init__(
        self,
        name: str,
        cfg: McpBackendConfig,
        upstreams: dict[str, Upstream],
        hooks: McpHooks | None = None,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.upstreams = upstreams
        self.hooks = hooks or McpHooks()
        self.federation = Federation(cfg, upstreams, self.hooks)
        self.sessions = SessionStore(
            self.federation, session_sealer(name, cfg), session_revocations(name, cfg)
        )
        self.streamable = StreamableHttpTransport(self)
        self.legacy = LegacySseTransport(self)

    @classmethod
    def from_config(cls, name: str, cfg: McpBackendConfig) -> McpBackend:
        """Build the backend (nothing is spawned or connected until `start`)."""
        return cls(name, cfg, build_upstreams(cfg), _hooks_from_config(name, cfg))

    async def start(self) -> None:
        await _hook_lifecycle(self.hooks, "start")
        await asyncio.gather(*(up.start() for up in self.upstreams.values()))
        self.sessions.start()

    async def close(self) -> None:
        await self.legacy.close()
        await self.sessions.close()
        await asyncio.gather(
            *(up.close() for up in self.upstreams.values()), return_exceptions=True
        )
        await _hook_lifecycle(self.hooks, "close")

    def render_error(self, exc: GatewayError, scope: Scope, ctx: RequestContext) -> ErrorResponse:
        """A gateway error (a policy's 401/403, a 413...) as a JSON-RPC error response, with
        the HTTP status and headers (`WWW-Authenticate`) MCP clients act on."""
        body = jsonrpc.dumps(
            {"jsonrpc": jsonrpc.JSONRPC, "id": None, "error": jsonrpc.error_from_exception(exc)}
        )
        headers = [(b"content-type", b"application/json")]
        headers.extend(error_headers(exc))
        return exc.status_code, headers, body

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        path = ctx.path
        if path in STREAMABLE_PATHS:
            await self.streamable(scope, receive, send, ctx)
        elif path in SSE_PATHS:
            await self.legacy.stream(scope, receive, send, ctx)
        elif path in MESSAGE_PATHS:
            await self.legacy.message(scope, receive, send, ctx)
        else:
            await send_json(send, 404, {"error": {"message": f"no MCP endpoint at {path}"}})


def session_sealer(name: str, cfg: McpBackendConfig) -> SessionSealer:
    """The sealer for the configured session keys. A missing or weak key only gets this far on
    a loopback listener (config validation refuses it elsewhere): a random per-process key
    replaces it."""
    keys = cfg.sealing_keys()
    weak = [path for path, secret in keys if weak_key_reason(secret)] or (
        [] if keys else ["session_key"]
    )
    if weak:
        logger.warning(
            "MCP backend %r: %s is missing or weak; the listener is loopback-only, so a random "
            "per-process key seals session ids instead (sessions do not move between processes "
            "or survive a restart)",
            name,
            ", ".join(weak),
        )
        return SessionSealer(None)
    return SessionSealer([secret for _, secret in keys])


_memory_revocations: dict[str, MemoryRevocations] = {}
"""In-memory revocations by backend name, kept across config reloads (a reload must not bring
ended sessions back)."""


def session_revocations(name: str, cfg: McpBackendConfig) -> RevocationStore:
    """Where this backend records ended session ids."""
    if isinstance(cfg.session_store, MemoryStoreConfig):
        return _memory_revocations.setdefault(name, MemoryRevocations())
    return build_revocations(cfg.session_store, REVOKED_NAMESPACE)


def _hooks_from_config(name: str, cfg: McpBackendConfig) -> McpHooks:
    """The hooks the config asks for (tool pinning)."""
    from crossway.mcp.pinning import ToolPinning

    # `auth:` and `authorization:` are migrated into the backend's policies at config load
    # (crossway.config.mcp), so access control runs in the route's policy chain.
    hooks = McpHooks()
    pinning = ToolPinning(cfg.pinning, backend=name)
    if pinning.enabled:
        hooks.pinning = pinning
    return hooks


async def _hook_lifecycle(hooks: McpHooks, method: str) -> None:
    """Start or close the hooks that hold resources (pin store, JWKS client)."""
    for hook in (hooks.pinning,):
        action = getattr(hook, method, None)
        if action is not None:
            await action()


__all__ = ["McpBackend", "NotFound", "build_upstreams"]
