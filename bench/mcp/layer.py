"""CPU cost of the MCP layer alone: one `tools/call` through `McpBackend` (downstream parse,
session lookup, routing, pinning verdict, response) with an in-memory upstream, no network.

    .venv/bin/python -m bench.mcp.layer
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from crossway.config.mcp import McpBackendConfig
from crossway.mcp.backend import McpBackend
from crossway.mcp.upstream.base import (
    ClientHello,
    JsonObject,
    RequestOptions,
    Upstream,
    UpstreamEvents,
    UpstreamSession,
)
from crossway.server.context import RequestContext

CALLS = 20_000


class _MemorySession(UpstreamSession):
    def __init__(self) -> None:
        self.server = "up"
        self.init_result = {"capabilities": {"tools": {}}}

    async def request(
        self, method: str, params: JsonObject | None, options: RequestOptions
    ) -> JsonObject:
        if method == "tools/list":
            return {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}
        assert params is not None
        return {"content": [{"type": "text", "text": params["arguments"]["text"]}]}

    async def notify(self, method: str, params: JsonObject | None) -> None:
        pass

    async def close(self) -> None:
        pass


class _MemoryUpstream(Upstream):
    name = "up"

    async def open_session(
        self, hello: ClientHello, events: UpstreamEvents, *, resume: str | None = None
    ) -> UpstreamSession:
        return _MemorySession()


async def main() -> None:
    cfg = McpBackendConfig.model_validate(
        {
            "type": "mcp",
            "servers": {"up": {"type": "streamable_http", "url": "http://x/mcp", "prefix": False}},
        }
    )
    backend = McpBackend(
        "bench", cfg, {"up": _MemoryUpstream()}, McpBackend.from_config("bench", cfg).hooks
    )

    async def post(body: dict[str, Any], session_id: str | None = None) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        headers = [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
        ]
        if session_id:
            headers.append((b"mcp-session-id", session_id.encode()))
        payload = orjson.dumps(body)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}
        await backend(scope, receive, send, RequestContext("mcp", "bench", "1", "/mcp"))
        return sent

    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "b", "version": "1"},
        },
    }
    session_id = dict((await post(init))[0]["headers"])[b"mcp-session-id"].decode()
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hi"}},
    }
    for _ in range(500):
        await post(call, session_id)
    started = time.perf_counter()
    for _ in range(CALLS):
        await post(call, session_id)
    elapsed = time.perf_counter() - started
    print(f"MCP layer: {elapsed / CALLS * 1e6:.1f} us per tools/call ({CALLS} calls)")


if __name__ == "__main__":
    asyncio.run(main())
