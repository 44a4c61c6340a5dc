"""An MCP server (mcp SDK `MCPServer`) whose tools, prompt and resource carry personal data, for
the guardrail tests; `received` tells which arguments reached it.

Run: python -m tests.mcp.servers.guarded [stdio | streamable-http PORT | sse PORT]
"""

from __future__ import annotations

import json
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import EmbeddedResource, TextContent, TextResourceContents
from pydantic import BaseModel

EMAIL = "jane.doe@example.com"
PHONE = "+1 415-555-0132"


class Contact(BaseModel):
    name: str
    email: str


def build() -> MCPServer:
    server = MCPServer("guarded")
    received: list[dict[str, object]] = []

    @server.tool()
    def echo(text: str) -> str:
        """Answer the text sent (and remember it)."""
        received.append({"tool": "echo", "text": text})
        return text

    @server.tool()
    def pay(card: str, amount: int) -> str:
        """Pretend to charge a card (and remember the call)."""
        received.append({"tool": "pay", "card": card, "amount": amount})
        return f"charged {amount}"

    @server.tool()
    async def chatty(text: str, ctx: Context) -> str:
        """Log a line first (so the answer comes as an SSE stream), then echo the text."""
        received.append({"tool": "chatty", "text": text})
        await ctx.info("working on it")
        return text

    @server.tool(name="received")
    def seen() -> str:
        """The calls of `echo`, `chatty`, `pay` and `introduce` so far, as JSON."""
        return json.dumps(received)

    @server.tool()
    def contact() -> Contact:
        """A contact, as structured content."""
        return Contact(name="Jane", email=EMAIL)

    @server.tool()
    def card() -> list[TextContent | EmbeddedResource]:
        """A text block and an embedded resource, both with an e-mail address."""
        return [
            TextContent(type="text", text=f"write to {EMAIL}"),
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri="contact://jane", mime_type="text/plain", text=f"Jane <{EMAIL}>"
                ),
            ),
        ]

    @server.resource("contact://jane")
    def jane() -> str:
        """Jane's card."""
        return f"Jane Doe, {EMAIL}, {PHONE}"

    @server.prompt()
    def introduce(name: str) -> str:
        """Introduce someone, with Jane's address."""
        received.append({"prompt": "introduce", "name": name})
        return f"Introduce {name} to Jane ({EMAIL})."

    return server


def main() -> None:
    args = sys.argv[1:]
    transport = args[0] if args else "stdio"
    server = build()
    if transport == "stdio":
        server.run("stdio")
    elif transport == "sse":
        server.run("sse", port=int(args[1]), host="127.0.0.1")
    else:
        server.run("streamable-http", port=int(args[1]), host="127.0.0.1")


if __name__ == "__main__":
    main()
