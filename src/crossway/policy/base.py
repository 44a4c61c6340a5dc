"""The policy interface, the three-phase chain, and the factory from config.

A request meets a route's policies in three phases:

- `request` — headers known, nothing parsed: authentication, CORS, IP rules, coarse rules;
- `parsed` — the backend has decoded what is being called (`llm.model`, `mcp.tool`,
  `a2a.skill`): fine authorization (and later limits, budgets, input guards);
- `response` — usage and output known (token debits, spend, output guards).

The app runs the `request` phase before the backend; a backend that decodes requests calls
`chain.parsed(ctx)` at its decision point and `chain.response(ctx)` when usage is known; for a
backend that parses nothing (plain HTTP), the app runs the `parsed` phase right after `request`.
Policies never import a protocol package; a backend only contributes attributes
(`ctx.attrs["llm"]`...). A route without policies has no chain at all (`ctx.chain is None`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypeVar

from crossway.errors import GatewayError
from crossway.server.context import RequestContext
from crossway.telemetry import tracing
from crossway.types import Scope

log = logging.getLogger("crossway.policy")
_T = TypeVar("_T")

Phase = Literal["request", "parsed", "response", "finish"]
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
"""A response a policy sends itself instead of the backend (a CORS preflight answer)."""


class Policy:
    """One policy. Override the hooks of the phases it acts in; raise a
    `crossway.errors.GatewayError` to refuse (the route's protocol renders it)."""

    phases: frozenset[Phase] = frozenset({"request"})
    """The phases whose hooks this policy implements (a class default; an instance may
    choose, e.g. an authorization policy whose rules read `llm` acts in `parsed`)."""
    early: bool = False
    """Run before the other request-phase policies, wherever it is listed (CORS: a browser's
    preflight carries no credentials, so authentication must not see it first)."""

    async def start(self) -> None:
        """Fetch keys, open clients (once per config snapshot)."""

    async def close(self) -> None:
        """Release what `start` acquired."""

    async def on_request(self, scope: Scope, ctx: RequestContext) -> Reply | None:
        """Request phase; return a `Reply` to answer the request without the backend."""
        return None

    async def on_parsed(self, ctx: RequestContext) -> None:
        """Parsed phase: `ctx.attrs` holds the protocol's attributes."""

    async def on_response(self, ctx: RequestContext) -> None:
        """Response phase: usage is in `ctx.attrs` (`llm.usage`...)."""

    async def on_finish(self, ctx: RequestContext) -> None:
        """After the request ended, however it ended (answered, refused, failed, the client
        gone): settle reservations, record spend. `ctx.attrs["llm.usage"]` is set when usage
        is known. Must not raise."""

    def visible(self, ctx: RequestContext, attrs: Mapping[str, Mapping[str, Any]]) -> bool:
        """Whether an item of a list (a tool, a model) may be shown to this caller;
        `attrs` are protocol attributes as in the parsed phase, without call arguments."""
        return True


class PolicyChain:
    """The policies of one route, by phase, in config order (listener, backend, route)."""

    __slots__ = (
        "filters",
        "finish_policies",
        "guards",
        "parsed_policies",
        "policies",
        "request_policies",
        "response_policies",
    )

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies = tuple(policies)
        requests = [p for p in policies if "request" in p.phases]
        self.request_policies = tuple(sorted(requests, key=lambda p: not p.early))  # stable
        self.parsed_policies = tuple(p for p in policies if "parsed" in p.phases)
        self.response_policies = tuple(p for p in policies if "response" in p.phases)
        self.finish_policies = tuple(p for p in policies if "finish" in p.phases)
        self.filters = tuple(p for p in policies if type(p).visible is not Policy.visible)
        self.guards: tuple[Any, ...] = tuple(
            p for p in policies if getattr(p, "guards_content", False)
        )  # `guardrails` policies, which backends call with content (crossway.policy.guardrails)

    async def request(self, scope: Scope, ctx: RequestContext) -> Reply | None:
        """Run the request phase; a `Reply` means: answer with it, skip the backend."""
        if tracing._tracer is not None and tracing.recording():
            return await self._traced("request", ctx, self._request(scope, ctx))
        for policy in self.request_policies:
            reply = await policy.on_request(scope, ctx)
            if reply is not None:
                return reply
        return None

    async def _request(self, scope: Scope, ctx: RequestContext) -> Reply | None:
        for policy in self.request_policies:
            reply = await policy.on_request(scope, ctx)
            if reply is not None:
                return reply
        return None

    async def parsed(self, ctx: RequestContext) -> None:
        """Run the parsed phase (backends call this once they know what is being called)."""
        if tracing._tracer is not None and tracing.recording():
            await self._traced("parsed", ctx, self._parsed(ctx))
            return
        for policy in self.parsed_policies:
            await policy.on_parsed(ctx)

    async def _parsed(self, ctx: RequestContext) -> None:
        for policy in self.parsed_policies:
            await policy.on_parsed(ctx)

    async def response(self, ctx: RequestContext) -> None:
        """Run the response phase. Errors are logged, never raised: the answer is sent."""
        if tracing._tracer is not None and tracing.recording():
            await self._traced("response", ctx, self._response(ctx))
            return
        for policy in self.response_policies:
            try:
                await policy.on_response(ctx)
            except GatewayError as exc:
                log.warning("route %s: response-phase policy refused: %s", ctx.route, exc)

    async def _response(self, ctx: RequestContext) -> None:
        for policy in self.response_policies:
            try:
                await policy.on_response(ctx)
            except GatewayError as exc:
                log.warning("route %s: response-phase policy refused: %s", ctx.route, exc)

    async def finish(self, ctx: RequestContext) -> None:
        """Run the finish phase (the app calls it once the request ended). Never raises."""
        if tracing._tracer is not None and tracing.recording():
            await self._traced("finish", ctx, self._finish(ctx))
            return
        for policy in self.finish_policies:
            try:
                await policy.on_finish(ctx)
            except Exception:
                log.exception("route %s: finish-phase policy failed", ctx.route)

    async def _finish(self, ctx: RequestContext) -> None:
        for policy in self.finish_policies:
            try:
                await policy.on_finish(ctx)
            except Exception:
                log.exception("route %s: finish-phase policy failed", ctx.route)

    async def _traced(self, phase: Phase, ctx: RequestContext, run: Awaitable[_T]) -> _T:
        """`run` inside a `crossway.policy.{phase}` span (only called while tracing is on);
        a refusal gives the span an error status naming it."""
        with tracing.span(f"crossway.policy.{phase}", {"crossway.route": ctx.route}):
            return await run

    def visible(self, ctx: RequestContext, attrs: Mapping[str, Mapping[str, Any]]) -> bool:
        """Whether every list-filtering policy shows this item to the caller."""
        return all(p.visible(ctx, attrs) for p in self.filters)

    async def start(self) -> None:
        for policy in self.policies:
            await policy.start()

    async def close(self) -> None:
        for policy in self.policies:
            try:
                await policy.close()
            except Exception:
                log.exception("error while closing a policy")


async def parsed(ctx: RequestContext) -> None:
    """Run the parsed phase of `ctx`'s chain, if it has one (what backends call)."""
    chain = ctx.chain
    if chain is not None and chain.parsed_policies:
        await chain.parsed(ctx)


def visible(ctx: RequestContext, attrs: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether `ctx`'s chain shows a list item (True without filtering policies)."""
    chain = ctx.chain
    return chain is None or not chain.filters or chain.visible(ctx, attrs)


POLICY_CLASSES: Final = {
    "api_key": "crossway.policy.api_key:ApiKeyPolicy",
    "jwt": "crossway.policy.jwt_policy:JwtPolicy",
    "authorization": "crossway.policy.authorization:AuthorizationPolicy",
    "basic_auth": "crossway.policy.basic_auth:BasicAuthPolicy",
    "mtls": "crossway.policy.mtls:MtlsPolicy",
    "ext_authz": "crossway.policy.ext_authz:ExtAuthzPolicy",
    "cors": "crossway.policy.cors:CorsPolicy",
    "ip": "crossway.policy.ip_filter:IpFilterPolicy",
    "virtual_key": "crossway.policy.virtual_key:VirtualKeyPolicy",
    "rate_limit": "crossway.policy.rate_limit:RateLimitPolicy",
    "guardrails": "crossway.policy.guardrails:GuardrailPolicy",
}
"""Policy `type` -> the class that implements it (imported when first used)."""


def build_policy(config: Any, accounting: Any = None) -> Policy:
    """Build the runtime policy for one configured policy (its `type` picks the class).
    Classes with `uses_accounting` also get the root `accounting` config."""
    module, _, name = POLICY_CLASSES[config.type].partition(":")
    cls = getattr(importlib.import_module(module), name)
    policy: Policy = (
        cls(config, accounting=accounting)
        if getattr(cls, "uses_accounting", False)
        else cls(config)
    )
    return policy


def build_chain(configs: Iterable[Any], accounting: Any = None) -> PolicyChain | None:
    """The chain of these policies, or None when there are none (a route pays nothing).
    `accounting` is the root config's `accounting` section (stores of keys, spend, limits)."""
    policies = [build_policy(c, accounting) for c in configs]
    return PolicyChain(policies) if policies else None
