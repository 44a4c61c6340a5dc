"""Per-request facts shared by policies and backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

CONSUMED_HEADERS: Final = "gateway.consumed_headers"
"""`ctx.attrs` key: request header names (lower-case bytes) an auth policy consumed; backends
must not forward them upstream."""


@dataclass(slots=True)
class RequestContext:
    """What Crossway knows about one request once its route matched.

    Attributes:
        route: name of the matched route.
        backend: name of the backend serving it.
        request_id: id echoed in logs and the `x-request-id` response header.
        path: the request path as the backend should see it (route prefix stripped where
            the route says so).
        identity: the authenticated caller (set by auth policies), e.g. JWT claims or key name.
        attrs: free-form attributes policies and metrics read (`llm.model`, `mcp.tool.name`...).
    """

    route: str
    backend: str
    request_id: str
    path: str
    identity: dict[str, Any] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
