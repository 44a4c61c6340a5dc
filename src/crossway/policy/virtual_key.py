"""Virtual keys: `Authorization: Bearer sk-cw-...` or `x-api-key: sk-cw-...`.

A key is looked up by its SHA-256 digest in this process's `Ledger` (in memory; the store is
polled for changes). Then, per phase:

- request: the key must exist, not be revoked or expired; it becomes the caller's identity
  (`identity.user`, `identity.team`, CEL's `key.name`/`key.user`/`key.team`/`key.metadata`);
- parsed: the key's scopes (models, MCP tools, A2A agents), then for an LLM call the budgets of
  the key, its user and its team, and the rpm/tpm of all three (each counted on its own, so the
  tightest wins);
- finish: token reservations settled with the real usage, the call's spend recorded against the
  key, the user and the team.

Bearer tokens that are not virtual keys (a JWT, another gateway key) are left to other policies.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from crossway.config.accounting import AccountingConfig, BudgetLimits, VirtualKeyConfig
from crossway.errors import Forbidden, ServiceUnavailable, Unauthenticated
from crossway.policy.authn import AuthnPolicy, consume
from crossway.policy.ledger import Budget, Ledger, ledger_for
from crossway.policy.limits import Hit, Limiter, LimitSpec, limiter_for
from crossway.server.context import RequestContext
from crossway.store.accounting import KEY_PREFIX, SpendRecord, VirtualKey
from crossway.types import Scope

CHALLENGE: Final = {"www-authenticate": 'Bearer realm="crossway"'}
_PREFIX: Final = KEY_PREFIX.encode()
_KEY: Final = "virtual_key.key"
_HITS: Final = "virtual_key.hits"
_BUDGETS: Final = "virtual_key.budgets"
MINUTE: Final = 60.0
MAX_PLANS: Final = 100_000
"""Keys whose limits are remembered (then forgotten all at once)."""


class VirtualKeyPolicy(AuthnPolicy):
    """Authenticate with a virtual key; enforce its scopes, budgets and limits; record spend."""

    method = "virtual_key"
    phases = frozenset({"request", "parsed", "finish"})
    uses_accounting = True
    reads_bearer = True

    def __init__(self, config: VirtualKeyConfig, *, accounting: AccountingConfig) -> None:
        super().__init__(config.mode)
        self.config = config
        self.accounting = accounting
        self.ledger: Ledger = ledger_for(accounting)
        self.limiter: Limiter = limiter_for(accounting, on_store_error=config.on_store_error)
        self._mode = "global" if accounting.store.type == "redis" else "local"
        self._plans: dict[tuple[str, bool], tuple[list[tuple[LimitSpec, str]], list[Budget]]] = {}
        self._generation = -1

    async def start(self) -> None:
        await self.ledger.acquire()
        if self._mode == "global":
            await self.limiter.warm()  # a cold burst must not meet an unconnected Redis

    async def close(self) -> None:
        await self.limiter.close()  # writes queued token settles
        await self.ledger.release()

    def missing(self, scope: Scope) -> Unauthenticated:
        return Unauthenticated(
            "missing API key: send a Crossway virtual key as 'Authorization: Bearer sk-cw-...'",
            code="missing_api_key",
            headers=dict(CHALLENGE),
        )

    # -- request --------------------------------------------------------------------------------

    async def authenticate(self, scope: Scope, ctx: RequestContext) -> bool:
        found = _presented(scope)
        if found is None:
            return False
        secret, header = found
        if not self.ledger.loaded:
            raise ServiceUnavailable(
                "virtual keys cannot be checked: the accounting store has not been read yet",
                code="accounting_store_unavailable",
                headers={"retry-after": "1"},
            )
        key = self.ledger.key(hashlib.sha256(secret).hexdigest())
        if key is None:
            raise _invalid("invalid API key")
        if key.revoked_at is not None:
            raise _invalid("this API key was revoked", "revoked_api_key")
        if key.expires_at is not None and time.time() >= key.expires_at:
            raise _invalid("this API key has expired", "expired_api_key")
        ctx.attrs[_KEY] = key
        ctx.key = {
            "name": key.name or key.id,
            "id": key.id,
            "user": key.user,
            "team": key.team,
            "metadata": key.metadata,  # read-only: policies and CEL never change it
        }
        if ctx.identity is None:
            ctx.identity = {
                "sub": key.user or key.id,
                "method": "virtual_key",
                "user": key.user,
                "team": key.team,
            }
        consume(ctx, header)
        if len(scope["headers"]) > 1:
            _consume_copy(scope, ctx, header, secret)
        return True

    # -- parsed ---------------------------------------------------------------------------------

    async def on_parsed(self, ctx: RequestContext) -> None:
        key: VirtualKey | None = ctx.attrs.get(_KEY)
        attrs = ctx.attrs
        llm = attrs.get("llm")
        if key is not None:
            _check_scope(key, attrs)
        if llm is None or llm.get("api") == "models":
            if key is not None and (attrs.get("mcp") or attrs.get("a2a")):
                await self._limit(ctx, key, tokens=None)
            return
        if self.config.record_spend and not self.ledger.accepting():
            raise ServiceUnavailable(
                "spend cannot be recorded (the accounting store is failing), so the call is "
                "not made",
                code="accounting_store_unavailable",
                headers={"retry-after": "5"},
            )
        if key is None:
            return
        budgets = self._plan(key, True)[1]
        attrs[_BUDGETS] = budgets
        await self.ledger.check_budgets(budgets)
        await self._limit(ctx, key, tokens=int(attrs.get("llm.estimate") or 0))

    def _budgets(self, key: VirtualKey) -> list[Budget]:
        out = [Budget(f"key:{key.id}", key.limits)]
        if key.user:
            limits = self.ledger.principal_limits("user", key.user)
            if limits is not None:
                out.append(Budget(f"user:{key.user}", limits))
        if key.team:
            limits = self.ledger.principal_limits("team", key.team)
            if limits is not None:
                out.append(Budget(f"team:{key.team}", limits))
        return out

    async def _limit(self, ctx: RequestContext, key: VirtualKey, tokens: int | None) -> None:
        items = self._plan(key, tokens is not None)[0]
        if not items:
            return
        hits = await self.limiter.acquire(items, tokens or 0)
        previous: list[Hit] | None = ctx.attrs.get(_HITS)
        ctx.attrs[_HITS] = hits if previous is None else [*previous, *hits]
        self.limiter.show(ctx, hits)  # with any rate_limit policy's: the tightest of each

    def _plan(self, key: VirtualKey, llm: bool) -> tuple[list[tuple[LimitSpec, str]], list[Budget]]:
        """The limits and budgets a key's calls count against, remembered until keys are
        reloaded (`Ledger.generation`)."""
        generation = self.ledger.generation
        if generation != self._generation:
            self._plans.clear()
            self._generation = generation
        plan = self._plans.get((key.digest, llm))
        if plan is None:
            if len(self._plans) > MAX_PLANS:
                self._plans.clear()
            plan = (list(self._limits(key, llm)), self._budgets(key))
            self._plans[key.digest, llm] = plan
        return plan

    def _limits(self, key: VirtualKey, llm: bool) -> Iterable[tuple[LimitSpec, str]]:
        scopes: list[tuple[str, str, BudgetLimits | None]] = [("key", key.id, key.limits)]
        if key.user:
            scopes.append(("user", key.user, self.ledger.principal_limits("user", key.user)))
        if key.team:
            scopes.append(("team", key.team, self.ledger.principal_limits("team", key.team)))
        for kind, who, limits in scopes:
            if limits is None:
                continue
            if limits.rpm:
                yield _spec(f"{kind} rpm", "requests", limits.rpm, self._mode), f"{kind}:{who}"
            if limits.tpm and llm:
                yield _spec(f"{kind} tpm", "tokens", limits.tpm, self._mode), f"{kind}:{who}"

    # -- finish ---------------------------------------------------------------------------------

    async def on_finish(self, ctx: RequestContext) -> None:
        attrs = ctx.attrs
        usage: Mapping[str, int] | None = attrs.get("llm.usage")
        hits: list[Hit] | None = attrs.get(_HITS)
        if hits:
            await self.limiter.settle(hits, usage)
        if usage is None or not self.config.record_spend:
            return
        key: VirtualKey | None = attrs.get(_KEY)
        identity = ctx.identity or {}
        now = time.time()
        record = SpendRecord(
            id=self.ledger.record_id(),
            ts=now,
            cost=float(attrs.get("llm.cost") or 0.0),
            request_id=ctx.request_id,
            trace_id=str(attrs.get("trace_id") or ctx.request_id),
            key_id=key.id if key is not None else None,
            user=key.user if key is not None else identity.get("user"),
            team=key.team if key is not None else identity.get("team"),
            model=attrs.get("llm.model"),
            provider=attrs.get("llm.provider"),
            route=ctx.route,
            api=attrs.get("llm.api"),
            input_tokens=int(usage.get("input_tokens", 0)),
            output_tokens=int(usage.get("output_tokens", 0)),
            cached_tokens=int(usage.get("cached_tokens", 0)),
            reasoning_tokens=int(usage.get("reasoning_tokens", 0)),
            periods=self.ledger.periods(now),
        )
        self.ledger.record(record, attrs.get(_BUDGETS) or ())

    # -- lists ----------------------------------------------------------------------------------

    def visible(self, ctx: RequestContext, attrs: Mapping[str, Mapping[str, Any]]) -> bool:
        key: VirtualKey | None = ctx.attrs.get(_KEY)
        if key is None:
            return True
        try:
            _check_scope(key, attrs)
        except Forbidden:
            return False
        return True


def _spec(name: str, measure: str, limit: int, mode: str) -> LimitSpec:
    return LimitSpec(name, measure, limit, MINUTE, mode)  # type: ignore[arg-type]


def _allowed(name: str, allowed: Sequence[str]) -> bool:
    return not allowed or any(
        name == pattern or ("*" in pattern and fnmatch.fnmatchcase(name, pattern))
        for pattern in allowed
    )


def _check_scope(key: VirtualKey, attrs: Mapping[str, Any]) -> None:
    """Raise `Forbidden` when the call is outside the key's models, tools or agents."""
    llm = attrs.get("llm")
    if llm is not None and key.models:
        model = llm.get("model")
        if isinstance(model, str) and not _allowed(model, key.models):
            raise Forbidden(
                f"this key may not use model {model!r} (allowed: {', '.join(key.models)})",
                code="model_not_allowed",
            )
    mcp = attrs.get("mcp")
    if mcp is not None and key.mcp_tools and mcp.get("kind") == "tool":
        tool = mcp.get("name")
        if isinstance(tool, str) and not _allowed(tool, key.mcp_tools):
            raise Forbidden(f"this key may not call tool {tool!r}", code="tool_not_allowed")
    a2a = attrs.get("a2a")
    if a2a is not None and key.agents:
        agent = a2a.get("agent")
        if isinstance(agent, str) and not _allowed(agent, key.agents):
            raise Forbidden(f"this key may not call agent {agent!r}", code="agent_not_allowed")


def _invalid(message: str, code: str = "invalid_api_key") -> Unauthenticated:
    return Unauthenticated(message, code=code, headers=dict(CHALLENGE))


def _presented(scope: Scope) -> tuple[bytes, bytes] | None:
    """A virtual key in `Authorization: Bearer` or `x-api-key`, with the header it came in."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            if value[:7].lower() == b"bearer ":
                token = value[7:].strip()
                if token.startswith(_PREFIX):
                    return token, name
        elif name == b"x-api-key":
            token = value.strip()
            if token.startswith(_PREFIX):
                return token, name
    return None


def _consume_copy(scope: Scope, ctx: RequestContext, used: bytes, secret: bytes) -> None:
    """Clients often send the key in both headers: never forward it upstream in either."""
    other = b"x-api-key" if used == b"authorization" else b"authorization"
    for name, value in scope["headers"]:
        if name == other and secret in value:
            consume(ctx, other)
