"""MCP Streamable HTTP for clients, both protocol eras.

- 2025-06-18 / 2025-11-25 (and older handshake revisions): `initialize` makes a session whose
  sealed id comes back in `Mcp-Session-Id`; POST carries one message; a request is answered
  with plain JSON unless something must reach the client before its result (progress, log
  messages, sampling), in which case the response turns into an SSE stream on the spot. GET
  opens the session's standalone stream (resumable with `Last-Event-ID`); DELETE ends the
  session.
- 2026-07-28: no session; every request names its protocol version and the client's
  capabilities in `params._meta` (and the `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`
  headers, which must agree with the body).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import orjson

from crossway.errors import BadRequest, GatewayError, NotFound
from crossway.mcp import jsonrpc
from crossway.mcp.downstream.http import SSE_HEADERS, send_empty, send_json, sse_event
from crossway.mcp.federation import HANDSHAKE_VERSIONS, LATEST_HANDSHAKE, MODERN_VERSIONS, Call
from crossway.mcp.session import Session
from crossway.mcp.store import caller_subject
from crossway.mcp.upstream.base import ClientHello, JsonObject
from crossway.server import lifecycle
from crossway.server.asgi import header_text as header
from crossway.server.asgi import read_body
from crossway.server.context import RequestContext
from crossway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from crossway.mcp.backend import McpBackend

logger = logging.getLogger(__name__)

SESSION_HEADER: Final = b"mcp-session-id"
VERSION_HEADER: Final = b"mcp-protocol-version"
METHOD_HEADER: Final = b"mcp-method"
NAME_HEADER: Final = b"mcp-name"
PARAM_HEADER_PREFIX: Final = b"mcp-param-"
PROTOCOL_VERSION_META_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META_KEY: Final = "io.modelcontextprotocol/clientInfo"
KEEPALIVE_SECONDS: Final = 15.0
UNKNOWN_SESSION: Final = "unknown or expired session"
"""The one answer for a session id that does not work, whatever the reason."""
DISCONNECT_WATCH_AFTER: Final = 0.5
"""Seconds a call runs before Crossway starts watching for its client to disconnect."""
MODERN_ERROR_STATUS: Final = {
    jsonrpc.PARSE_ERROR: 400,
    jsonrpc.INVALID_REQUEST: 400,
    jsonrpc.INVALID_PARAMS: 400,
    jsonrpc.HEADER_MISMATCH: 400,
    jsonrpc.MISSING_CLIENT_CAPABILITY: 400,
    jsonrpc.UNSUPPORTED_PROTOCOL_VERSION: 400,
    jsonrpc.METHOD_NOT_FOUND: 404,
}
"""HTTP status of a 2026-07-28 error response, by JSON-RPC code (others get 200)."""
REMOVED_IN_MODERN: Final = frozenset(
    {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)
LOG_LEVEL_META_KEY: Final = "io.modelcontextprotocol/logLevel"
SUBSCRIPTION_ID_META_KEY: Final = "io.modelcontextprotocol/subscriptionId"
LISTEN_FLAGS: Final = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}
"""Listen-stream notification -> the filter flag that opts in to it."""
LISTEN_BACKLOG: Final = 1024
"""Notifications a listen stream may fall behind by before it is ended."""
LOG_LEVELS: Final = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)
_CACHEABLE: Final = frozenset(
    {
        "server/discover",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
    }
)
NAME_BEARING: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""2026-07-28 methods whose name or URI must also travel in the `Mcp-Name` header."""


