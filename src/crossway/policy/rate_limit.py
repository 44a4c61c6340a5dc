"""The `rate_limit` policy: requests and LLM tokens per window, counted per attribute value.

```yaml
policies:
  - type: rate_limit
    on_store_error: allow          # global limits when Redis is down: allow | deny (503)
    limits:
      - {key: key, requests: 60, window: 60}                 # per virtual/API key
      - {key: user, tokens: 100000, window: 60, mode: global} # across replicas (Redis)
      - {key: mcp.tool, requests: 10, window: 1}             # per MCP tool
```

In the parsed phase each limit whose attribute the request has takes one request (or reserves
the LLM call's token estimate, `ctx.attrs["llm.estimate"]`); all limits or none. A refused
request gets 429 with `Retry-After` and `x-ratelimit-*` in its protocol's format; an admitted
one carries the `x-ratelimit-*` headers of the tightest limits. The finish phase settles token
reservations with the real usage (`ctx.attrs["llm.usage"]`), after the stream ended — a stream
is never cut. Token limits apply to LLM calls only; an MCP session's every call is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from crossway.config.accounting import AccountingConfig, LimitConfig, RateLimitConfig
from crossway.policy.base import Phase, Policy
from crossway.policy.limits import Hit, LimitSpec, Measure, limiter_for
from crossway.server.context import RequestContext

log = logging.getLogger("crossway.policy.limits")

Extract = Callable[[RequestContext], str | None]

_HELD_PREFIX: Final = "rate_limit.held."
"""`ctx.attrs` key prefix (one per policy object) of the token reservations to settle."""


def _scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _key(ctx: RequestContext) -> str | None:
    key = ctx.key
    if not key:
        return None
    return _scalar(key.get("id")) or _scalar(key.get("name"))


def _identity(field: str) -> Extract:
    def extract(ctx: RequestContext) -> str | None:
        identity = ctx.identity
        return _scalar(identity.get(field)) if identity else None

    return extract


def _model(ctx: RequestContext) -> str | None:
    llm = ctx.attrs.get("llm")
    return _scalar(llm.get("model")) if isinstance(llm, dict) else None


def _route(ctx: RequestContext) -> str | None:
    return ctx.route or None


def _mcp_tool(ctx: RequestContext) -> str | None:
    mcp = ctx.attrs.get("mcp")
    if isinstance(mcp, dict) and mcp.get("kind") == "tool":
        return _scalar(mcp.get("name"))
    return None


def _a2a_agent(ctx: RequestContext) -> str | None:
    a2a = ctx.attrs.get("a2a")
    return _scalar(a2a.get("agent")) if isinstance(a2a, dict) else None


def _source_ip(ctx: RequestContext) -> str | None:
    return ctx.client_ip or None


def _claim(path: str) -> Extract:
    parts = path.split(".")

    def extract(ctx: RequestContext) -> str | None:
        value: Any = ctx.jwt
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return _scalar(value)

    return extract


_EXTRACTORS: Final[dict[str, Extract]] = {
    "key": _key,
    "user": _identity("user"),
    "team": _identity("team"),
    "model": _model,
    "route": _route,
    "mcp.tool": _mcp_tool,
    "a2a.agent": _a2a_agent,
    "source_ip": _source_ip,
}


def extractor(key: str) -> Extract:
    """How a limit's `key` reads its counted value from a request (None: not limited)."""
    if key.startswith("jwt."):
        return _claim(key[len("jwt.") :])
    return _EXTRACTORS[key]


def spec_of(limit: LimitConfig) -> LimitSpec:
    """The limiter's view of one configured limit."""
    measure: Measure = "requests" if limit.requests is not None else "tokens"
    count = limit.requests if limit.requests is not None else limit.tokens
    assert count is not None  # the config allows exactly one
    return LimitSpec(
        name=limit.name or f"{limit.key}:{measure}",
        measure=measure,
        limit=count,
        window=limit.window,
        mode=limit.mode,
        token_kind=limit.token_kind,
    )


def _is_llm_call(ctx: RequestContext) -> bool:
    llm = ctx.attrs.get("llm")
    return isinstance(llm, dict) and llm.get("api") != "models"


def _estimate(ctx: RequestContext) -> int:
    value = ctx.attrs.get("llm.estimate")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class RateLimitPolicy(Policy):
    """Rate limits by requests and LLM tokens (see the module docstring)."""

    phases: frozenset[Phase] = frozenset({"parsed", "finish"})
    uses_accounting = True

    def __init__(self, config: RateLimitConfig, *, accounting: AccountingConfig | None) -> None:
        self.config = config
        self.limiter = limiter_for(
            accounting, on_store_error=config.on_store_error, timeout=config.store_timeout
        )
        self.limits: tuple[tuple[LimitSpec, Extract], ...] = tuple(
            (spec_of(limit), extractor(limit.key)) for limit in config.limits
        )
        self.has_tokens = any(spec.measure == "tokens" for spec, _ in self.limits)
        self._held = f"{_HELD_PREFIX}{id(self)}"

    async def start(self) -> None:
        if any(spec.mode == "global" for spec, _ in self.limits):
            await self.limiter.warm()

    async def close(self) -> None:
        await self.limiter.close()  # write queued token settlements (Redis) now

    async def on_parsed(self, ctx: RequestContext) -> None:
        llm_call = self.has_tokens and _is_llm_call(ctx)
        items: list[tuple[LimitSpec, str]] = []
        for spec, extract in self.limits:
            if spec.measure == "tokens" and not llm_call:
                continue
            value = extract(ctx)
            if value is not None:
                items.append((spec, value))
        if not items:
            return
        hits = await self.limiter.acquire(items, _estimate(ctx) if llm_call else 0)
        if llm_call:
            held = [hit for hit in hits if hit.spec.measure == "tokens"]
            if held:
                previous: list[Hit] | None = ctx.attrs.get(self._held)
                if previous is None:
                    ctx.attrs[self._held] = held
                else:
                    previous.extend(held)
        self.limiter.show(ctx, hits)

    async def on_finish(self, ctx: RequestContext) -> None:
        held: list[Hit] | None = ctx.attrs.pop(self._held, None)
        if held:
            await self.limiter.settle(held, ctx.attrs.get("llm.usage"))
