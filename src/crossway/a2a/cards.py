"""The agent card a client gets from Crossway: every URL points through Crossway, the security
schemes say what Crossway's policies demand, in the client's protocol version.

- URLs: `supportedInterfaces[].url` (v1.0), `url` / `additionalInterfaces` (v0.3) are replaced
  by Crossway's own interfaces for the agent (`<scheme>://<host><prefix>/NAME`), the scheme and
  host taken from the request (`X-Forwarded-Proto`/`-Host` only from a trusted proxy:
  `ctx.attrs[crossway.server.forwarded.FORWARDED]`). Anything else that could lead a client
  to the agent itself (signatures over the agent's card, provider URLs stay) is dropped.
- Security: the agent's own `securitySchemes` describe credentials Crossway holds; the client
  needs what the route's policy chain demands: a bearer JWT (`JwtPolicy`, with the RFC 9728
  metadata URL when the policy has a protected resource) and/or an API key in a header
  (`ApiKeyPolicy`); neither: no security.
- Version: `A2A-Version` 1.x -> v1.0 card; 0.3 -> v0.3 card; no header -> the v1.0 card with
  the v0.3 fields merged in (what a2a-sdk serves, read by clients of either version).
"""

from __future__ import annotations

import copy
import sys
from typing import Any, Final

from crossway.server.asgi import header_text
from crossway.server.context import RequestContext
from crossway.server.forwarded import FORWARDED, Forwarded
from crossway.types import Scope

SERVED_INTERFACES: Final = (("JSONRPC", "1.0"), ("HTTP+JSON", "1.0"), ("JSONRPC", "0.3"))
"""The bindings and versions Crossway serves every agent on (it bridges the rest)."""
REST_03: Final = ("HTTP+JSON", "0.3")
DROPPED_KEYS: Final = ("signatures",)
"""Card members that no longer hold once the card is rewritten."""


def public_base(scope: Scope, ctx: RequestContext) -> str:
    """`scheme://host` the client used to reach Crossway."""
    scheme = str(scope.get("scheme") or "http")
    host = header_text(scope, b"host")
    if not host:
        server = scope.get("server")
        if server:
            host = f"{server[0]}:{server[1]}" if server[1] else str(server[0])
        else:
            host = "localhost"
    forwarded = ctx.attrs.get(FORWARDED)
    if isinstance(forwarded, Forwarded):
        scheme = forwarded.proto or scheme
        host = forwarded.host or host
    return f"{scheme}://{host}"


def interfaces(url: str, *, rest: bool) -> list[dict[str, Any]]:
    """Crossway's interfaces for one agent at `url` (v1.0 JSON)."""
    served = [*SERVED_INTERFACES, REST_03] if rest else list(SERVED_INTERFACES)
    return [
        {"url": url, "protocolBinding": binding, "protocolVersion": version}
        for binding, version in served
        if rest or binding != "HTTP+JSON"
    ]


def security_v10(ctx: RequestContext) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`securitySchemes` and `securityRequirements` (v1.0) for the route's policies."""
    schemes: dict[str, Any] = {}
    requirements: list[dict[str, Any]] = []
    for policy in ctx.chain.policies if ctx.chain is not None else ():
        kind = type(policy).__name__
        if kind == "JwtPolicy" and _is(policy, "crossway.policy.jwt_policy", "JwtPolicy"):
            description = "A bearer JWT (Authorization: Bearer <jwt>)"
            resource = getattr(policy, "resource", None)
            if resource is not None:
                description += f"; OAuth 2.0 protected resource metadata: {resource.metadata_url}"
            schemes["bearer"] = {
                "httpAuthSecurityScheme": {
                    "scheme": "Bearer",
                    "bearerFormat": "JWT",
                    "description": description,
                }
            }
            scopes = sorted(getattr(policy, "_required", ()) or ())
            requirements.append({"schemes": {"bearer": {"list": scopes}}})
        elif kind == "ApiKeyPolicy" and _is(policy, "crossway.policy.api_key", "ApiKeyPolicy"):
            header = getattr(policy, "_header", None)
            name = header.decode("latin-1") if isinstance(header, bytes) else "x-api-key"
            description = f"An API key in the {name} header"
            if header is None:
                description += " (or Authorization: Bearer <key>)"
            schemes["apiKey"] = {
                "apiKeySecurityScheme": {
                    "location": "header",
                    "name": name,
                    "description": description,
                }
            }
            requirements.append({"schemes": {"apiKey": {"list": []}}})
    return schemes, requirements


