"""A small MCP server (mcp SDK `MCPServer`) with tools, a prompt, resources and a template.

Run: python -m tests.mcp.servers.notes [stdio | streamable-http PORT | sse PORT] [--name NAME]
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel


class Colour(BaseModel):
    colour: str


def build(name: str) -> MCPServer:
    server = MCPServer(name, instructions=f"{name} keeps notes.")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool()
    def whoami() -> str:
        """Name of this server and its process id."""
        return f"{name}:{os.getpid()}"

    @server.tool(name="dotted.name")
    def dotted() -> str:
        """A tool whose name is not valid for strict clients."""
        return "dotted"

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return "done"

    outcomes: dict[str, str] = {}

    @server.tool()
    async def wait(seconds: float, key: str, ctx: Context) -> str:
        """Report progress once, then sleep; remembers whether it finished or was cancelled."""
        outcomes[key] = "running"
        await ctx.report_progress(0, 1, "started")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            outcomes[key] = "cancelled"
            raise
        outcomes[key] = "done"
        return "done"

    @server.tool()
    def outcome(key: str) -> str:
        """What happened to the `wait` call with this key."""
        return outcomes.get(key, "unknown")

    @server.tool()
    def fail() -> str:
        """Always raises."""
        raise ValueError("this tool always fails")

    @server.tool()
    async def crash() -> str:
        """Kill this server process."""
        os._exit(3)

    @server.tool()
    async def count(n: int, ctx: Context) -> str:
        """Report progress n times."""
        for i in range(n):
            await ctx.report_progress(i + 1, n, f"step {i + 1}")
        await ctx.info("counted")
        return f"counted {n}"

    grown: list[str] = []
    counters: dict[object, int] = {}

    @server.tool()
    def bump(ctx: Context) -> int:
        """Count calls made in this MCP session (tells whether calls share one session)."""
        request = ctx.request_context.request
        key = request.headers.get("mcp-session-id") if request is not None else "stdio"  # type: ignore[attr-defined]
        counters[key] = counters.get(key, 0) + 1
        return counters[key]

    @server.tool()
    async def grow(ctx: Context) -> str:
        """Add a tool and tell the client its tool list changed."""
        new = f"extra{len(grown) + 1}"
        grown.append(new)
        server.add_tool(lambda: new, name=new, description="added at run time")
        await ctx.session.send_tool_list_changed()
        return new

    @server.tool()
    async def ask(ctx: Context) -> str:
        """Ask the user for a colour (elicitation)."""
        answer = await ctx.elicit("Favourite colour?", Colour)
        if answer.action == "accept":
            return f"colour: {answer.data.colour}"
        return f"declined: {answer.action}"

    @server.tool()
    async def roots(ctx: Context) -> str:
        """List the client's roots."""
        result = await ctx.session.list_roots()
        return ",".join(str(root.uri) for root in result.roots)

    @server.resource("notes://first")
    def first() -> str:
        """The first note."""
        return f"first note from {name}"

    @server.resource("notes://by-id/{note_id}")
    def by_id(note_id: str) -> str:
        """A note by id."""
        return f"note {note_id} from {name}"

    @server.prompt()
    def summarize(topic: str) -> str:
        """Ask for a summary."""
        return f"Summarize {topic} ({name})"

    return server


def main() -> None:
    args = sys.argv[1:]
    name = "notes"
    if "--name" in args:
        i = args.index("--name")
        name = args[i + 1]
        del args[i : i + 2]
    transport = args[0] if args else "stdio"
    server = build(name)
    if transport == "stdio":
        server.run("stdio")
    elif transport == "sse":
        server.run("sse", port=int(args[1]), host="127.0.0.1")
    else:
        server.run("streamable-http", port=int(args[1]), host="127.0.0.1")


if __name__ == "__main__":
    main()
