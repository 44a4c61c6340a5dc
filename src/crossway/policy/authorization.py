"""CEL authorization: allow / deny rules over the one attribute model (`crossway.policy.cel`).

Decision: any `deny` rule true -> 403; otherwise, when `allow` rules exist, one must be true.
A rule that fails to evaluate (a missing key such as `jwt.sub` for an anonymous caller) counts
as true for `deny` and false for `allow`: fail closed.

A policy whose rules read only `request`, `jwt`, `key` and `identity` decides in the request
phase; one whose rules read `llm`, `mcp` or `a2a` decides in the parsed phase, once the backend
has said what is being called (if it also reads `request`, that map is taken in the request
phase, while the request's scope is at hand). Lists (MCP tools, prompts, resources) are filtered by the same
rules (`visible`), so a caller never sees what it may not call. A list has no arguments, so
for rules that read `mcp.arguments` a list asks "could some call be allowed": such an `allow`
rule that is true or fails counts as allowing, and such a `deny` rule is left to the call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import orjson

from crossway.config.policy import AuthorizationConfig, RolesConfig
from crossway.errors import Forbidden
from crossway.policy import cel
from crossway.policy.base import Phase, Policy, Reply
from crossway.server.context import RequestContext
from crossway.telemetry.metrics_mcp_a2a import observe_authorization_denial
from crossway.types import Scope

log = logging.getLogger("crossway.policy.authorization")

DECISION_CACHE_SIZE: Final = 65536
"""List decisions remembered per (caller, item); cleared when full."""
_FINGERPRINT: Final = "authz.caller"
_PROTOCOLS: Final = ("llm", "mcp", "a2a")


def role_rules(roles: RolesConfig) -> list[str]:
    """The `allow` rules a role table stands for."""
    claim = f"jwt.{roles.claim}"
    rules: list[str] = []
    for role, grant in roles.grants.items():
        if role == "*":
            who = "has(identity.sub)"
        else:
            value = cel.quote(role)
            who = f"({claim} == {value} || (type({claim}) == list && {value} in {claim}))"
        for attr, names in (
            ("llm.model", grant.models),
            ("mcp.tool.name", grant.tools),
            ("a2a.agent", grant.agents),
        ):
            if not names:
                continue
            if "*" in names:
                rules.append(f'{who} && {attr} != ""')
            else:
                listed = ", ".join(cel.quote(n) for n in names)
                rules.append(f"{who} && {attr} in [{listed}]")
    return rules


class AuthorizationPolicy(Policy):
    """Allows or forbids a request (or a list item) by CEL rules."""

    def __init__(self, config: AuthorizationConfig) -> None:
        allow = list(config.allow)
        if config.roles is not None:
            allow.extend(role_rules(config.roles))
        self.allow_rules = tuple(cel.compile_rule(source) for source in allow)
        self.deny_rules = tuple(cel.compile_rule(source) for source in config.deny)
        rules = self.allow_rules + self.deny_rules
        reads = frozenset().union(*(r.reads for r in rules))
        self._reads = tuple(sorted(reads))
        self.reads_request = "request" in reads
        self.reads_arguments = any(r.reads_arguments for r in rules)
        self._decides_in: Phase = "parsed" if reads & cel.PROTOCOL_VARIABLES else "request"
        phases: set[Phase] = {self._decides_in}
        if self._decides_in == "parsed" and self.reads_request:
            phases.add("request")  # the parsed phase has no scope: take `request` while we can
        self.phases = frozenset(phases)
        self._decisions: dict[bytes, bool] = {}

    # -- phases ---------------------------------------------------------------------------------

    async def on_request(self, scope: Scope, ctx: RequestContext) -> Reply | None:
        if self._decides_in == "parsed":
            request_attributes(scope, ctx)  # kept in ctx.attrs for the parsed phase and lists
            return None
        self._enforce(ctx, scope)
        return None

    async def on_parsed(self, ctx: RequestContext) -> None:
        self._enforce(ctx, None)

    def _enforce(self, ctx: RequestContext, scope: Scope | None) -> None:
        if self.reads_request or self.reads_arguments:
            allowed = self._decide(self._variables(ctx, ctx.attrs, scope), listing=False)
        else:
            allowed = self._remembered(ctx, ctx.attrs, listing=False)
        if not allowed:
            target = next((p for p in _PROTOCOLS if ctx.attrs.get(p)), "request")
            observe_authorization_denial("authorization", ctx.route, target)
            raise Forbidden(_what(ctx.attrs) + " is not allowed", code="forbidden")

    def visible(self, ctx: RequestContext, attrs: Mapping[str, Mapping[str, Any]]) -> bool:
        if self.reads_request:
            return self._decide(self._variables(ctx, attrs, None), listing=True)
        return self._remembered(ctx, attrs, listing=True)

    def _remembered(self, ctx: RequestContext, attrs: Mapping[str, Any], *, listing: bool) -> bool:
        """The decision for rules that read neither `request` nor call arguments: it depends
        only on the caller and the protocol attributes, so it is remembered per (caller,
        attributes) — a tools/list of a thousand tools, or the thousandth request of a caller
        for one model, costs a dict lookup."""
        caller = ctx.attrs.get(_FINGERPRINT)
        if caller is None:
            caller = ctx.attrs[_FINGERPRINT] = _fingerprint(ctx)
        try:
            key = caller + orjson.dumps(
                [listing, *(attrs.get(name) for name in _PROTOCOLS)],
                option=orjson.OPT_SORT_KEYS,
            )
        except TypeError:
            return self._decide(self._variables(ctx, attrs, None), listing=listing)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(self._variables(ctx, attrs, None), listing=listing)
            if len(self._decisions) >= DECISION_CACHE_SIZE:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    # -- evaluation -----------------------------------------------------------------------------

    def _variables(
        self, ctx: RequestContext, attrs: Mapping[str, Any], scope: Scope | None
    ) -> dict[str, Any]:
        variables: dict[str, Any] = {
            "jwt": ctx.jwt,
            "key": ctx.key,
            "identity": ctx.identity,
            "llm": attrs.get("llm"),
            "mcp": attrs.get("mcp"),
            "a2a": attrs.get("a2a"),
        }
        if self.reads_request:
            variables["request"] = request_attributes(scope, ctx)
        return variables

    def _decide(self, variables: Mapping[str, Any], *, listing: bool) -> bool:
        try:
            bound = cel.activation(variables, self._reads)
        except ValueError:
            log.warning("authorization: cannot evaluate the request's attributes; denying")
            return False
        for rule in self.deny_rules:
            if listing and rule.reads_arguments:
                continue
            if cel.evaluate(rule, bound) is not False:
                return False
        if not self.allow_rules:
            return True
        for rule in self.allow_rules:
            outcome = cel.evaluate(rule, bound)
            if outcome is True or (outcome is None and listing and rule.reads_arguments):
                return True
        return False


def request_attributes(scope: Scope | None, ctx: RequestContext) -> dict[str, Any]:
    """CEL's `request` map (built once per request, only for rules that read it)."""
    cached = ctx.attrs.get("request")
    if cached is not None or scope is None:
        return cached or {}
    headers: dict[str, str] = {}
    host = ""
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        if key not in headers:
            headers[key] = value.decode("latin-1")
    host = headers.get("host", "")
    client = scope.get("client") or ("", 0)
    address = getattr(ctx, "client_ip", None) or client[0]
    attrs = {
        "method": scope["method"],
        "path": scope["path"],
        "host": host,
        "scheme": scope.get("scheme", "http"),
        "headers": headers,
        "source": {"address": address, "port": client[1]},
    }
    ctx.attrs["request"] = attrs
    return attrs


def _fingerprint(ctx: RequestContext) -> bytes:
    try:
        return orjson.dumps((ctx.jwt, ctx.key, ctx.identity), option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return repr((ctx.jwt, ctx.key, ctx.identity)).encode()


def _what(attrs: Mapping[str, Any]) -> str:
    """A few words naming what was refused."""
    mcp = attrs.get("mcp")
    if mcp:
        return f"{mcp.get('kind', 'call')} {mcp.get('name', '')!r}"
    llm = attrs.get("llm")
    if llm:
        return f"model {llm.get('model', '')!r}"
    a2a = attrs.get("a2a")
    if a2a:
        return f"agent {a2a.get('agent', '')!r}"
    return "this request"


__all__ = ["AuthorizationPolicy", "request_attributes", "role_rules"]
