"""A JSON-RPC peer over one ordered message stream (stdio, legacy SSE).

It matches responses to requests, routes what the server sends on its own to the request it
belongs to (progress by token; server-to-client requests and log messages to the request in
flight) or else to the session's `UpstreamEvents`, and cancels upstream requests whose caller
went away.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from crossway.errors import UpstreamTimeout, UpstreamUnreachable
from crossway.mcp import jsonrpc
from crossway.mcp.upstream.base import JsonObject, RequestOptions, UpstreamRpcError
from crossway.telemetry import tracing

logger = logging.getLogger(__name__)

LATEST_HANDSHAKE_VERSION: Final = "2025-11-25"
GATEWAY_CLIENT_CAPABILITIES: Final[JsonObject] = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[JsonObject]
    options: RequestOptions
    progress_token: Any = None


EventsRouter = Callable[[JsonObject], Any]


class RpcPeer(abc.ABC):
    """Request/response bookkeeping over a transport that carries whole JSON-RPC messages."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._by_token: dict[str, _Pending] = {}
        self._closed_error: Exception | None = None

    @abc.abstractmethod
    async def write(self, message: JsonObject) -> None:
        """Send one message to the server."""

    async def unrelated_notification(self, message: JsonObject) -> None:  # noqa: B027
        """A notification no in-flight request claims."""

    async def unrelated_request(self, message: JsonObject) -> JsonObject:
        """A server-to-client request no in-flight request claims."""
        return {"error": {"code": jsonrpc.METHOD_NOT_FOUND, "message": "no client to ask"}}

    async def request(
        self, method: str, params: JsonObject | None, options: RequestOptions
    ) -> JsonObject:
        """Send a request and wait for its result."""
        if self._closed_error is not None:
            raise UpstreamUnreachable(f"MCP server {self.server!r} is not connected")
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), options)
        message: JsonObject = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if tracing.enabled():
            params = with_trace_meta(params)
        if params is not None:
            meta = params.get("_meta")
            if isinstance(meta, dict) and "progressToken" in meta:
                # Tokens from different clients may collide on a shared session: use ours.
                pending.progress_token = meta["progressToken"]
                params = {**params, "_meta": {**meta, "progressToken": f"cw{request_id}"}}
                self._by_token[f"cw{request_id}"] = pending
            message["params"] = params
        self._pending[request_id] = pending
        try:
            await self.write(message)
            return await asyncio.wait_for(pending.future, options.timeout)
        except TimeoutError:
            await self._cancel_upstream(request_id, "timed out")
            raise UpstreamTimeout(
                f"MCP server {self.server!r} did not answer {method} within {options.timeout:g}s"
            ) from None
        except asyncio.CancelledError:
            await self._cancel_upstream(request_id, "cancelled by the client")
            raise
        finally:
            self._pending.pop(request_id, None)
            if pending.progress_token is not None:
                self._by_token.pop(f"cw{request_id}", None)

    async def _cancel_upstream(self, request_id: int, reason: str) -> None:
        if self._closed_error is None:
            try:
                await self.write(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": request_id, "reason": reason},
                    }
                )
            except Exception:
                logger.debug("could not send cancellation to %s", self.server)

    async def notify(self, method: str, params: JsonObject | None) -> None:
        """Send a notification."""
        message: JsonObject = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self.write(message)

    def dispatch(self, message: Any) -> None:
        """Handle one message read from the server (never raises)."""
        if not isinstance(message, dict):
            logger.warning("MCP server %s sent a non-object message; ignored", self.server)
            return
        method = message.get("method")
        if method is None:
            self._resolve(message)
        elif "id" in message:
            asyncio.get_running_loop().create_task(self._answer(message))
        else:
            asyncio.get_running_loop().create_task(self._route_notification(message))

    def _resolve(self, message: JsonObject) -> None:
        request_id = message.get("id")
        pending = self._pending.get(request_id) if isinstance(request_id, int) else None
        if pending is None or pending.future.done():
            logger.debug("MCP server %s answered unknown request %r", self.server, request_id)
            return
        if "error" in message:
            error = message["error"] if isinstance(message["error"], dict) else {}
            pending.future.set_exception(
                UpstreamRpcError(
                    int(error.get("code", jsonrpc.INTERNAL_ERROR)),
                    str(error.get("message", "error")),
                    error.get("data"),
                )
            )
        else:
            result = message.get("result")
            pending.future.set_result(result if isinstance(result, dict) else {})

    def _latest_with(self, attr: str) -> _Pending | None:
        for pending in reversed(self._pending.values()):
            if getattr(pending.options, attr) is not None:
                return pending
        return None

    async def _route_notification(self, message: JsonObject) -> None:
        try:
            params = message.get("params")
            if message["method"] == "notifications/progress" and isinstance(params, dict):
                pending = self._by_token.get(str(params.get("progressToken")))
                if pending is not None and pending.options.on_notification is not None:
                    message = {
                        **message,
                        "params": {**params, "progressToken": pending.progress_token},
                    }
                    await pending.options.on_notification(message)
                return
            if message["method"] == "notifications/message":
                owner = self._latest_with("on_notification")
                if owner is not None and owner.options.on_notification is not None:
                    await owner.options.on_notification(message)
                    return
            await self.unrelated_notification(message)
        except Exception:
            logger.exception("MCP server %s: failed to route a notification", self.server)

    async def _answer(self, message: JsonObject) -> None:
        try:
            owner = self._latest_with("on_request")
            if owner is not None and owner.options.on_request is not None:
                body = await owner.options.on_request(message)
            else:
                body = await self.unrelated_request(message)
        except UpstreamRpcError as exc:
            body = {"error": exc.to_error()}
        except Exception:
            logger.exception("MCP server %s: relaying %s failed", self.server, message["method"])
            body = {"error": {"code": jsonrpc.INTERNAL_ERROR, "message": "relay failed"}}
        reply: JsonObject = {"jsonrpc": "2.0", "id": message["id"]}
        reply.update(body)
        try:
            await self.write(reply)
        except Exception:
            logger.debug("MCP server %s: could not send a reply", self.server)

    def fail_all(self, error: Exception) -> None:
        """The stream ended: fail every request in flight."""
        self._closed_error = error
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(error)

    def reopen(self) -> None:
        """The stream is connected again."""
        self._closed_error = None


def with_trace_meta(params: JsonObject | None) -> JsonObject | None:
    """`params` with the current trace context (`traceparent`, `tracestate`, `baggage`) in its
    `_meta`, as MCP carries it over stdio; as given when there is none to pass on."""
    carrier: dict[str, str] = {}
    tracing.inject(carrier)
    if not carrier:
        return params
    if params is None:
        return {"_meta": carrier}
    meta = params.get("_meta")
    return {**params, "_meta": {**meta, **carrier} if isinstance(meta, dict) else carrier}


def initialize_params(
    protocol_version: str, capabilities: JsonObject, client_info: JsonObject
) -> JsonObject:
    """Params of the `initialize` Crossway sends upstream."""
    return {
        "protocolVersion": protocol_version,
        "capabilities": capabilities,
        "clientInfo": client_info,
    }
