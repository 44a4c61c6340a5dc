"""CORS: let browser scripts on allowed origins call a route.

- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed
  origin is answered here, 204 with the `Access-Control-Allow-*` headers, and never reaches
  the backend; from any other origin it is refused with 403 (no CORS headers).
- Any other request from an allowed origin goes on; `Access-Control-Allow-Origin`, `-Expose-
  Headers`, `-Allow-Credentials` and `Vary: Origin` are added to its response (an error answer
  from a later policy included, so the script can read a 401). From another origin nothing is
  added, and the browser keeps the response from the script.
- Requests without `Origin` (every non-browser client) cost one header scan.

The chain runs CORS before every other request-phase policy, wherever it is listed
(`Policy.early`): preflights carry no credentials, so authentication must not see them first.

`allow_origins` entries are exact origins (`https://app.example.com`, compared without regard
to case), `*` (any origin), or one wildcard label (`https://*.example.com`: any subdomain).
"""

from __future__ import annotations

import re
from typing import Final

from crossway.config.policy import CorsConfig
from crossway.errors import Forbidden
from crossway.policy.base import Policy, Reply
from crossway.server.context import RequestContext
from crossway.types import Scope

_VARY: Final = (b"vary", b"origin")


def _header_list(values: list[str]) -> bytes:
    return ", ".join(values).encode("latin-1")


class CorsPolicy(Policy):
    """Answer preflights and add CORS response headers for allowed origins."""

    early = True

    def __init__(self, config: CorsConfig) -> None:
        origins = [o.lower().rstrip("/") for o in config.allow_origins]
        self.any_origin = "*" in origins
        self.origins = frozenset(o for o in origins if "*" not in o)
        patterns = [
            re.escape(o).replace(r"\*", r"[a-z0-9-]+(?:\.[a-z0-9-]+)*")
            for o in origins
            if "*" in o and o != "*"
        ]
        self.pattern = re.compile("|".join(patterns)) if patterns else None
        self.credentials = config.allow_credentials
        # With credentials, a literal "*" is not a wildcard for browsers: echo the origin.
        self.echo_origin = not self.any_origin or self.credentials
        self.any_method = "*" in config.allow_methods
        self.any_header = "*" in config.allow_headers
        self.methods = _header_list([m.upper() for m in config.allow_methods])
        self.allow_headers = _header_list(config.allow_headers)
        self.expose = _header_list(config.expose_headers) if config.expose_headers else None
        self.max_age = str(config.max_age).encode()

    def allowed(self, origin: bytes) -> bool:
        """Whether a request from `origin` may be served to a browser script."""
        if self.any_origin:
            return True
        text = origin.decode("latin-1").lower()
        if text in self.origins:
            return True
        return self.pattern is not None and self.pattern.fullmatch(text) is not None

    def _origin_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        headers = [(b"access-control-allow-origin", origin if self.echo_origin else b"*")]
        if self.echo_origin:
            headers.append(_VARY)
        if self.credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    async def on_request(self, scope: Scope, ctx: RequestContext) -> Reply | None:
        origin = None
        requested_method = None
        requested_headers = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                requested_method = value
            elif name == b"access-control-request-headers":
                requested_headers = value
        if origin is None:
            return None
        preflight = scope["method"] == "OPTIONS" and requested_method is not None
        if not self.allowed(origin):
            if preflight:
                raise Forbidden("origin not allowed", code="cors_origin_not_allowed")
            return None  # no CORS headers: the browser keeps the answer from the script
        headers = self._origin_headers(origin)
        if preflight:
            assert requested_method is not None
            headers += [
                (
                    b"access-control-allow-methods",
                    requested_method if self.any_method else self.methods,
                ),
                (b"access-control-max-age", self.max_age),
            ]
            allow_headers = (requested_headers or b"") if self.any_header else self.allow_headers
            if allow_headers:
                headers.append((b"access-control-allow-headers", allow_headers))
            return 204, headers, b""
        if self.expose is not None:
            headers.append((b"access-control-expose-headers", self.expose))
        if ctx.response_headers is None:
            ctx.response_headers = headers
        else:
            ctx.response_headers.extend(headers)
        return None


__all__ = ["CorsPolicy"]
