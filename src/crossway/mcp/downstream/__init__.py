"""What MCP clients connect to: Streamable HTTP (`/mcp`) and the legacy HTTP+SSE transport."""
