"""MCP benchmarks: Crossway vs direct vs FastMCP's proxy vs ContextForge (see run.sh)."""
