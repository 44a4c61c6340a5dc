"""One downstream MCP session: its upstream sessions, its streams to the client, its caches."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson

from crossway.errors import UpstreamTimeout
from crossway.mcp import jsonrpc
from crossway.mcp.upstream.base import ClientHello, JsonObject, UpstreamRpcError, UpstreamSession

if TYPE_CHECKING:
    from crossway.mcp.federation import Federation

logger = logging.getLogger(__name__)

CLIENT_ANSWER_TIMEOUT: Final = 300.0
MIN_STREAM_BACKLOG: Final = 64
LIST_CHANGED: Final = {
    "notifications/tools/list_changed": "tools/list",
    "notifications/prompts/list_changed": "prompts/list",
    "notifications/resources/list_changed": "resources/list",
}


class ClientChannel(Protocol):
    """Where messages for the client go while one of its requests is in flight."""

    async def send(self, message: JsonObject) -> None:
        """Send a notification or request to the client on this request's stream."""


class EventStream:
    """The session's standalone server-to-client stream (`GET /mcp`, or the legacy SSE stream),
    with a bounded replay buffer for `Last-Event-ID` resumption."""

    def __init__(self, buffer: int) -> None:
        self._seq = itertools.count(1)
        self._buffer: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=buffer)
        self.queue: asyncio.Queue[tuple[int, bytes] | None] | None = None
        self.delivered = 0
        """Id of the last event handed to a listener; later ones wait in the buffer."""

    def push(self, message: JsonObject) -> None:
        event = (next(self._seq), orjson.dumps(message))
        self._buffer.append(event)
        if self.queue is not None:
            if self.queue.qsize() >= max(self._buffer.maxlen or 0, MIN_STREAM_BACKLOG):
                # A listener this far behind is dropped; it can come back with Last-Event-ID.
                self.queue.put_nowait(None)
                self.queue = None
                return
            self.queue.put_nowait(event)

    def replay_after(self, last_id: int) -> list[tuple[int, bytes]]:
        return [event for event in self._buffer if event[0] > last_id]

    def attach(self) -> asyncio.Queue[tuple[int, bytes] | None]:
        """Connect a new listener; an earlier one is told to end (one stream per session)."""
        if self.queue is not None:
            self.queue.put_nowait(None)
        self.queue = asyncio.Queue()
        return self.queue

    def detach(self, queue: asyncio.Queue[tuple[int, bytes] | None]) -> None:
        if self.queue is queue:
            self.queue = None


