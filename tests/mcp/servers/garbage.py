"""Broken MCP servers for failure tests.

python -m tests.mcp.servers.garbage stdio          # writes non-JSON lines, then valid replies
python -m tests.mcp.servers.garbage http PORT      # answers every POST with garbage
python -m tests.mcp.servers.garbage hang PORT      # accepts connections, never answers
python -m tests.mcp.servers.garbage paged N        # clean stdio server listing N tools, 2 a page
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web


def stdio(paged: int = 0) -> None:
    """Speaks MCP, but sprinkles garbage lines between valid messages (unless `paged`)."""
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not paged:
            print("this is not json {{{", flush=True)
            print("[1, 2, 3]", flush=True)
        if "id" not in message or "method" not in message:
            continue
        method = message["method"]
        if method == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "garbage", "version": "1"},
            }
        elif method == "tools/list" and paged:
            start = int((message.get("params") or {}).get("cursor") or 0)
            names = [f"t{i}" for i in range(paged)][start : start + 2]
            result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in names]}
            if start + 2 < paged:
                result["nextCursor"] = str(start + 2)
        elif method == "tools/list":
            result = {"tools": [{"name": "noop", "inputSchema": {"type": "object"}}]}
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "noop done"}]}
        else:
            print(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "error": {"code": -32601, "message": "nope"},
                    }
                ),
                flush=True,
            )
            continue
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)


async def http(port: int) -> None:
    async def garbage(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"\x00\xffnot json at all", content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", garbage)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def hang(port: int) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()

    server = await asyncio.start_server(never, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "stdio":
        stdio()
    elif mode == "paged":
        stdio(int(sys.argv[2]))
    elif mode == "http":
        asyncio.run(http(int(sys.argv[2])))
    else:
        asyncio.run(hang(int(sys.argv[2])))
