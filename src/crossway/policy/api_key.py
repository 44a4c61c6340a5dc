"""API-key authentication: `Authorization: Bearer <key>` or `x-api-key: <key>`.

Keys are kept as SHA-256 digests only (a config may give `sha256:<hex>` instead of the key), so
a presented key is hashed once and looked up; an empty presented key never matches. Keys are
never logged.
"""

from __future__ import annotations

import hashlib
from typing import Final

from crossway.config.policy import ApiKeyAuth, key_digest
from crossway.errors import Unauthenticated
from crossway.policy.authn import AuthnPolicy, consume, set_identity
from crossway.server.context import RequestContext
from crossway.types import Scope

CHALLENGE: Final = {"www-authenticate": 'Bearer realm="crossway"'}
"""Every 401 carries a challenge (RFC 9110 §15.5.2)."""


def looks_like_jwt(token: bytes) -> bool:
    """A compact JWS (`eyJ...`, three dot-separated parts): left to a JWT policy."""
    return token.startswith(b"eyJ") and token.count(b".") == 2


class ApiKeyPolicy(AuthnPolicy):
    """Accept one of the configured keys; the key's name becomes the caller's `sub`."""

    method = "api_key"

    def __init__(self, config: ApiKeyAuth) -> None:
        super().__init__(config.mode)
        self._digests = {
            bytes.fromhex(key_digest(key.get_secret_value())): name
            for name, key in config.keys.items()
        }
        self._header = config.header.lower().encode("latin-1") if config.header else None
        self._forward = config.forward
        self.reads_bearer = self._header is None
        """Whether keys come as `Authorization: Bearer` (a JWT policy then leaves a bearer
        token that is no JWT to this policy)."""

    def missing(self, scope: Scope) -> Unauthenticated:
        return Unauthenticated(
            "missing API key: send it as 'Authorization: Bearer <key>'",
            code="missing_api_key",
            headers=dict(CHALLENGE),
        )

    def _presented(self, scope: Scope) -> tuple[bytes, bytes] | None:
        for name, value in scope["headers"]:
            if self._header is not None:
                if name == self._header:
                    return value.strip(), name
            elif name == b"authorization":
                if value[:7].lower() == b"bearer ":
                    token = value[7:].strip()
                    if not looks_like_jwt(token):  # a JWT is a JWT policy's credential
                        return token, name
            elif name == b"x-api-key":
                return value.strip(), name
        return None

    async def authenticate(self, scope: Scope, ctx: RequestContext) -> bool:
        found = self._presented(scope)
        if found is None:
            return False
        presented, header = found
        if not presented:
            raise Unauthenticated(
                "invalid API key", code="invalid_api_key", headers=dict(CHALLENGE)
            )
        # A dict lookup of the digest: what leaks through timing is about the hash, not the key.
        name = self._digests.get(hashlib.sha256(presented).digest())
        if name is None:
            raise Unauthenticated(
                "invalid API key", code="invalid_api_key", headers=dict(CHALLENGE)
            )
        if ctx.key is None:
            ctx.key = {"name": name}
        set_identity(ctx, name, self.method)
        if not self._forward:
            consume(ctx, header)
            if self._header is None:
                self._consume_copies(scope, ctx, header)
        return True

    def _consume_copies(self, scope: Scope, ctx: RequestContext, used: bytes) -> None:
        """Consume the other default key header too when it holds a configured key (clients
        often send the key both ways): a gateway key is never forwarded upstream. Anything
        else there (the upstream's own token) goes on."""
        other = b"x-api-key" if used == b"authorization" else b"authorization"
        for name, value in scope["headers"]:
            if name != other:
                continue
            if other == b"authorization":
                if value[:7].lower() != b"bearer ":
                    continue
                value = value[7:]
            if hashlib.sha256(value.strip()).digest() in self._digests:
                consume(ctx, other)
                return
