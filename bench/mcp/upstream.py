"""The upstream MCP servers the MCP bench calls.

python -m bench.mcp.upstream http PORT        # Streamable HTTP (mcp SDK), tool `echo`
python -m bench.mcp.upstream stdio INDEX N    # raw stdio server listing N tools (tools/list bench)
"""

from __future__ import annotations

import json
import sys


def http(port: int) -> None:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench-upstream", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    server.run("streamable-http", host="127.0.0.1", port=port)


def stdio(index: int, count: int) -> None:
    """A minimal stdio MCP server with `count` tools (cheap enough to run 20 of)."""
    tools = [
        {
            "name": f"tool{i}",
            "description": f"Tool {i} of server {index}: does one small thing with its input.",
            "inputSchema": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["text"],
            },
        }
        for i in range(count)
    ]
    out = sys.stdout
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "id" not in message or "method" not in message:
            continue
        method = message["method"]
        if method == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": f"bench-{index}", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": tools}
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "ok"}]}
        elif method == "ping":
            result = {}
        else:
            reply = {
                "jsonrpc": "2.0",
                "id": message["id"],
                "error": {"code": -32601, "message": "no"},
            }
            out.write(json.dumps(reply) + "\n")
            out.flush()
            continue
        out.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}) + "\n")
        out.flush()


if __name__ == "__main__":
    if sys.argv[1] == "http":
        http(int(sys.argv[2]))
    else:
        stdio(int(sys.argv[2]), int(sys.argv[3]))
