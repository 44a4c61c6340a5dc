"""Hook points where access control plugs into the MCP gateway.

Three small callables, each with an allow-everything default:

- `Authorizer` — decides whether a caller may see or use one tool, prompt or resource. Lists are
  filtered with it (``arguments`` is None) and calls are checked with it (with the arguments).
- `ToolPinning` — sees every tool definition an upstream lists and says whether it may be used
  (`"ok"`), must be hidden and refused (`"blocked"`), or may be used but is suspicious
  (`"flagged"`: kept, logged by the hook).
- `AuthGate` — runs before the MCP backend looks at a request: it may answer it itself (RFC 9728
  metadata under ``/.well-known/oauth-protected-resource``, a 401 with ``WWW-Authenticate``)
  and returns True when it did.

`crossway.mcp.backend.McpBackend` takes them in an `McpHooks` value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from crossway.server.context import RequestContext
from crossway.types import Receive, Scope, Send

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


AuthGate = Callable[[Scope, Receive, Send, RequestContext], Awaitable[bool]]
"""Answers the request itself (metadata, 401) and returns True, or returns False to go on."""


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


async def open_gate(scope: Scope, receive: Receive, send: Send, ctx: RequestContext) -> bool:
    """The default `AuthGate`: lets everything through."""
    return False


@dataclass(slots=True)
class McpHooks:
    """The access-control hooks of one MCP backend."""

    authorize: Authorizer = allow_all
    pinning: ToolPinning = field(default_factory=TrustAllTools)
    auth_gate: AuthGate = open_gate