class _ResponseChannel:
    """Messages for the client while one POST is in flight: the first one turns the response
    into an SSE stream."""

    __slots__ = ("_lock", "_send", "closed", "min_log_level", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = asyncio.Lock()
        self.started = False
        self.closed = False
        self.min_log_level: int | None = -1
        """Log messages below this level index are dropped; None drops them all (2026-07-28
        clients opt in per request); -1 passes everything."""

    async def send(self, message: JsonObject) -> None:
        if message.get("method") == "notifications/message" and self.min_log_level != -1:
            params = message.get("params")
            level = params.get("level") if isinstance(params, dict) else None
            if (
                self.min_log_level is None
                or level not in LOG_LEVELS
                or LOG_LEVELS.index(level) < self.min_log_level
            ):
                return
        async with self._lock:
            if self.closed:
                return
            if not self.started:
                await self._send(
                    {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
                )
                self.started = True
            await self._send(
                {
                    "type": "http.response.body",
                    "body": sse_event(orjson.dumps(message)),
                    "more_body": True,
                }
            )

    async def finish(
        self, message: JsonObject, extra_headers: list[tuple[bytes, bytes]], status: int = 200
    ) -> None:
        async with self._lock:
            self.closed = True
            if self.started:
                await self._send(
                    {"type": "http.response.body", "body": sse_event(orjson.dumps(message))}
                )
            else:
                await send_json(self._send, status, message, extra_headers)


class StreamableHttpTransport:
    """Serves `/mcp`."""

    def __init__(self, backend: McpBackend) -> None:
        self.backend = backend

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send, ctx)
        elif method == "GET":
            await self._get(scope, receive, send, ctx)
        elif method == "DELETE":
            await self._delete(scope, send, ctx)
        else:
            await send_empty(send, 405, [(b"allow", b"GET, POST, DELETE")])

    # -- POST ---------------------------------------------------------------------------------

    async def _post(self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext) -> None:
        # A refused body (413, 400) is rendered by the backend's `render_error`, as JSON-RPC.
        body = await read_body(scope, receive, _limit(self.backend.cfg.max_message_bytes, ctx))
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            await _error(send, 400, None, jsonrpc.PARSE_ERROR, "parse error: body is not JSON")
            return
        if isinstance(message, list):
            await _error(
                send, 400, None, jsonrpc.INVALID_REQUEST, "JSON-RPC batches are not supported"
            )
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            await _error(send, 400, None, jsonrpc.INVALID_REQUEST, "not a JSON-RPC 2.0 message")
            return
        request_id = message.get("id")
        method = message.get("method")
        if method is not None and not isinstance(method, str):
            await _error(send, 400, request_id, jsonrpc.INVALID_REQUEST, "method must be a string")
            return
        if request_id is not None and not isinstance(request_id, (str, int)):
            await _error(send, 400, None, jsonrpc.INVALID_REQUEST, "id must be a string or number")
            return

        session_id = header(scope, SESSION_HEADER)
        modern = session_id is None and self._is_modern(scope, message)
        if method == "initialize" and not modern:
            await self._initialize(send, message, ctx)
            return
        if modern:
            await self._modern(scope, send, message, ctx, receive)
            return
        if session_id is None:
            await _error(
                send, 400, request_id, jsonrpc.INVALID_REQUEST, "missing Mcp-Session-Id header"
            )
            return
        session = await self._session(send, session_id, ctx, request_id)
        if session is None:
            return

        if method is None:
            if request_id is not None and ("result" in message or "error" in message):
                session.client_answered(message)
                await send_empty(send, 202)
            else:
                await _error(send, 400, None, jsonrpc.INVALID_REQUEST, "invalid JSON-RPC message")
            return
        if request_id is None:
            await self.backend.federation.notification(session, message)
            await send_empty(send, 202)
            return
        await self._serve(session, message, ctx, send, receive=receive)

    async def _serve(
        self,
        session: Session,
        message: JsonObject,
        ctx: RequestContext,
        send: Send,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        modern: bool = False,
        log_level: str | None = None,
        receive: Receive | None = None,
        meta: JsonObject | None = None,
        param_headers: dict[str, str] | None = None,
    ) -> None:
        """Answer one request, as JSON or as an SSE stream if messages precede the result."""
        request_id = message["id"]
        channel = _ResponseChannel(send)
        if modern:
            channel.min_log_level = LOG_LEVELS.index(log_level) if log_level else None
        task = asyncio.current_task()
        assert task is not None
        if not modern:  # 2026-07-28 ids are not unique across clients; they cancel by closing
            session.inflight[request_id] = task
        # A call still running after a moment starts watching for the client leaving, which
        # cancels it upstream; quick calls never pay for a watcher task.
        gone: list[bool] = []
        watcher: list[asyncio.Task[None]] = []
        timer = (
            asyncio.get_running_loop().call_later(
                DISCONNECT_WATCH_AFTER,
                lambda: watcher.append(
                    asyncio.get_running_loop().create_task(
                        _cancel_on_disconnect(receive, task, gone)
                    )
                ),
            )
            if receive is not None
            else None
        )
        try:
            result = await self.backend.federation.handle(
                session, message, Call(request_id, ctx.identity, channel, meta, param_headers, ctx)
            )
            if modern:
                result = _modern_result(message["method"], result)
            reply = jsonrpc.response(request_id, result)
        except asyncio.CancelledError:
            if gone:
                task.uncancel()
                if not modern:
                    session.inflight.pop(request_id, None)
                return  # nobody to answer
            if request_id not in session.client_cancelled:
                raise
            session.client_cancelled.discard(request_id)
            task.uncancel()
            reply = jsonrpc.error_response(
                request_id, jsonrpc.REQUEST_CANCELLED, "request cancelled"
            )
        except Exception as exc:
            if not isinstance(exc, GatewayError | jsonrpc.UpstreamRpcError):
                logger.exception("MCP request %s failed", message.get("method"))
            error = jsonrpc.error_from_exception(exc)
            reply = {"jsonrpc": "2.0", "id": request_id, "error": error}
        finally:
            if timer is not None:
                timer.cancel()
            for watching in watcher:
                watching.cancel()
            if not modern:
                session.inflight.pop(request_id, None)
            session.last_used = time.monotonic()
        status = 200
        if modern and "error" in reply:
            status = MODERN_ERROR_STATUS.get(reply["error"].get("code"), 200)
        try:
            await channel.finish(reply, headers or [], status)
        except OSError:
            logger.debug("client went away before the response")

    async def _session(
        self, send: Send, session_id: str, ctx: RequestContext, request_id: Any = None
    ) -> Session | None:
        """The caller's live session `session_id`, or None once a 404 (unknown, expired,
        ended or another caller's: the answer does not say which) or 503 has been sent."""
        try:
            session = await self.backend.sessions.get(session_id, caller_subject(ctx))
        except GatewayError as exc:
            await _error(send, exc.status_code, request_id, jsonrpc.INTERNAL_ERROR, exc.message)
            return None
        if session is None:
            await _error(send, 404, request_id, jsonrpc.INVALID_REQUEST, UNKNOWN_SESSION)
        return session

    async def _initialize(self, send: Send, message: JsonObject, ctx: RequestContext) -> None:
        request_id = message.get("id")
        params = message.get("params")
        if request_id is None or not isinstance(params, dict):
            await _error(send, 400, request_id, jsonrpc.INVALID_PARAMS, "initialize needs params")
            return
        requested = params.get("protocolVersion")
        version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
        caps = params.get("capabilities")
        info = params.get("clientInfo")
        hello = ClientHello(
            protocol_version=version,
            capabilities=caps if isinstance(caps, dict) else {},
            client_info=info if isinstance(info, dict) else {"name": "unknown", "version": "0"},
        )
        try:
            session = await self.backend.sessions.create(hello, caller_subject(ctx))
        except GatewayError as exc:
            status = exc.status_code if exc.status_code >= 500 else 400
            error = jsonrpc.error_from_exception(exc)
            await send_json(send, status, {"jsonrpc": "2.0", "id": request_id, "error": error})
            return
        result = self.backend.federation.initialize_result(session, version)
        assert session.id is not None
        await send_json(
            send,
            200,
            jsonrpc.response(request_id, result),
            [(SESSION_HEADER, session.id.encode())],
        )

    # -- 2026-07-28 -----------------------------------------------------------------------------

    @staticmethod
    def _is_modern(scope: Scope, message: JsonObject) -> bool:
        if header(scope, VERSION_HEADER) in MODERN_VERSIONS:
            return True
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        return isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta

    async def _modern(
        self,
        scope: Scope,
        send: Send,
        message: JsonObject,
        ctx: RequestContext,
        receive: Receive | None = None,
    ) -> None:
        request_id = message.get("id")
        method = message.get("method")
        if method is None or request_id is None:
            await send_empty(send, 202)  # notifications carry nothing to act on in this era
            return
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        missing = [
            key
            for key in (PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY)
            if not isinstance(meta, dict) or key not in meta
        ]
        if missing or not isinstance(meta, dict):
            await _error(
                send,
                400,
                request_id,
                jsonrpc.INVALID_PARAMS,
                f"params._meta must carry {', '.join(missing)}",
            )
            return
        version = meta[PROTOCOL_VERSION_META_KEY]
        assert isinstance(params, dict)
        mismatch = _header_mismatch(scope, str(method), params, version)
        if mismatch is not None:
            await _error(send, 400, request_id, jsonrpc.HEADER_MISMATCH, mismatch)
            return
        if version not in MODERN_VERSIONS:
            await send_json(
                send,
                400,
                jsonrpc.error_response(
                    request_id,
                    jsonrpc.UNSUPPORTED_PROTOCOL_VERSION,
                    "unsupported protocol version",
                    {"supported": [*MODERN_VERSIONS], "requested": version},
                ),
            )
            return
        if method == "subscriptions/listen" and receive is not None:
            assert isinstance(params, dict)
            await self._listen(scope, receive, send, request_id, params, meta, ctx)
            return
        if method in REMOVED_IN_MODERN:
            await _error(
                send,
                404,
                request_id,
                jsonrpc.METHOD_NOT_FOUND,
                f"{method} is not part of {version}",
            )
            return
        assert isinstance(params, dict)
        stripped = {k: v for k, v in meta.items() if not k.startswith("io.modelcontextprotocol/")}
        forwarded_params = (
            {**params, "_meta": stripped}
            if stripped
            else {k: v for k, v in params.items() if k != "_meta"}
        )
        session = self.backend.sessions.stateless(meta)
        level = meta.get(LOG_LEVEL_META_KEY)
        await self._serve(
            session,
            {**message, "params": forwarded_params},
            ctx,
            send,
            modern=True,
            log_level=level if level in LOG_LEVELS else None,
            receive=receive,
            meta=meta,
            param_headers={
                bytes(k).decode("latin-1"): bytes(v).decode("latin-1")
                for k, v in scope["headers"]
                if bytes(k).startswith(PARAM_HEADER_PREFIX)
            }
            or None,
        )

    async def _listen(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: Any,
        params: JsonObject,
        meta: JsonObject,
        ctx: RequestContext,
    ) -> None:
        """`subscriptions/listen`: the response is a stream of the notifications the client
        opted in to, from every server, each tagged with this request's id; the
        acknowledgement comes first, once the servers' own streams are open."""
        requested = params.get("notifications")
        if not isinstance(requested, dict):
            await _error(
                send, 400, request_id, jsonrpc.INVALID_PARAMS, "params.notifications is required"
            )
            return
        if "text/event-stream" not in (header(scope, b"accept") or ""):
            await send_empty(send, 406)
            return
        honored = _honored_filter(requested)
        uris = honored.get("resourceSubscriptions")
        if uris:
            # Only resources the caller may read can be subscribed to (the route's policies).
            visible = self.backend.federation.visible_resources(ctx, uris)
            if visible:
                honored["resourceSubscriptions"] = visible
            else:
                del honored["resourceSubscriptions"]
        tag = {SUBSCRIPTION_ID_META_KEY: request_id}
        wanted_uris = frozenset(honored.get("resourceSubscriptions", ()))
        queue: asyncio.Queue[JsonObject | None] = asyncio.Queue()

        def deliver(server: str, message: JsonObject) -> None:
            method = message.get("method")
            params = message.get("params")
            params = params if isinstance(params, dict) else {}
            if method == "notifications/resources/updated":
                if params.get("uri") not in wanted_uris:
                    return
            elif honored.get(LISTEN_FLAGS.get(str(method), "")) is not True:
                return
            if queue.qsize() >= LISTEN_BACKLOG:
                queue.put_nowait(None)  # a client this far behind listens again
                return
            upstream_meta = params.get("_meta")
            own_meta = {
                k: v
                for k, v in (upstream_meta.items() if isinstance(upstream_meta, dict) else ())
                if k != SUBSCRIPTION_ID_META_KEY
            }
            queue.put_nowait({**message, "params": {**params, "_meta": {**own_meta, **tag}}})

        session = self.backend.sessions.stateless(meta)
        stop = await self.backend.federation.listen(
            session, honored, meta, deliver, lambda: queue.put_nowait(None)
        )
        ack = {
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": honored, "_meta": tag},
        }

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.append(True)
            queue.put_nowait(None)

        gone: list[bool] = []
        watcher = asyncio.get_running_loop().create_task(watch_disconnect())
        undo_shutdown = lifecycle.on_shutdown(lambda: queue.put_nowait(None))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send(
                {
                    "type": "http.response.body",
                    "body": sse_event(orjson.dumps(ack)),
                    "more_body": True,
                }
            )
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await send(
                        {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}
                    )
                    continue
                if item is None:
                    break
                body = sse_event(orjson.dumps(item))
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if not gone:  # a graceful end: the listen result closes the stream
                final = jsonrpc.response(request_id, {"_meta": tag, "resultType": "complete"})
                await send({"type": "http.response.body", "body": sse_event(orjson.dumps(final))})
        except OSError:
            pass
        finally:
            stop()
            undo_shutdown()
            watcher.cancel()

    # -- GET / DELETE -------------------------------------------------------------------------

    async def _get(self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext) -> None:
        session_id = header(scope, SESSION_HEADER)
        accept = header(scope, b"accept") or ""
        if "text/event-stream" not in accept:
            await send_empty(send, 406)
            return
        if session_id is None:
            await send_empty(send, 405, [(b"allow", b"POST")])
            return
        session = await self._session(send, session_id, ctx)
        if session is None:
            return
        last = header(scope, b"last-event-id")
        await stream_events(session, receive, send, last, None)

    async def _delete(self, scope: Scope, send: Send, ctx: RequestContext) -> None:
        session_id = header(scope, SESSION_HEADER)
        if session_id is None:
            await send_empty(send, 400)
            return
        try:
            ended = await self.backend.sessions.delete(session_id, caller_subject(ctx))
        except GatewayError as exc:  # the revocation store is down: ended here, not everywhere
            await _error(send, exc.status_code, None, jsonrpc.INTERNAL_ERROR, exc.message)
            return
        if not ended:
            await _error(send, 404, None, jsonrpc.INVALID_REQUEST, UNKNOWN_SESSION)
            return
        await send_empty(send, 200)


async def stream_events(
    session: Session,
    receive: Receive,
    send: Send,
    last_event_id: str | None,
    first: bytes | None,
) -> None:
    """Hold the session's standalone SSE stream open until the client leaves or the session
    ends, replaying buffered events after `last_event_id` first."""
    queue = session.stream.attach()
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    if first is not None:
        await send({"type": "http.response.body", "body": first, "more_body": True})
    # Replay what the client missed: after its Last-Event-ID, or what no stream has carried yet.
    after = session.stream.delivered
    if last_event_id is not None:
        with contextlib.suppress(ValueError):
            after = int(last_event_id)
    for event_id, data in session.stream.replay_after(after):
        if event_id > after:
            body = sse_event(data, str(event_id), "message")
            await send({"type": "http.response.body", "body": body, "more_body": True})
            session.stream.delivered = max(session.stream.delivered, event_id)
            after = event_id

    async def watch_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        queue.put_nowait(None)

    watcher = asyncio.get_running_loop().create_task(watch_disconnect())
    # At shutdown the stream ends at once; the client resumes elsewhere with Last-Event-ID.
    undo_shutdown = lifecycle.on_shutdown(lambda: queue.put_nowait(None))
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                continue
            if item is None:
                break
            event_id, data = item
            if event_id <= after:
                continue  # already sent while replaying
            body = sse_event(data, str(event_id), "message")
            await send({"type": "http.response.body", "body": body, "more_body": True})
            session.stream.delivered = max(session.stream.delivered, event_id)
            session.last_used = time.monotonic()
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b""})
    except OSError:
        pass
    finally:
        undo_shutdown()
        watcher.cancel()
        session.stream.detach(queue)


