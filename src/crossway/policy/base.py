"""The policy interface and the factory from config."""

from __future__ import annotations

import abc

from crossway.config.models import ApiKeyAuth, RoutePolicy
from crossway.server.context import RequestContext
from crossway.types import Scope


class Policy(abc.ABC):
    """Checks (and may annotate) a request before its backend sees it.

    Raise a `crossway.errors.GatewayError` to refuse; the backend's protocol renders it.
    """

    @abc.abstractmethod
    async def check(self, scope: Scope, ctx: RequestContext) -> None: ...


def build_policy(config: RoutePolicy) -> Policy:
    """Build the runtime policy for one configured policy."""
    if isinstance(config, ApiKeyAuth):
        from crossway.policy.api_key import ApiKeyPolicy

        return ApiKeyPolicy(config)
    raise ValueError(f"unsupported policy {config!r}")  # pragma: no cover - config validates
