"""The legacy HTTP+SSE transport (2024-11-05) for older clients.

`GET /sse` opens the session's stream and announces the message endpoint
(`/message?sessionId=...`); the client POSTs each message there and gets `202`; every response
and server message travels on the stream. The stream is bound to the replica that holds it, so
this transport needs sticky routing across replicas (Streamable HTTP does not).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs

import orjson

from crossway.errors import GatewayError
from crossway.mcp import jsonrpc
from crossway.mcp.downstream.http import send_empty, send_json, sse_event
from crossway.mcp.downstream.streamable import stream_events
from crossway.mcp.federation import HANDSHAKE_VERSIONS, LATEST_HANDSHAKE, Call
from crossway.mcp.session import Session
from crossway.mcp.store import caller_subject
from crossway.mcp.upstream.base import ClientHello, JsonObject
from crossway.server.asgi import read_body
from crossway.server.context import RequestContext
from crossway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from crossway.mcp.backend import McpBackend

logger = logging.getLogger(__name__)

MESSAGE_PATH: Final = "/message"


class _StreamChannel:
    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    async def send(self, message: JsonObject) -> None:
        self.session.stream.push(message)


class LegacySseTransport:
    """Serves `GET /sse` and `POST /message`."""

    def __init__(self, backend: McpBackend) -> None:
        self.backend = backend
        self._tasks: set[asyncio.Task[None]] = set()

    async def stream(self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext) -> None:
        if scope["method"] != "GET":
            await send_empty(send, 405, [(b"allow", b"GET")])
            return
        hello = ClientHello(protocol_version="2024-11-05")
        try:
            session = await self.backend.sessions.create(hello, caller_subject(ctx), connect=False)
        except GatewayError as exc:
            await send_json(send, exc.status_code, {"error": exc.message})
            return
        session.legacy_sse = True
        assert session.id is not None
        full_path: str = scope.get("root_path", "") + scope["path"]
        base = full_path[: len(full_path) - len(ctx.path)] if full_path.endswith(ctx.path) else ""
        endpoint = f"{base}{MESSAGE_PATH}?sessionId={session.id}"
        first = sse_event(endpoint.encode(), event="endpoint")
        try:
            await stream_events(session, receive, send, None, first)
        finally:
            try:
                await self.backend.sessions.end(session)
            except GatewayError:
                logger.warning("ending a legacy SSE session: its id could not be revoked")

    async def message(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        if scope["method"] != "POST":
            await send_empty(send, 405, [(b"allow", b"POST")])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session_id = (query.get("sessionId") or query.get("session_id") or [None])[0]
        try:
            session = (
                await self.backend.sessions.get(session_id, caller_subject(ctx), attach=False)
                if session_id
                else None
            )
        except GatewayError as exc:
            await send_json(
                send,
                exc.status_code,
                jsonrpc.error_response(None, jsonrpc.INTERNAL_ERROR, exc.message),
            )
            return
        if session is None or not session.legacy_sse:
            await send_json(
                send,
                404,
                jsonrpc.error_response(None, jsonrpc.INVALID_REQUEST, "unknown or expired session"),
            )
            return
        # A refused body (413, 400) is rendered by the backend's `render_error`, as JSON-RPC.
        body = await read_body(scope, receive, _limit(self.backend.cfg.max_message_bytes, ctx))
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            await send_json(
                send, 400, jsonrpc.error_response(None, jsonrpc.PARSE_ERROR, "parse error")
            )
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            await send_json(
                send, 400, jsonrpc.error_response(None, jsonrpc.INVALID_REQUEST, "invalid request")
            )
            return
        await send_empty(send, 202)
        task = asyncio.get_running_loop().create_task(self._handle(session, message, ctx))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, session: Session, message: JsonObject, ctx: RequestContext) -> None:
        session.last_used = time.monotonic()
        method = message.get("method")
        request_id = message.get("id")
        federation = self.backend.federation
        if method is None:
            session.client_answered(message)
            return
        if request_id is None:
            await federation.notification(session, message)
            return
        task = asyncio.current_task()
        assert task is not None
        session.inflight[request_id] = task
        try:
            if method == "initialize":
                params = message.get("params") if isinstance(message.get("params"), dict) else {}
                assert isinstance(params, dict)
                requested = params.get("protocolVersion")
                version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
                caps = params.get("capabilities")
                info = params.get("clientInfo")
                session.hello = ClientHello(
                    protocol_version=version,
                    capabilities=caps if isinstance(caps, dict) else {},
                    client_info=info if isinstance(info, dict) else {"name": "unknown"},
                )
                await federation.connect_all(session)
                result = federation.initialize_result(session, version)
            else:
                call = Call(request_id, ctx.identity, _StreamChannel(session), ctx=ctx)
                result = await federation.handle(session, message, call)
            reply = jsonrpc.response(request_id, result)
        except asyncio.CancelledError:
            if request_id not in session.client_cancelled:
                raise
            session.client_cancelled.discard(request_id)
            return
        except Exception as exc:
            if not isinstance(exc, GatewayError | jsonrpc.UpstreamRpcError):
                logger.exception("MCP request %s failed", method)
            reply = {"jsonrpc": "2.0", "id": request_id, "error": jsonrpc.error_from_exception(exc)}
        finally:
            session.inflight.pop(request_id, None)
        session.stream.push(reply)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()


__all__ = ["LegacySseTransport"]


def _limit(max_message_bytes: int, ctx: RequestContext) -> int:
    """The body limit: the MCP message cap, lowered by the route's `max_body_bytes`."""
    route = ctx.max_body_bytes
    return min(max_message_bytes, route) if route else max_message_bytes
