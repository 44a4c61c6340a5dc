"""Small MCP servers built with the `mcp` SDK, used as real upstreams in the tests."""
