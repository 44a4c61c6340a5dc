"""Upstream MCP connections, one module per transport; the interface is in `base`."""
