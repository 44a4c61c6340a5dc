"""A small sample MCP server (built with the `mcp` SDK) for the quickstart.

    python -m crossway.samples.mcp_server [--transport stdio|streamable-http|sse] [--port N]

Tools: `echo`, `add`, `word_count`; resource `sample://readme`; prompt `summarize`.
"""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer

server = MCPServer("crossway-sample")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


@server.resource("sample://readme", mime_type="text/plain")
def readme() -> str:
    """A short text resource."""
    return "This is the Crossway sample MCP server."


@server.prompt()
def summarize(topic: str) -> str:
    """Ask for a short summary of a topic."""
    return f"Summarize {topic} in three sentences."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--transport", default="streamable-http", choices=["stdio", "streamable-http", "sse"]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9102)
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run("stdio")
    elif args.transport == "sse":
        server.run("sse", host=args.host, port=args.port)
    else:
        server.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
