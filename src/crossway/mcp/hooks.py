"""Hook points where access control plugs into the MCP gateway.

Two small callables, each with an allow-everything default (authentication and route-level
authorization are the route's policy chain, `crossway.policy`, not hooks):

- `Authorizer` — decides whether a caller may see or use one tool, prompt or resource. Lists are
  filtered with it (``arguments`` is None) and calls are checked with it (with the arguments).
- `ToolPinning` — sees every tool definition an upstream lists and says whether it may be used
  (`"ok"`), must be hidden and refused (`"blocked"`), or may be used but is suspicious
  (`"flagged"`: kept, logged by the hook).

`crossway.mcp.backend.McpBackend` takes them in an `McpHooks` value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Kind = Literal["tool", "prompt", "resource", "resource_template"]
"""What a name refers to. Names given to hooks are the federated ones clients see."""

PinVerdict = Literal["ok", "blocked", "flagged"]


class Authorizer(Protocol):
    """May this caller see (arguments None) or use (arguments given) this item?"""

    def __call__(
        self,
        identity: dict[str, Any] | None,
        kind: Kind,
        name: str,
        arguments: dict[str, Any] | None,
    ) -> bool: ...


class ToolPinning(Protocol):
    """Checks each tool definition an upstream lists against what was first seen."""

    def check(self, server: str, tool: dict[str, Any]) -> PinVerdict: ...


def allow_all(
    identity: dict[str, Any] | None,
    kind: Kind,
    name: str,
    arguments: dict[str, Any] | None,
) -> bool:
    """The default `Authorizer`."""
    return True


class TrustAllTools:
    """The default `ToolPinning`: every definition is fine."""

    def check(self, server: str, tool: dict[str, Any]) -> PinVerdict:
        return "ok"


@dataclass(slots=True)
class McpHooks:
    """The access-control hooks of one MCP backend."""

    authorize: Authorizer = allow_all
    pinning: ToolPinning = field(default_factory=TrustAllTools)
