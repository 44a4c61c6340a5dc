"""JWT bearer authentication as a route policy (several issuers, RFC 9728 mode).

A token is checked against the issuer config whose `issuer` equals its (unverified) `iss`; an
issuer config without `issuer` takes tokens of any issuer. Verified claims become `ctx.jwt`
(and only verified claims ever do); `identity` is `{"sub", "method": "jwt", "iss"}`.

With `protected_resource`, failures answer as an OAuth protected resource: 401 with
`WWW-Authenticate: Bearer resource_metadata="..."` (and `error="invalid_token"` for a bad
token), 403 `insufficient_scope` for missing scopes, and the resource URI is a required audience.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final

import jwt

from crossway.config.policy import JwtConfig, JwtPolicyConfig
from crossway.errors import Forbidden, Unauthenticated
from crossway.policy.api_key import looks_like_jwt
from crossway.policy.authn import AuthnPolicy, consume, set_identity
from crossway.policy.jwt import JwtValidator, bearer_token
from crossway.policy.protected_resource import ProtectedResource
from crossway.server.context import CONSUMED_HEADERS, RequestContext
from crossway.types import Scope

log = logging.getLogger("crossway.policy.jwt")

BEARER_ATTR: Final = "auth.bearer"
"""`ctx.attrs` key holding the caller's verified raw token, for token exchange only."""
CALLER_TOKEN: ContextVar[str | None] = ContextVar("crossway_caller_token", default=None)
"""The verified bearer token of the request being served (for RFC 8693 token exchange:
upstream work started while serving a request runs in a copy of its context)."""


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(str(s) for s in raw)
    return frozenset()


class JwtPolicy(AuthnPolicy):
    """Validates `Authorization: Bearer <jwt>` against one or more issuers."""

    method = "jwt"

    def __init__(self, config: JwtPolicyConfig) -> None:
        super().__init__(config.mode)
        self.config = config
        resource = config.protected_resource
        extra_audience = [resource.resource] if resource is not None else []
        issuers: list[JwtConfig] = list(config.issuers)
        if config.has_keys:
            issuers.insert(0, JwtConfig.model_validate(_settings(config)))
        self.validators = [
            JwtValidator(c, audiences=[*c.audiences, *extra_audience]) for c in issuers
        ]
        self._by_issuer = {v.config.issuer: v for v in self.validators if v.config.issuer}
        self._any_issuer = [v for v in self.validators if not v.config.issuer]
        self._required = frozenset(config.required_scopes)
        self.resource = (
            ProtectedResource(
                resource,
                algorithms=list(config.algorithms),
                required_scopes=list(config.required_scopes),
            )
            if resource is not None
            else None
        )

    async def start(self) -> None:
        for validator in self.validators:
            await validator.start()

    async def close(self) -> None:
        for validator in self.validators:
            await validator.close()

    def _challenge(self, error: str | None = None, description: str | None = None) -> str:
        if self.resource is not None:
            return self.resource.challenge(error, description)
        value = 'Bearer realm="crossway"'
        if error:
            value += f', error="{error}"'
        return value

    def missing(self, scope: Scope) -> Unauthenticated:
        return Unauthenticated(
            "this endpoint needs a bearer token (Authorization: Bearer <jwt>)",
            code="unauthorized",
            headers={"www-authenticate": self._challenge()},
        )

    def _validator(self, token: str) -> JwtValidator:
        if len(self.validators) == 1:
            return self.validators[0]  # its own cache answers a token seen before
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            raise Unauthenticated("malformed token", code="invalid_token") from None
        validator = self._by_issuer.get(issuer) if isinstance(issuer, str) else None
        if validator is not None:
            return validator
        if self._any_issuer:
            return self._any_issuer[0]
        raise Unauthenticated("token issuer not accepted", code="invalid_token")

    async def authenticate(self, scope: Scope, ctx: RequestContext) -> bool:
        consumed = ctx.attrs.get(CONSUMED_HEADERS)
        if consumed is not None and b"authorization" in consumed:
            return False  # an earlier policy (an API key) took the Authorization header
        token = bearer_token(scope["headers"])
        if token is None:
            return False
        if not looks_like_jwt(token.encode("latin-1")) and _not_ours(ctx):
            return False  # an API key (forwarded, or for a later policy), not a JWT
        try:
            claims = await self._validator(token).validate(token)
        except Unauthenticated as exc:
            exc.headers = {"www-authenticate": self._challenge("invalid_token", exc.message)}
            raise
        if self._required:
            missing = self._required - _scopes(claims)
            if missing:
                raise Forbidden(
                    "token lacks required scopes: " + " ".join(sorted(missing)),
                    code="insufficient_scope",
                    headers={
                        "www-authenticate": self._challenge(
                            "insufficient_scope", "token lacks required scopes"
                        )
                    },
                )
        ctx.jwt = claims
        sub = claims.get("sub")
        set_identity(ctx, str(sub) if sub is not None else "", self.method, iss=claims.get("iss"))
        ctx.attrs[BEARER_ATTR] = token
        CALLER_TOKEN.set(token)
        if not self.config.forward:
            consume(ctx, b"authorization")
        return True


def _not_ours(ctx: RequestContext) -> bool:
    """Whether a bearer token that is no JWT is another policy's: an API-key policy of the
    chain (before or after this one) reads `Authorization: Bearer` keys too. Otherwise it is a
    malformed JWT, refused as one."""
    chain = ctx.chain
    return chain is not None and any(getattr(p, "reads_bearer", False) for p in chain.policies)


def _settings(config: JwtPolicyConfig) -> dict[str, Any]:
    """The top-level issuer settings of a policy, as a `JwtConfig`."""
    fields = set(JwtConfig.model_fields)
    return {k: getattr(config, k) for k in fields}


__all__ = ["BEARER_ATTR", "CALLER_TOKEN", "JwtPolicy"]
