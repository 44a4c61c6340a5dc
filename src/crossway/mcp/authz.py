"""Authorization of MCP tools, prompts and resources with CEL rules.

Rules are CEL expressions (compiled once, when the config is loaded, by the CEL C++ runtime
`cel-expr-python`: a few microseconds per evaluation) over three variables:

- `mcp`: `kind` (`"tool"`, `"prompt"`, `"resource"`), `name` (the name or URI the client sees),
  `server` (the upstream's name), `tool.name`, `prompt.name`, `resource.uri` (empty strings
  when not that kind), `target` (the name or URI at the upstream), `arguments` (the call's
  arguments; `{}` in lists);
- `jwt`: the caller's token claims (`{}` when the caller presented none);
- `identity`: whatever the authentication policy established about the caller (`{}` if none).

Decision for a call: any `deny` rule true -> forbidden; otherwise, when `allow` rules exist, one
of them must be true. A rule that fails to evaluate (a missing key such as `jwt.sub` for an
anonymous caller) counts as true for `deny` and false for `allow` (fail closed).

Lists are filtered by the same rules, so a caller never sees what it may not call. A list has no
arguments, so for rules that read `mcp.arguments` the list asks "could some call be allowed":
such an `allow` rule that is true or fails counts as allowing, and such a `deny` rule is left
to the call itself.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import orjson
from cel_expr_python import cel

from crossway.config.mcp_security import McpAuthorizationConfig
from crossway.errors import Forbidden

log = logging.getLogger("crossway.mcp.authz")

TargetKind = Literal["tool", "prompt", "resource"]
T = TypeVar("T")

_DYN_MAP: Final = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
_ENV: Final = cel.NewEnv(variables={"mcp": _DYN_MAP, "jwt": _DYN_MAP, "identity": _DYN_MAP})
_READS_ARGUMENTS: Final = re.compile(r"\barguments\b")
_EMPTY: Final[Mapping[str, Any]] = {}
_NO_IDENTITY: Final = object()
DECISION_CACHE_SIZE: Final = 65536
"""Decisions remembered per (caller identity, kind, name); cleared when full."""


class RuleError(ValueError):
    """A rule that does not compile (or does not return a bool)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled CEL rule."""

    source: str
    program: Any
    reads_arguments: bool


@functools.lru_cache(maxsize=1024)
def compile_rule(source: str) -> Rule:
    """Compile and type-check a rule; raise `RuleError` with CEL's message if it is invalid."""
    try:
        program = _ENV.compile(source)
    except RuntimeError as exc:
        raise RuleError(str(exc).removeprefix("INVALID_ARGUMENT: ").strip()) from None
    returns = program.return_type()
    if returns != cel.Type.BOOL and returns != cel.Type.DYN:
        raise RuleError(f"rule must return a bool, not {returns.name()}")
    return Rule(
        source=source, program=program, reads_arguments=bool(_READS_ARGUMENTS.search(source))
    )


@dataclass(frozen=True, slots=True)
class McpTarget:
    """What a request is about: one tool, prompt or resource."""

    kind: TargetKind
    name: str
    """Name (tool, prompt) or URI (resource, resource template) as the client sees it."""
    server: str = ""
    """The upstream server that provides it."""
    target: str = ""
    """Its name or URI at the upstream (defaults to `name`)."""


