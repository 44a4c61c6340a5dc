"""Upstream MCP servers speaking Streamable HTTP.

One upstream session per downstream session (`shared = False`), over one pooled aiohttp
client. Each request is a POST whose response is either JSON or an SSE stream carrying the
request's own notifications and server-to-client requests before its result; a GET stream
carries everything else. An expired upstream session (404) is re-initialized once,
transparently. The upstream's `Mcp-Session-Id` is the resume token another replica uses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import re
from collections.abc import Callable
from typing import Any, Final

import aiohttp
import orjson

from crossway.config.mcp import McpTimeouts, StreamableHttpServerConfig
from crossway.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from crossway.mcp import jsonrpc
from crossway.mcp.upstream.base import (
    ClientHello,
    JsonObject,
    MessageSink,
    RequestOptions,
    UpstreamEvents,
    UpstreamRpcError,
    UpstreamSession,
)
from crossway.mcp.upstream.remote import RemoteUpstream
from crossway.mcp.upstream.rpc import initialize_params, with_trace_meta
from crossway.proxy.sse import SSEParser, iter_events
from crossway.telemetry import tracing

logger = logging.getLogger(__name__)

GET_STREAM_RETRIES: Final = 5
DRAIN_SECONDS: Final = 0.5
ACCEPT: Final = "application/json, text/event-stream"
GATEWAY_CLIENT_INFO: Final[JsonObject] = {"name": "crossway", "version": "0.1.0"}
_SESSION_GONE: Final = 404
MODERN_VERSION: Final = "2026-07-28"
PROTOCOL_VERSION_META_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META_KEY: Final = "io.modelcontextprotocol/clientInfo"
NAME_BEARING: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""2026-07-28 methods whose routed name travels in the `Mcp-Name` header too."""
_HEADER_SAFE: Final = re.compile(r"[\x20-\x7e]*")
_B64_SENTINEL: Final = re.compile(r"=\?base64\?.*\?=")


def header_value(value: str) -> str:
    """`value` as an `Mcp-Name` header: verbatim if it is plain printable ASCII, else wrapped
    as `=?base64?...?=` (UTF-8)."""
    if (
        _HEADER_SAFE.fullmatch(value)
        and value == value.strip()
        and not _B64_SENTINEL.fullmatch(value)
    ):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


class _SessionExpired(Exception):
    pass


class StreamableHttpUpstream(RemoteUpstream):
    """A Streamable HTTP MCP server."""

    def __init__(
        self, name: str, cfg: StreamableHttpServerConfig, timeouts: McpTimeouts, max_bytes: int
    ) -> None:
        super().__init__(name, cfg, timeouts, max_bytes)
        self.cfg = cfg
        self._modern: bool | None = None
        self._modern_lock = asyncio.Lock()
        self._modern_session: _HttpSession | None = None

    async def start(self) -> None:
        _ = self.http

    # -- 2026-07-28 -----------------------------------------------------------------------------

    async def speaks_modern(self) -> bool:
        if self._modern is not None:
            return self._modern
        async with self._modern_lock:
            if self._modern is None:
                self._modern = await self._probe_modern()
            return self._modern if self._modern is not None else False

    async def _probe_modern(self) -> bool | None:
        """`server/discover` in 2026-07-28; None (ask again later) if the server is down."""
        envelope = {
            PROTOCOL_VERSION_META_KEY: MODERN_VERSION,
            CLIENT_CAPABILITIES_META_KEY: {},
            CLIENT_INFO_META_KEY: GATEWAY_CLIENT_INFO,
        }
        try:
            result = await self.modern_request(
                "server/discover",
                {"_meta": envelope},
                RequestOptions(timeout=self.timeouts.connect),
            )
        except (UpstreamUnreachable, UpstreamTimeout):
            return None
        except (UpstreamRpcError, GatewayError):
            logger.info("MCP server %s does not speak %s", self.name, MODERN_VERSION)
            return False
        versions = result.get("supportedVersions")
        modern = isinstance(versions, list) and MODERN_VERSION in versions
        logger.info(
            "MCP server %s %s %s",
            self.name,
            "speaks" if modern else "does not speak",
            MODERN_VERSION,
        )
        return modern

    def _modern_exchange(self) -> _HttpSession:
        if self._modern_session is None:
            session = _HttpSession(self, ClientHello(MODERN_VERSION), _NO_EVENTS)
            session.protocol_version = MODERN_VERSION
            self._modern_session = session
        return self._modern_session

    async def modern_request(
        self,
        method: str,
        params: JsonObject,
        options: RequestOptions,
        headers: dict[str, str] | None = None,
    ) -> JsonObject:
        headers = {**(headers or {}), "mcp-method": method}
        name = params.get(NAME_BEARING.get(method, ""))
        if isinstance(name, str):
            headers["mcp-name"] = header_value(name)
        options = RequestOptions(timeout=options.timeout, on_notification=options.on_notification)
        return await self._modern_exchange().post_modern(method, params, options, headers)

    async def modern_listen(
        self, params: JsonObject, on_notification: MessageSink, acknowledged: Callable[[], None]
    ) -> None:
        session = self._modern_exchange()
        session.auth_headers = await self.token_headers()
        headers = session._headers()
        headers["mcp-method"] = "subscriptions/listen"
        message = {
            "jsonrpc": "2.0",
            "id": f"listen-{next(session._ids)}",
            "method": "subscriptions/listen",
            "params": params,
        }
        try:
            async with self.http.post(
                self.cfg.url, data=orjson.dumps(message), headers=headers
            ) as resp:
                if resp.content_type != "text/event-stream" or resp.status >= 400:
                    logger.info(
                        "MCP server %s refused subscriptions/listen (HTTP %s)",
                        self.name,
                        resp.status,
                    )
                    return
                async for event in iter_events(resp.content.iter_any(), self.max_bytes):
                    if event.event != "message" or not event.data:
                        continue
                    try:
                        incoming = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(incoming, dict) or "method" not in incoming:
                        return  # the listen result (graceful end) or an error
                    if incoming["method"] == "notifications/subscriptions/acknowledged":
                        acknowledged()
                    elif "id" not in incoming:
                        await on_notification(incoming)
        except (aiohttp.ClientError, OSError) as exc:
            logger.debug("MCP server %s: listen stream ended: %s", self.name, exc)

    async def open_session(
        self, hello: ClientHello, events: UpstreamEvents, *, resume: str | None = None
    ) -> UpstreamSession:
        session = _HttpSession(self, hello, events)
        if resume is not None and session.restore(resume):
            return session
        await session.initialize()
        return session


