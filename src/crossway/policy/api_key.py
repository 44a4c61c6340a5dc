"""API-key authentication: `Authorization: Bearer <key>` or `x-api-key: <key>`."""

from __future__ import annotations

import hmac

from crossway.config.models import ApiKeyAuth
from crossway.errors import Unauthenticated
from crossway.policy.base import Policy
from crossway.server.context import CONSUMED_HEADERS, RequestContext
from crossway.types import Scope


class ApiKeyPolicy(Policy):
    """Accept a request only with one of the configured keys; the key's name becomes the identity."""

    def __init__(self, config: ApiKeyAuth) -> None:
        self._keys = [(name, key.get_secret_value().encode()) for name, key in config.keys.items()]

    async def check(self, scope: Scope, ctx: RequestContext) -> None:
        presented: bytes | None = None
        used = b""
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                presented, used = value[7:].strip(), name
                break
            if name == b"x-api-key":
                presented, used = value.strip(), name
                break
        if presented is None:
            raise Unauthenticated(
                "missing API key: send it as 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        for key_name, key in self._keys:
            if hmac.compare_digest(presented, key):
                ctx.identity = {"sub": key_name, "auth": "api_key"}
                # The caller's key is for Crossway only: backends never forward it upstream.
                ctx.attrs[CONSUMED_HEADERS] = frozenset({used})
                return
        raise Unauthenticated("invalid API key", code="invalid_api_key")
