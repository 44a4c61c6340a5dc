"""OAuth 2.1 protected-resource behaviour (RFC 9728), for any route behind a JWT policy.

The metadata document is published at `/.well-known/oauth-protected-resource` + the path of the
configured `resource` URI (and at the bare well-known path when only one resource claims it);
the runtime adds those paths to the route table itself (`metadata_routes`), so no config needs a
second, hand-written route. Challenges (`WWW-Authenticate: Bearer resource_metadata=...`) are
built from the configured resource URI, never from the client's `Host` header.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from crossway.config.policy import ProtectedResourceConfig
from crossway.errors import MethodNotAllowed
from crossway.server.asgi import send_response
from crossway.server.backend import Backend
from crossway.server.context import RequestContext
from crossway.types import Receive, Scope, Send

WELL_KNOWN: Final = "/.well-known/oauth-protected-resource"
METADATA_MAX_AGE: Final = 3600


_NOT_QTEXT: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
"""Characters RFC 6750 §3 does not allow in `error_description` (and HTTP headers could not
carry: a token's `alg` or `kid` quoted in a message is the caller's text)."""


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _description(value: str) -> str:
    return '"' + _NOT_QTEXT.sub("?", value) + '"'


class ProtectedResource:
    """The metadata and challenges of one protected resource."""

    def __init__(
        self,
        config: ProtectedResourceConfig,
        *,
        algorithms: list[str],
        required_scopes: list[str],
    ) -> None:
        self.config = config
        self.algorithms = algorithms
        self.required_scopes = required_scopes
        parts = urlsplit(config.resource)
        self.metadata_path = WELL_KNOWN + parts.path.rstrip("/")
        self.metadata_url = f"{parts.scheme}://{parts.netloc}{self.metadata_path}"
        self.document = orjson.dumps(self._document())

    def _document(self) -> dict[str, Any]:
        config = self.config
        document: dict[str, Any] = {
            "resource": config.resource,
            "authorization_servers": list(config.authorization_servers),
            "bearer_methods_supported": ["header"],
        }
        if config.scopes_supported:
            document["scopes_supported"] = list(config.scopes_supported)
        if self.algorithms:
            document["resource_signing_alg_values_supported"] = list(self.algorithms)
        if config.resource_name:
            document["resource_name"] = config.resource_name
        if config.resource_documentation:
            document["resource_documentation"] = config.resource_documentation
        return document

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        """The `WWW-Authenticate` value of a 401/403 (RFC 6750 + RFC 9728)."""
        parts = [f"resource_metadata={_quote(self.metadata_url)}"]
        if error:
            parts.append(f"error={_quote(error)}")
        if description:
            parts.append(f"error_description={_description(description)}")
        scopes = self.required_scopes or self.config.scopes_supported
        if scopes:
            parts.append(f"scope={_quote(' '.join(scopes))}")
        return "Bearer " + ", ".join(parts)


class MetadataBackend(Backend):
    """Serves one resource's metadata document (GET/HEAD), publicly and cacheably."""

    def __init__(self, resource: ProtectedResource) -> None:
        self.resource = resource

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed("metadata is read with GET", headers={"allow": "GET, HEAD"})
        await send_response(
            send,
            200,
            b"" if method == "HEAD" else self.resource.document,
            [
                (b"content-type", b"application/json"),
                (b"cache-control", f"public, max-age={METADATA_MAX_AGE}".encode()),
                (b"access-control-allow-origin", b"*"),
            ],
        )


__all__ = ["WELL_KNOWN", "MetadataBackend", "ProtectedResource"]
