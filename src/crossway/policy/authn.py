"""What every authentication policy shares: the `strict` / `optional` / `permissive` modes."""

from __future__ import annotations

import abc
import logging
from typing import ClassVar, Final

from crossway.config.policy import AuthMode
from crossway.errors import Unauthenticated
from crossway.policy.base import Policy, Reply
from crossway.server.context import CONSUMED_HEADERS, RequestContext
from crossway.types import Scope

log = logging.getLogger("crossway.policy.authn")


class AuthnPolicy(Policy):
    """An authentication policy: finds a credential, verifies it, sets the caller's identity.

    Subclasses implement `authenticate`, which returns False when the request carries no
    credential of its kind, True once it set `ctx.identity`, and raises `Unauthenticated` for a
    credential that is presented but invalid.
    """

    method: ClassVar[str]
    """`identity.method` of callers this policy authenticates."""

    def __init__(self, mode: AuthMode) -> None:
        self.mode = mode

    @abc.abstractmethod
    async def authenticate(self, scope: Scope, ctx: RequestContext) -> bool: ...

    def missing(self, scope: Scope) -> Unauthenticated:
        """The error for a request that carries no credential in `strict` mode."""
        return Unauthenticated("authentication required", code="missing_credentials")

    async def on_request(self, scope: Scope, ctx: RequestContext) -> Reply | None:
        try:
            authenticated = await self.authenticate(scope, ctx)
        except Unauthenticated as exc:
            if self.mode != "permissive":
                raise
            log.info("route %s: ignoring an invalid %s credential: %s", ctx.route, self.method, exc)
            authenticated = False
        if not authenticated and self.mode == "strict" and ctx.identity is None:
            raise self.missing(scope)
        return None


def consume(ctx: RequestContext, header: bytes) -> None:
    """Mark a request header as Crossway's own: backends never forward it upstream."""
    consumed = ctx.attrs.get(CONSUMED_HEADERS)
    if consumed is None:
        ctx.attrs[CONSUMED_HEADERS] = _ONLY.get(header) or frozenset((header,))
    elif header not in consumed:
        ctx.attrs[CONSUMED_HEADERS] = consumed | {header}


_ONLY: Final = {h: frozenset((h,)) for h in (b"authorization", b"x-api-key")}
"""Prebuilt one-header sets (the common case costs no set construction)."""


def set_identity(ctx: RequestContext, sub: str, method: str, **extra: object) -> None:
    """Record the authenticated caller (the first policy that authenticates wins `sub`)."""
    if ctx.identity is None:
        ctx.identity = {"sub": sub, "method": method, **extra}


__all__ = ["AuthnPolicy", "consume", "set_identity"]
