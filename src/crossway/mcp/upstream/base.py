"""The upstream interface: what the federation layer needs from one MCP server.

Every transport (stdio, Streamable HTTP, legacy SSE, OpenAPI-described REST) implements two
classes:

- `Upstream` — one configured server. Built once per config snapshot, `start()`ed and
  `close()`d with the backend. It hands out `UpstreamSession`s.
- `UpstreamSession` — one live MCP session with that server (one `initialize`). The federation
  layer sends JSON-RPC requests and notifications through it as plain dicts (decoded with
  orjson, never rebuilt into pydantic models), and receives what the server sends on its own
  (notifications, server-to-client requests) through an `UpstreamEvents` sink.

Messages are JSON-RPC 2.0 dicts exactly as they travel on the wire. `request()` returns the
`result` object of the response or raises `UpstreamRpcError` with the server's JSON-RPC error,
`crossway.errors.UpstreamUnreachable` when the server cannot be reached, or
`crossway.errors.UpstreamTimeout` when it did not answer in time.

Sessions are either *shared* (one upstream session serves every downstream session, e.g. one
spawned stdio process) or *per client* (one upstream session per downstream session, living as
long as it, e.g. Streamable HTTP). `Upstream.shared` says which. A shared upstream still
returns one `UpstreamSession` per `open_session` call: a light view over the shared
connection that remembers that client's `UpstreamEvents`, so list_changed and log messages
reach every client and `close()` only detaches the view.

An upstream that cannot push anything (e.g. OpenAPI) may ignore `events` and `RequestOptions`'
callbacks entirely.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

JsonObject = dict[str, Any]
"""A decoded JSON object (a JSON-RPC message, params or result)."""

MessageSink = Callable[[JsonObject], Awaitable[None]]
"""Receives a notification the server sent about one in-flight request (progress, logging)."""

ServerRequestHandler = Callable[[JsonObject], Awaitable[JsonObject]]
"""Answers a server-to-client request (sampling, elicitation, roots): takes the request
message, returns the JSON-RPC response body to send back (``{"result": ...}`` or
``{"error": {...}}``; the id is filled in by the session)."""


class UpstreamRpcError(Exception):
    """The upstream answered a request with a JSON-RPC error; passed on to the client as is."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_error(self) -> JsonObject:
        """The JSON-RPC `error` member."""
        error: JsonObject = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass(slots=True)
class ClientHello:
    """What the downstream client told Crossway in its `initialize` (or per-request `_meta`).

    Per-client upstream sessions pass it on in their own `initialize`, so the upstream knows
    which server-to-client features (sampling, elicitation, roots) the real client supports.
    """

    protocol_version: str
    capabilities: JsonObject = field(default_factory=dict)
    client_info: JsonObject = field(default_factory=lambda: {"name": "crossway", "version": "0"})


@dataclass(slots=True)
class RequestOptions:
    """Per-request knobs the federation layer passes to `UpstreamSession.request`."""

    timeout: float
    """Seconds to wait for the response."""
    on_notification: MessageSink | None = None
    """Receives notifications related to this request (progress, log messages)."""
    on_request: ServerRequestHandler | None = None
    """Answers server-to-client requests related to this request (sampling, elicitation)."""


class UpstreamEvents(Protocol):
    """Where an upstream session delivers what is not tied to one in-flight request."""

    async def on_notification(self, server: str, message: JsonObject) -> None:
        """A notification (`notifications/tools/list_changed`, log messages, resource updates)."""

    async def on_request(self, server: str, message: JsonObject) -> JsonObject:
        """A server-to-client request not tied to a request in flight; returns the response
        body (``{"result": ...}`` or ``{"error": ...}``)."""

    async def on_closed(self, server: str) -> None:
        """The session ended on the upstream's side (process died, stream closed for good)."""


class UpstreamSession(abc.ABC):
    """One live MCP session with one upstream server."""

    server: str
    """Name of the configured server this session belongs to."""
    init_result: JsonObject
    """The upstream's `initialize` result (capabilities, serverInfo, instructions...)."""

    @abc.abstractmethod
    async def request(
        self, method: str, params: JsonObject | None, options: RequestOptions
    ) -> JsonObject:
        """Send a request and return the `result` of its response."""

    @abc.abstractmethod
    async def notify(self, method: str, params: JsonObject | None) -> None:
        """Send a notification (cancellation, roots/list_changed, initialized)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the session (DELETE for HTTP sessions; no-op for a shared stdio session)."""

    @property
    def alive(self) -> bool:
        """False once the session ended and must be opened again."""
        return True

    def resume_token(self) -> str | None:
        """Opaque state another replica can pass to `Upstream.open_session(resume=...)` to
        re-attach to this session (e.g. the upstream's `Mcp-Session-Id`); None if it can't."""
        return None


class Upstream(abc.ABC):
    """One configured upstream MCP server."""

    name: str
    """The server's name in the backend config (also its tool name prefix)."""
    shared: bool = False
    """True if one session serves every downstream session (`open_session` returns it)."""
    list_generation: int = 0
    """A shared upstream bumps this whenever its lists may have changed (list_changed, restart),
    so lists cached across sessions are refreshed even when no session heard about it."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Spawn processes, open pools."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop everything `start` began (kill children, close pools)."""

    async def speaks_modern(self) -> bool:
        """True if this server serves 2026-07-28 requests (no session, per-request `_meta`);
        a 2026-07-28 client's requests are then forwarded in that era. Probed once."""
        return False

    async def modern_request(
        self,
        method: str,
        params: JsonObject,
        options: RequestOptions,
        headers: dict[str, str] | None = None,
    ) -> JsonObject:
        """Send one 2026-07-28 request (`params._meta` carries the client's envelope, `headers`
        the client's `Mcp-Param-*` headers) and return its `result` as is (an input-required
        result included)."""
        raise NotImplementedError

    async def modern_listen(
        self, params: JsonObject, on_notification: MessageSink, acknowledged: Callable[[], None]
    ) -> None:
        """Hold a 2026-07-28 `subscriptions/listen` stream open, handing each notification
        after the acknowledgement to `on_notification`; `acknowledged` is called once the
        server acknowledged. Returns when the stream ends."""
        raise NotImplementedError

    @abc.abstractmethod
    async def open_session(
        self, hello: ClientHello, events: UpstreamEvents, *, resume: str | None = None
    ) -> UpstreamSession:
        """Open (or, with `resume`, re-attach to) a session with this server.

        Raises `crossway.errors.UpstreamUnreachable` / `UpstreamTimeout` when the server is
        down, `UpstreamRpcError` if it refused `initialize`.
        """


__all__ = [
    "ClientHello",
    "JsonObject",
    "MessageSink",
    "RequestOptions",
    "ServerRequestHandler",
    "Upstream",
    "UpstreamEvents",
    "UpstreamRpcError",
    "UpstreamSession",
]