class _HttpSession(UpstreamSession):
    def __init__(
        self, upstream: StreamableHttpUpstream, hello: ClientHello, events: UpstreamEvents
    ):
        self.server = upstream.name
        self.upstream = upstream
        self.hello = hello
        self.events = events
        self.init_result: JsonObject = {}
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._ids = itertools.count(1)
        self._closed = False
        self._get_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.auth_headers: dict[str, str] = {}
        self._plain_headers: dict[str, str] | None = None
        self._plain_for: tuple[str | None, str | None] = (None, None)

    # -- lifecycle ------------------------------------------------------------------------------

    def restore(self, token: str) -> bool:
        try:
            state = orjson.loads(token)
            self.session_id = str(state["s"]) if state.get("s") else None
            self.protocol_version = str(state["v"])
            self.init_result = {
                "protocolVersion": self.protocol_version,
                "capabilities": {k: {} for k in state.get("k", ())},
            }
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return False
        self._start_get_stream()
        return True

    def resume_token(self) -> str | None:
        if self.protocol_version is None:
            return None
        caps = self.init_result.get("capabilities")
        keys = sorted(caps) if isinstance(caps, dict) else []
        return orjson.dumps({"s": self.session_id, "v": self.protocol_version, "k": keys}).decode()

    async def initialize(self) -> None:
        self.session_id = None
        self.protocol_version = None
        params = initialize_params(
            self.hello.protocol_version
            if self.hello.protocol_version.startswith("2025")
            else "2025-11-25",
            self.hello.capabilities,
            GATEWAY_CLIENT_INFO | {"name": f"crossway/{self.hello.client_info.get('name', '?')}"},
        )
        result = await self._post_request(
            "initialize", params, RequestOptions(timeout=self.upstream.timeouts.connect)
        )
        self.init_result = result
        version = result.get("protocolVersion")
        self.protocol_version = version if isinstance(version, str) else "2025-06-18"
        await self.notify("notifications/initialized", None)
        self._start_get_stream()

    async def close(self) -> None:
        self._closed = True
        if self._get_task is not None:
            self._get_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.session_id is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.upstream.timeouts.connect):
                    async with self.upstream.http.delete(
                        self.upstream.cfg.url, headers=self._headers()
                    ):
                        pass

    @property
    def alive(self) -> bool:
        return not self._closed

    # -- requests -------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {
            "accept": ACCEPT,
            "content-type": "application/json",
            **self.upstream.headers,
            **self.auth_headers,
        }
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        if self.protocol_version is not None:
            headers["mcp-protocol-version"] = self.protocol_version
        return headers

    def _post_headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The headers of a POST: without credentials or `extra`, one dict per session id and
        protocol version, made once (the client copies it). Never mutate the result."""
        if self.auth_headers or extra:
            headers = self._headers()
            if extra:
                headers.update(extra)
            return headers
        key = (self.session_id, self.protocol_version)
        if self._plain_headers is None or self._plain_for != key:
            self._plain_headers = self._headers()
            self._plain_for = key
        return self._plain_headers

    async def request(
        self, method: str, params: JsonObject | None, options: RequestOptions
    ) -> JsonObject:
        try:
            return await self._post_request(method, params, options)
        except _SessionExpired:
            logger.info("MCP server %s forgot our session; initializing again", self.server)
            await self.initialize()
            try:
                return await self._post_request(method, params, options)
            except _SessionExpired:
                raise UpstreamError(
                    f"MCP server {self.server!r} keeps losing its session"
                ) from None

    async def notify(self, method: str, params: JsonObject | None) -> None:
        message: JsonObject = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._post_plain(message)

    async def _post_plain(self, message: JsonObject) -> None:
        """POST a notification or response (answered with 202)."""
        try:
            self.auth_headers = await self.upstream.token_headers()
            async with asyncio.timeout(self.upstream.timeouts.connect):
                async with self.upstream.http.post(
                    self.upstream.cfg.url, data=orjson.dumps(message), headers=self._post_headers()
                ) as resp:
                    await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.debug("MCP server %s: posting a message failed: %s", self.server, exc)

    async def post_modern(
        self,
        method: str,
        params: JsonObject,
        options: RequestOptions,
        headers: dict[str, str],
    ) -> JsonObject:
        """One 2026-07-28 request: no session; closing the response cancels it upstream."""
        return await self._post_request(method, params, options, headers)

    async def _post_request(
        self,
        method: str,
        params: JsonObject | None,
        options: RequestOptions,
        modern_headers: dict[str, str] | None = None,
    ) -> JsonObject:
        request_id = next(self._ids)
        message: JsonObject = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if tracing.enabled():
            # In `_meta` too (the headers carry it as well): a server that reads it there
            # must not see a context the client forwarded instead of Crossway's own.
            params = with_trace_meta(params)
        if params is not None:
            message["params"] = params
        self.auth_headers = await self.upstream.token_headers()
        try:
            async with asyncio.timeout(options.timeout):
                return await self._exchange(request_id, message, options, modern_headers)
        except TimeoutError:
            if modern_headers is None:
                self._spawn(self._cancel(request_id, "timed out"))
            raise UpstreamTimeout(
                f"MCP server {self.server!r} did not answer {method} within {options.timeout:g}s"
            ) from None
        except asyncio.CancelledError:
            if modern_headers is None:
                self._spawn(self._cancel(request_id, "cancelled by the client"))
            raise
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise UpstreamUnreachable(f"MCP server {self.server!r} is unreachable: {exc}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"MCP server {self.server!r} failed: {exc}") from None

    async def _exchange(
        self,
        request_id: int,
        message: JsonObject,
        options: RequestOptions,
        extra_headers: dict[str, str] | None = None,
    ) -> JsonObject:
        upstream = self.upstream
        resp = await upstream.http.post(
            upstream.cfg.url, data=orjson.dumps(message), headers=self._post_headers(extra_headers)
        )
        handed_off = False
        try:
            if message["method"] == "initialize":
                sid = resp.headers.get("mcp-session-id")
                if sid:
                    self.session_id = sid
            if resp.status == _SESSION_GONE and self.session_id is not None:
                raise _SessionExpired
            if resp.content_type == "text/event-stream" and resp.status < 400:
                # The parser is fed chunk by chunk in this frame (no async generator per call).
                parser = SSEParser(upstream.max_bytes)
                content = resp.content
                while True:
                    chunk = await content.readany()
                    events = parser.feed_events(chunk) if chunk else parser.close_events()
                    for event in events:
                        if event.event != "message" or not event.data:
                            continue
                        try:
                            incoming = orjson.loads(event.data)
                        except orjson.JSONDecodeError:
                            logger.warning("MCP server %s sent a non-JSON event", self.server)
                            continue
                        if not isinstance(incoming, dict):
                            continue
                        if incoming.get("id") == request_id and "method" not in incoming:
                            if not content.at_eof():
                                # Answer now; let the stream finish in the background so
                                # the connection can be reused.
                                self._spawn(_drain(resp))
                                handed_off = True
                            return _result_of(incoming)
                        await self._incoming(incoming, options)
                    if not chunk:
                        break
                raise UpstreamError(f"MCP server {self.server!r} ended the stream without a result")
            body = await _read_limited(resp, upstream.max_bytes)
            if body is None:
                raise UpstreamError(
                    f"MCP server {self.server!r} sent a response over the size limit"
                )
            try:
                reply = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                reply = None
            if isinstance(reply, dict) and ("result" in reply or "error" in reply):
                return _result_of(reply)
            raise UpstreamError(
                f"MCP server {self.server!r} answered HTTP {resp.status} without a JSON-RPC response"
            )
        finally:
            if not handed_off:
                resp.release()

    async def _incoming(self, message: JsonObject, options: RequestOptions | None) -> None:
        """A message from the server other than the awaited response."""
        if "method" not in message:
            return
        if "id" in message:
            handler = options.on_request if options is not None else None
            self._spawn(self._answer(message, handler))
        elif options is not None and options.on_notification is not None:
            await options.on_notification(message)
        else:
            await self.events.on_notification(self.server, message)

    async def _answer(self, message: JsonObject, handler: Any) -> None:
        try:
            if handler is not None:
                body = await handler(message)
            else:
                body = await self.events.on_request(self.server, message)
        except UpstreamRpcError as exc:
            body = {"error": exc.to_error()}
        except Exception as exc:
            body = {"error": jsonrpc.error_from_exception(exc)}
        await self._post_plain({"jsonrpc": "2.0", "id": message["id"], **body})

    async def _cancel(self, request_id: int, reason: str) -> None:
        await self.notify("notifications/cancelled", {"requestId": request_id, "reason": reason})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the GET stream -------------------------------------------------------------------------

    def _start_get_stream(self) -> None:
        if self._get_task is None or self._get_task.done():
            self._get_task = asyncio.get_running_loop().create_task(self._get_stream())

    async def _get_stream(self) -> None:
        last_event_id: str | None = None
        failures = 0
        while not self._closed and failures < GET_STREAM_RETRIES:
            try:
                self.auth_headers = await self.upstream.token_headers()
            except GatewayError as exc:
                logger.warning("MCP server %s: %s", self.server, exc.message)
                return
            headers = self._headers()
            headers["accept"] = "text/event-stream"
            headers.pop("content-type", None)
            if last_event_id is not None:
                headers["last-event-id"] = last_event_id
            try:
                async with self.upstream.http.get(self.upstream.cfg.url, headers=headers) as resp:
                    if resp.status != 200 or resp.content_type != "text/event-stream":
                        return  # the server offers no standalone stream (405) or has one (409)
                    failures = 0
                    async for event in iter_events(
                        resp.content.iter_any(), self.upstream.max_bytes
                    ):
                        if event.id is not None:
                            last_event_id = event.id
                        if event.event != "message" or not event.data:
                            continue
                        with contextlib.suppress(orjson.JSONDecodeError):
                            incoming = orjson.loads(event.data)
                            if isinstance(incoming, dict):
                                await self._incoming(incoming, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("MCP server %s: GET stream ended: %s", self.server, exc)
            failures += 1
            await asyncio.sleep(min(0.2 * 2**failures, 5.0))


class _NoEvents:
    """The sink of the 2026-07-28 exchange: nothing arrives outside a request's own stream."""

    async def on_notification(self, server: str, message: JsonObject) -> None:
        return None

    async def on_request(self, server: str, message: JsonObject) -> JsonObject:
        return {"error": {"code": jsonrpc.METHOD_NOT_FOUND, "message": "no back channel"}}

    async def on_closed(self, server: str) -> None:
        return None


_NO_EVENTS: Final = _NoEvents()


async def _drain(resp: aiohttp.ClientResponse) -> None:
    """Read what follows the result (servers close the stream right after it), so the
    connection goes back to the pool instead of being closed."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while await resp.content.readany():
                pass
        resp.release()
    except (TimeoutError, aiohttp.ClientError, OSError):
        resp.close()


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.readany():
        size += len(chunk)
        if size > limit:
            resp.close()
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _result_of(reply: JsonObject) -> JsonObject:
    if "error" in reply:
        error = reply["error"] if isinstance(reply["error"], dict) else {}
        raise UpstreamRpcError(
            int(error.get("code", jsonrpc.INTERNAL_ERROR)),
            str(error.get("message", "error")),
            error.get("data"),
        )
    result = reply.get("result")
    return result if isinstance(result, dict) else {}
