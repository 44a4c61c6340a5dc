"""Per-request facts shared by policies and backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from crossway.policy.base import PolicyChain

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
        identity: the authenticated caller (set by auth policies): at least `sub` (who) and
            `method` (`jwt`, `api_key`, `basic`, `mtls`, `ext_authz`); None when anonymous.
        jwt: the claims of a *verified* JWT, and nothing else (CEL's `jwt`); None without one.
        key: the API key the caller presented, as `{"name": ...}` (CEL's `key`); None without.
        chain: the route's policy chain; backends call `chain.parsed` once they decoded what is
            being called (`llm.model`, `mcp.tool`...), and `chain.response` when usage is known.
        attrs: protocol attributes policies read, by protocol: `attrs["llm"]`, `attrs["mcp"]`,
            `attrs["a2a"]` (dicts), plus gateway-internal keys such as `CONSUMED_HEADERS`.
        response_headers: headers the gateway adds to the response (CORS, request id).
        client_ip: the client's address: the TCP peer, or the right-most untrusted
            `X-Forwarded-For` hop when the peer is one of `listen.trusted_proxies`.
        max_body_bytes: the route's own request-body limit (`routes[].max_body_bytes`), or
            None to use the backend's (`listen.max_body_bytes`).
    """

    route: str
    backend: str
    request_id: str
    path: str
    identity: dict[str, Any] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    jwt: dict[str, Any] | None = None
    key: dict[str, Any] | None = None
    chain: PolicyChain | None = None
    response_headers: list[tuple[bytes, bytes]] | None = None
    client_ip: str = ""
    max_body_bytes: int | None = None