class Session:
    """State of one downstream session; also the `UpstreamEvents` of its upstream sessions."""

    def __init__(
        self,
        federation: Federation,
        session_id: str | None,
        hello: ClientHello,
        resume: dict[str, str] | None = None,
    ) -> None:
        self.federation = federation
        self.id = session_id
        self.hello = hello
        self.resume = resume or {}
        self.upstreams: dict[str, UpstreamSession] = {}
        self.stream = EventStream(federation.cfg.event_buffer)
        self.cache: dict[tuple[str, str], JsonObject] = {}
        self.known: dict[tuple[str, str], set[Any]] = {}
        self.rewritten: dict[tuple[str, str], tuple[JsonObject, list[JsonObject]]] = {}
        self.usable: dict[tuple[str, str], bool] = {}
        """Pinning verdicts of tools already called in this session (server, name) -> usable."""
        self.inflight: dict[Any, asyncio.Task[Any]] = {}
        self.client_cancelled: set[Any] = set()
        self.last_used = time.monotonic()
        """When a request last touched this session here (monotonic; idle expiry)."""
        self.issued_at = time.time()
        """When `initialize` made this session (Unix time, sealed into its id)."""
        self.subject: str | None = None
        """The caller it was issued to (`crossway.mcp.store.caller_subject`), sealed in too."""
        self.log_level: str | None = None
        self.legacy_sse = False
        self._locks: dict[str, asyncio.Lock] = {}
        self._client_ids = itertools.count(1)
        self._client_waiters: dict[str, asyncio.Future[JsonObject]] = {}
        self.closed = False
        self.listeners: set[Callable[[str, JsonObject], None]] = set()
        """2026-07-28 `subscriptions/listen` streams fed by this session's upstream sessions:
        each gets (server, notification as rewritten for the client)."""
        self.revocation_key: str | None = None
        """The key its id is revoked under (`crossway.mcp.store.revocation_id`), hashed once
        by the store: every request checks it."""

    # -- upstream sessions -------------------------------------------------------------------

    async def upstream(self, server: str) -> UpstreamSession:
        """This session's session with `server`, opened (or re-attached) on first use."""
        current = self.upstreams.get(server)
        if current is not None and current.alive:
            return current
        lock = self._locks.setdefault(server, asyncio.Lock())
        async with lock:
            current = self.upstreams.get(server)
            if current is not None and current.alive:
                return current
            upstream = self.federation.upstreams[server]
            opened = await upstream.open_session(
                self.hello, self, resume=self.resume.pop(server, None)
            )
            self.upstreams[server] = opened
            return opened

    def resume_tokens(self) -> dict[str, str]:
        tokens = dict(self.resume)
        for server, up in self.upstreams.items():
            token = up.resume_token()
            if token is not None:
                tokens[server] = token
        return tokens

    async def close(self) -> None:
        self.closed = True
        if self.stream.queue is not None:
            self.stream.queue.put_nowait(None)
        for task in list(self.inflight.values()):
            task.cancel()
        for waiter in self._client_waiters.values():
            if not waiter.done():
                waiter.set_exception(UpstreamRpcError(jsonrpc.INTERNAL_ERROR, "session closed"))
        ups = list(self.upstreams.values())
        self.upstreams.clear()
        for up in ups:
            try:
                await up.close()
            except Exception:
                logger.debug("closing an upstream session failed", exc_info=True)

    # -- UpstreamEvents ----------------------------------------------------------------------

    def saw_notification(self, server: str, message: JsonObject) -> None:
        """Drop cached lists a `list_changed` notification made stale."""
        method = message.get("method")
        if method in LIST_CHANGED:
            self.cache.pop((server, LIST_CHANGED[method]), None)
            self.known.pop((server, LIST_CHANGED[method]), None)
            if method == "notifications/tools/list_changed":
                self.usable = {k: v for k, v in self.usable.items() if k[0] != server}
            if method == "notifications/resources/list_changed":
                self.cache.pop((server, "resources/templates/list"), None)

    async def on_notification(self, server: str, message: JsonObject) -> None:
        self.saw_notification(server, message)
        outgoing = self.federation.rewrite_server_notification(server, message)
        if outgoing is not None:
            for listener in list(self.listeners):
                listener(server, outgoing)
            self.stream.push(outgoing)

    async def on_request(self, server: str, message: JsonObject) -> JsonObject:
        return await self.ask_client(server, message, None)

    async def on_closed(self, server: str) -> None:
        self.upstreams.pop(server, None)

    # -- server-to-client requests -------------------------------------------------------------

    async def ask_client(
        self, server: str, message: JsonObject, channel: ClientChannel | None
    ) -> JsonObject:
        """Relay a server-to-client request to the client and return its answer's body."""
        method = str(message.get("method"))
        needed = method.split("/", 1)[0]
        if needed in ("sampling", "elicitation", "roots") and needed not in self.hello.capabilities:
            return {
                "error": {
                    "code": jsonrpc.METHOD_NOT_FOUND,
                    "message": f"the client does not support {needed}",
                }
            }
        if self.id is None:
            return {
                "error": {
                    "code": jsonrpc.METHOD_NOT_FOUND,
                    "message": "stateless requests cannot carry server-to-client requests",
                }
            }
        client_id = f"cw-{next(self._client_ids)}"
        outgoing: JsonObject = {"jsonrpc": "2.0", "id": client_id, "method": method}
        if "params" in message:
            outgoing["params"] = message["params"]
        waiter: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._client_waiters[client_id] = waiter
        try:
            if channel is not None:
                await channel.send(outgoing)
            else:
                self.stream.push(outgoing)
            answer = await asyncio.wait_for(waiter, CLIENT_ANSWER_TIMEOUT)
        except TimeoutError:
            raise UpstreamTimeout("the client did not answer in time") from None
        finally:
            self._client_waiters.pop(client_id, None)
        if "error" in answer:
            return {"error": answer["error"]}
        return {"result": answer.get("result", {})}

    def client_answered(self, message: JsonObject) -> bool:
        """A response the client POSTed; True if it answered a relayed request."""
        waiter = self._client_waiters.get(str(message.get("id")))
        if waiter is None or waiter.done():
            return False
        waiter.set_result(message)
        return True