def security_v03(ctx: RequestContext) -> tuple[dict[str, Any], list[dict[str, list[str]]]]:
    """The same in v0.3 (OpenAPI-style) form: `securitySchemes` and `security`."""
    schemes_v10, requirements_v10 = security_v10(ctx)
    schemes: dict[str, Any] = {}
    for name, scheme in schemes_v10.items():
        if "httpAuthSecurityScheme" in scheme:
            http = scheme["httpAuthSecurityScheme"]
            schemes[name] = {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": http["bearerFormat"],
                "description": http["description"],
            }
        else:
            key = scheme["apiKeySecurityScheme"]
            schemes[name] = {
                "type": "apiKey",
                "in": "header",
                "name": key["name"],
                "description": key["description"],
            }
    security = [
        {name: list(value["list"]) for name, value in req["schemes"].items()}
        for req in requirements_v10
    ]
    return schemes, security


def _is(obj: object, module: str, name: str) -> bool:
    """isinstance without importing the policy module (it is loaded if the chain uses it)."""
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls is not None and isinstance(obj, cls)


def client_card(
    card_v10: dict[str, Any],
    url: str,
    client_version: str | None,
    ctx: RequestContext,
    *,
    rest: bool,
) -> dict[str, Any]:
    """The card served for one agent (or the router) at `url`, in `client_version` ("1.0",
    "0.3", or None for the merged card)."""
    card = {k: v for k, v in copy.deepcopy(card_v10).items() if k not in DROPPED_KEYS}
    card["supportedInterfaces"] = interfaces(url, rest=rest)
    schemes, requirements = security_v10(ctx)
    card.pop("securitySchemes", None)
    card.pop("securityRequirements", None)
    if schemes:
        card["securitySchemes"] = schemes
        card["securityRequirements"] = requirements
    if client_version == "1.0":
        return card
    legacy = _card_v03(card, url, ctx, rest=rest)
    if client_version == "0.3":
        return legacy
    return _merge(card, legacy)


def _card_v03(
    card_v10: dict[str, Any], url: str, ctx: RequestContext, *, rest: bool
) -> dict[str, Any]:
    from crossway.a2a import bridge

    card = bridge.card_from_canonical("0.3", card_v10)
    card.pop("signatures", None)
    card["url"] = url
    card["preferredTransport"] = "JSONRPC"
    card["protocolVersion"] = "0.3.0"
    additional = [{"url": url, "transport": "JSONRPC"}]
    if rest:
        additional.append({"url": url, "transport": "HTTP+JSON"})
    card["additionalInterfaces"] = additional
    schemes, security = security_v03(ctx)
    card.pop("securitySchemes", None)
    card.pop("security", None)
    if schemes:
        card["securitySchemes"] = schemes
        card["security"] = security
    return card


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra`'s members added where `base` lacks them (recursively), as a2a-sdk merges its
    v0.3 compatibility fields into a v1.0 card."""
    for key, value in extra.items():
        if key not in base:
            base[key] = value
        elif isinstance(value, dict) and isinstance(base[key], dict):
            _merge(base[key], value)
        elif isinstance(value, list) and isinstance(base[key], list):
            for mine, theirs in zip(base[key], value, strict=False):
                if isinstance(mine, dict) and isinstance(theirs, dict):
                    _merge(mine, theirs)
    return base


__all__ = ["client_card", "interfaces", "public_base", "security_v03", "security_v10"]
