"""MCP gateway: federate many MCP servers behind one Streamable HTTP / SSE endpoint.

Entry point: `crossway.mcp.backend.McpBackend`.
"""
