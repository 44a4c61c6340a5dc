"""An MCP server (mcp SDK `MCPServer`) whose tool answers with the trace context it received:
the request's `params._meta` (stdio) and its trace headers (HTTP).

Run: python -m tests.telemetry.trace_echo_server [stdio | streamable-http PORT]
"""

from __future__ import annotations

import json
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

TRACE_KEYS = ("traceparent", "tracestate", "baggage")


def build() -> MCPServer:
    server = MCPServer("echo")

    @server.tool()
    def trace_context(ctx: Context) -> str:
        """The trace context this request brought, as JSON: {"meta": {...}, "headers": {...}}."""
        request_context = ctx.request_context
        meta: Any = request_context.meta
        if meta is not None and not isinstance(meta, dict):
            meta = meta.model_dump() if hasattr(meta, "model_dump") else dict(meta)
        request = request_context.request
        headers = getattr(request, "headers", None) or {}
        return json.dumps(
            {
                "meta": {k: v for k, v in (meta or {}).items() if k in TRACE_KEYS},
                "headers": {k: headers[k] for k in TRACE_KEYS if k in headers},
            }
        )

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    return server


def main() -> None:
    args = sys.argv[1:]
    transport = args[0] if args else "stdio"
    server = build()
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", port=int(args[1]), host="127.0.0.1")


if __name__ == "__main__":
    main()