async def _cancel_on_disconnect(
    receive: Receive | None, task: asyncio.Task[Any], gone: list[bool]
) -> None:
    assert receive is not None
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.append(True)
    task.cancel()


def _header_mismatch(scope: Scope, method: str, params: JsonObject, version: Any) -> str | None:
    """Why a 2026-07-28 request's routing headers disagree with its body (they are required:
    a gateway routes by them), or None."""
    if header(scope, VERSION_HEADER) != version:
        return "MCP-Protocol-Version header does not match params._meta"
    if _trimmed(header(scope, METHOD_HEADER)) != method:
        return "Mcp-Method header does not match the body's method"
    key = NAME_BEARING.get(method)
    named = params.get(key) if key is not None else None
    if named is not None and _decoded(_trimmed(header(scope, NAME_HEADER))) != named:
        return f"Mcp-Name header does not match params.{key}"
    return None


def _trimmed(value: str | None) -> str | None:
    return value.strip(" \t") if value is not None else None


def _decoded(value: str | None) -> str | None:
    """An `Mcp-Name` value, `=?base64?...?=` (UTF-8) unwrapped; None if malformed."""
    if value is None or not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    payload = value[len("=?base64?") : -2]
    try:
        raw = base64.b64decode(payload, validate=True)
        if base64.b64encode(raw).decode() != payload:
            return None
        return raw.decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _honored_filter(requested: JsonObject) -> JsonObject:
    """The part of a listen filter Crossway delivers (all of it; falsy entries dropped)."""
    honored: JsonObject = {flag: True for flag in LISTEN_FLAGS.values() if requested.get(flag)}
    uris = requested.get("resourceSubscriptions")
    if isinstance(uris, list):
        kept = [uri for uri in uris if isinstance(uri, str)]
        if kept:
            honored["resourceSubscriptions"] = kept
    return honored


def _modern_result(method: str, result: JsonObject) -> JsonObject:
    """Fields the 2026-07-28 wire requires that handshake-era upstreams do not send."""
    extra: JsonObject = {}
    if "resultType" not in result:
        extra["resultType"] = "complete"
    if method in _CACHEABLE:
        if "ttlMs" not in result:
            extra["ttlMs"] = 0
        if "cacheScope" not in result:
            extra["cacheScope"] = "private"
    return {**result, **extra} if extra else result


async def _error(send: Send, status: int, request_id: Any, code: int, message: str) -> None:
    await send_json(send, status, jsonrpc.error_response(request_id, code, message))


__all__ = ["BadRequest", "NotFound", "StreamableHttpTransport", "stream_events"]


def _limit(max_message_bytes: int, ctx: RequestContext) -> int:
    """The body limit: the MCP message cap, lowered by the route's `max_body_bytes`."""
    route = ctx.max_body_bytes
    return min(max_message_bytes, route) if route else max_message_bytes
