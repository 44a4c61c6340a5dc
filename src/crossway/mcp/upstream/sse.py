"""Upstream MCP servers speaking the legacy HTTP+SSE transport.

One upstream session per downstream session: `GET <url>` opens the stream, whose first
`endpoint` event names where to POST messages; every response and server message arrives on
the stream. The stream lives on one replica, so another replica opens a new session rather
than re-attaching.

The announced endpoint must be on the stream's own origin (scheme, host and port), as the
`mcp` SDK's client requires: messages carry this server's credentials, so an endpoint
elsewhere fails the connection before anything is posted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from crossway.config.mcp import McpTimeouts, SseServerConfig
from crossway.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from crossway.mcp.upstream.base import (
    ClientHello,
    JsonObject,
    RequestOptions,
    UpstreamEvents,
    UpstreamSession,
)
from crossway.mcp.upstream.remote import RemoteUpstream
from crossway.mcp.upstream.rpc import RpcPeer, initialize_params
from crossway.proxy.outbound import same_origin
from crossway.proxy.sse import iter_events

logger = logging.getLogger(__name__)


class SseUpstream(RemoteUpstream):
    """A legacy HTTP+SSE MCP server."""

    def __init__(self, name: str, cfg: SseServerConfig, timeouts: McpTimeouts, max_bytes: int):
        super().__init__(name, cfg, timeouts, max_bytes)
        self.cfg = cfg

    async def open_session(
        self, hello: ClientHello, events: UpstreamEvents, *, resume: str | None = None
    ) -> UpstreamSession:
        session = _SseSession(self, events)
        try:
            async with asyncio.timeout(self.timeouts.connect):
                await session.connect()
                session.init_result = await session.peer.request(
                    "initialize",
                    initialize_params(
                        hello.protocol_version if hello.protocol_version else "2024-11-05",
                        hello.capabilities,
                        {
                            "name": f"crossway/{hello.client_info.get('name', '?')}",
                            "version": "0.1.0",
                        },
                    ),
                    RequestOptions(timeout=self.timeouts.connect),
                )
        except TimeoutError:
            await session.close()
            raise UpstreamTimeout(f"MCP server {self.name!r} did not connect in time") from None
        except BaseException:
            await session.close()
            raise
        await session.peer.notify("notifications/initialized", None)
        return session


class _ForeignEndpoint(UpstreamUnreachable):
    """The server announced a message endpoint on another origin."""


class _SsePeer(RpcPeer):
    def __init__(self, session: _SseSession) -> None:
        super().__init__(session.server)
        self.session = session

    async def write(self, message: JsonObject) -> None:
        await self.session.post(message)

    async def unrelated_notification(self, message: JsonObject) -> None:
        await self.session.events.on_notification(self.server, message)

    async def unrelated_request(self, message: JsonObject) -> JsonObject:
        return await self.session.events.on_request(self.server, message)


class _SseSession(UpstreamSession):
    def __init__(self, upstream: SseUpstream, events: UpstreamEvents) -> None:
        self.server = upstream.name
        self.upstream = upstream
        self.events = events
        self.init_result: JsonObject = {}
        self.peer = _SsePeer(self)
        self.endpoint: str | None = None
        self._endpoint_ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def connect(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())
        waiter = asyncio.get_running_loop().create_task(self._endpoint_ready.wait())
        done, _ = await asyncio.wait({waiter, self._reader}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            exc = self._reader.exception() if self._reader.done() else None
            if isinstance(exc, _ForeignEndpoint):
                raise UpstreamUnreachable(exc.message) from None
            raise UpstreamUnreachable(f"MCP server {self.server!r}: SSE stream failed: {exc}")

    async def _read(self) -> None:
        upstream = self.upstream
        headers = {"accept": "text/event-stream", **upstream.headers}
        headers.update(await upstream.token_headers())
        try:
            async with upstream.http.get(upstream.cfg.url, headers=headers) as resp:
                if resp.status != 200:
                    raise UpstreamUnreachable(f"HTTP {resp.status}")
                async for event in iter_events(resp.content.iter_any(), upstream.max_bytes):
                    if event.event == "endpoint":
                        endpoint = urljoin(
                            upstream.cfg.url, event.data.decode("utf-8", "replace").strip()
                        )
                        if not same_origin(endpoint, upstream.cfg.url):
                            logger.warning(
                                "MCP server %s announced a message endpoint on another origin "
                                "(%s); connection refused",
                                self.server,
                                _origin_of(endpoint),
                            )
                            raise _ForeignEndpoint(
                                f"MCP server {self.server!r} announced a message endpoint on "
                                f"another origin ({_origin_of(endpoint)}); nothing was sent there"
                            )
                        self.endpoint = endpoint
                        self._endpoint_ready.set()
                    elif event.event == "message" and event.data:
                        try:
                            message = orjson.loads(event.data)
                        except orjson.JSONDecodeError:
                            logger.warning("MCP server %s sent a non-JSON event", self.server)
                            continue
                        self.peer.dispatch(message)
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable(str(exc)) from None
        finally:
            self._closed = True
            self.peer.fail_all(UpstreamUnreachable(f"MCP server {self.server!r}: stream ended"))
            if self._endpoint_ready.is_set():
                with contextlib.suppress(Exception):
                    await self.events.on_closed(self.server)

    async def post(self, message: JsonObject) -> None:
        if self.endpoint is None:
            raise UpstreamUnreachable(f"MCP server {self.server!r} is not connected")
        auth = await self.upstream.token_headers()
        try:
            async with self.upstream.http.post(
                self.endpoint,
                data=orjson.dumps(message),
                headers={"content-type": "application/json", **self.upstream.headers, **auth},
            ) as resp:
                await resp.read()
                if resp.status >= 400:
                    raise UpstreamError(
                        f"MCP server {self.server!r} refused a message: HTTP {resp.status}"
                    )
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable(f"MCP server {self.server!r} is unreachable: {exc}") from None

    async def request(
        self, method: str, params: JsonObject | None, options: RequestOptions
    ) -> JsonObject:
        return await self.peer.request(method, params, options)

    async def notify(self, method: str, params: JsonObject | None) -> None:
        await self.peer.notify(method, params)

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader

    @property
    def alive(self) -> bool:
        return not self._closed


def _origin_of(url: str) -> str:
    """`scheme://host:port` of a URL, for messages that must not carry its path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