def _mcp_attrs(target: McpTarget, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    kind = target.kind
    return {
        "kind": kind,
        "name": target.name,
        "server": target.server,
        "target": target.target or target.name,
        "tool": {"name": target.name if kind == "tool" else ""},
        "prompt": {"name": target.name if kind == "prompt" else ""},
        "resource": {"uri": target.name if kind == "resource" else ""},
        "arguments": dict(arguments) if arguments else {},
    }


NameSplitter = Callable[[str], "tuple[str, str] | None"]
"""Maps a federated name (or URI) to `(server, name at the server)`, None if it is not one."""


class McpAuthorizer:
    """Decides, per caller, which tools, prompts and resources are visible and callable.

    Calling the object is the gateway's `crossway.mcp.hooks.Authorizer` hook:
    `authorizer(identity, kind, name, arguments)`, with `arguments` None for lists. The identity
    is seen by rules as `identity` and, when it holds token claims, as `jwt`.
    """

    def __init__(
        self,
        config: McpAuthorizationConfig,
        *,
        split_name: NameSplitter | None = None,
        split_uri: NameSplitter | None = None,
    ) -> None:
        self.allow_rules = tuple(compile_rule(source) for source in config.allow)
        self.deny_rules = tuple(compile_rule(source) for source in config.deny)
        self._split_name = split_name
        self._split_uri = split_uri
        self._reads_arguments = any(r.reads_arguments for r in self.allow_rules + self.deny_rules)
        self._decisions: dict[tuple[bytes, str, str, bool], bool] = {}
        self._last_identity: object = _NO_IDENTITY
        self._last_fingerprint: bytes | None = None

    def target(self, kind: str, name: str) -> McpTarget:
        """The `McpTarget` of a federated name or URI (`resource_template` counts as resource)."""
        is_uri = kind in ("resource", "resource_template")
        splitter = self._split_uri if is_uri else self._split_name
        routed = splitter(name) if splitter is not None else None
        server, original = routed if routed is not None else ("", name)
        return McpTarget(
            kind="resource" if is_uri else ("prompt" if kind == "prompt" else "tool"),
            name=name,
            server=server,
            target=original,
        )

    def __call__(
        self,
        identity: dict[str, Any] | None,
        kind: str,
        name: str,
        arguments: dict[str, Any] | None,
    ) -> bool:
        if not self.active:
            return True
        listing = arguments is None
        if not listing and self._reads_arguments:
            return self._decide(self.target(kind, name), identity, identity, arguments, False)
        # The decision depends only on (identity, kind, name): remember it, so a tools/list of
        # a thousand tools costs a thousand dict lookups after the first time.
        fingerprint = self._fingerprint(identity)
        if fingerprint is None:
            return self._decide(self.target(kind, name), identity, identity, arguments, listing)
        key = (fingerprint, kind, name, listing)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(self.target(kind, name), identity, identity, arguments, listing)
            if len(self._decisions) >= DECISION_CACHE_SIZE:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _fingerprint(self, identity: dict[str, Any] | None) -> bytes | None:
        if identity is self._last_identity:
            return self._last_fingerprint
        try:
            fingerprint = orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            fingerprint = None
        self._last_identity, self._last_fingerprint = identity, fingerprint
        return fingerprint

    @property
    def active(self) -> bool:
        """False when there are no rules (everything is allowed)."""
        return bool(self.allow_rules or self.deny_rules)

    def _decide(
        self,
        target: McpTarget,
        claims: Mapping[str, Any] | None,
        identity: Mapping[str, Any] | None,
        arguments: Mapping[str, Any] | None,
        listing: bool,
    ) -> bool:
        if not self.active:
            return True
        try:
            activation = _ENV.Activation(
                {
                    "mcp": _mcp_attrs(target, arguments),
                    "jwt": dict(claims) if claims else {},
                    "identity": dict(identity) if identity else {},
                }
            )
        except Exception:  # values CEL cannot represent (e.g. integers beyond 64 bits)
            log.warning("mcp authorization: cannot evaluate request attributes; denying")
            return False
        for rule in self.deny_rules:
            if listing and rule.reads_arguments:
                continue
            outcome = _evaluate(rule, activation)
            if outcome is not False:
                return False
        if not self.allow_rules:
            return True
        for rule in self.allow_rules:
            outcome = _evaluate(rule, activation)
            if outcome is True or (outcome is None and listing and rule.reads_arguments):
                return True
        return False

    def allows(
        self,
        target: McpTarget,
        *,
        claims: Mapping[str, Any] | None = None,
        identity: Mapping[str, Any] | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> bool:
        """Whether this call (`tools/call`, `prompts/get`, `resources/read`) is allowed."""
        return self._decide(target, claims, identity, arguments, listing=False)

    def visible(
        self,
        target: McpTarget,
        *,
        claims: Mapping[str, Any] | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> bool:
        """Whether a list shows this item to the caller."""
        return self._decide(target, claims, identity, None, listing=True)

    def check(
        self,
        target: McpTarget,
        *,
        claims: Mapping[str, Any] | None = None,
        identity: Mapping[str, Any] | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Raise `Forbidden` unless the call is allowed."""
        if not self.allows(target, claims=claims, identity=identity, arguments=arguments):
            raise Forbidden(f"{target.kind} {target.name!r} is not allowed", code="forbidden")

    def filter(
        self,
        items: Iterable[T],
        target_of: Callable[[T], McpTarget],
        *,
        claims: Mapping[str, Any] | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> list[T]:
        """The items of a list the caller may see (order kept)."""
        if not self.active:
            return list(items)
        return [
            item
            for item in items
            if self._decide(target_of(item), claims, identity, None, listing=True)
        ]


def _evaluate(rule: Rule, activation: Any) -> bool | None:
    """True/False, or None when the rule failed to evaluate or did not yield a bool."""
    try:
        # An evaluation error comes back as a value holding the message (a str), never a bool.
        result = rule.program.eval(activation).value()
    except Exception:
        return None
    return result if isinstance(result, bool) else None


__all__ = ["McpAuthorizer", "McpTarget", "Rule", "RuleError", "compile_rule"]
