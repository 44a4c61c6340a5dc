"""Config of `type: mcp` backends (owned by the MCP gateway; extended there)."""

from __future__ import annotations

from typing import Literal

from crossway.config.base import StrictModel


class McpBackendConfig(StrictModel):
    """An MCP gateway: many upstream MCP servers federated behind one endpoint."""

    type: Literal["mcp"]
    """Backend kind."""
