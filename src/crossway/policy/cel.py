"""CEL rules over Crossway's one attribute model (protocol-neutral).

Rules are compiled once, at config load, by the CEL C++ runtime `cel-expr-python` (a few
microseconds per evaluation). Every rule sees the same variables, each a map (`{}` when it does
not apply to the request):

- `request`: `method`, `path`, `host`, `scheme`, `headers` (lower-case name -> value),
  `source` (`address`, `port`: the real client address, see `listen.trusted_proxies`);
- `jwt`: the claims of a verified JWT — only ever a verified JWT;
- `key`: the API key the caller presented (`name`; a virtual key adds `id`, `user`, `team`,
  `metadata`);
- `identity`: the authenticated caller, whatever the method: `sub`, `method` (`jwt`,
  `api_key`, `basic`, `mtls`, `ext_authz`) and what that method adds;
- `llm`: `model`, `stream`, `api`, and in the response phase `provider` and `usage`
  (`input_tokens`, `output_tokens`, `cached_tokens`, `reasoning_tokens`, `total_tokens`);
- `mcp`: `server`, `kind` (`tool`, `prompt`, `resource`), `name`, `target` (the name at the
  server), `tool.name`, `prompt.name`, `resource.uri`, `arguments`;
- `a2a`: `agent`, `skill`, `method`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cel_expr_python import cel

VARIABLES: Final = ("request", "jwt", "key", "identity", "llm", "mcp", "a2a")
PROTOCOL_VARIABLES: Final = frozenset({"llm", "mcp", "a2a"})
_DYN_MAP: Final = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
_ENV: Final = cel.NewEnv(variables={name: _DYN_MAP for name in VARIABLES})
_WORD: Final = re.compile(r"\b(" + "|".join(VARIABLES) + r")\b")
_READS_ARGUMENTS: Final = re.compile(r"\barguments\b|\ba2a\.(?:method|skill)\b")
"""What only a call has, never a list item: MCP call arguments, the A2A method and skill."""
EMPTY: Final[Mapping[str, Any]] = {}


class RuleError(ValueError):
    """A rule that does not compile (or does not return a bool)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled CEL rule and what it reads."""

    source: str
    program: Any
    reads: frozenset[str]
    """The variables the rule names (`request`, `jwt`, `llm`...)."""
    reads_arguments: bool
    """Whether it reads what only a call has (`mcp.arguments`, `a2a.method`, `a2a.skill`):
    lists cannot decide it (an allow rule that fails on it keeps the item listed, a deny rule
    is left to the call)."""


@functools.lru_cache(maxsize=4096)
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
        source=source,
        program=program,
        reads=frozenset(_WORD.findall(source)),
        reads_arguments=bool(_READS_ARGUMENTS.search(source)),
    )


def activation(
    variables: Mapping[str, Mapping[str, Any] | None], names: Iterable[str] = VARIABLES
) -> Any:
    """A CEL activation binding the variables `names` (missing ones as `{}`; pass only those
    the rules read: binding costs per variable); raises `ValueError` for values CEL cannot
    represent (e.g. integers beyond 64 bits)."""
    try:
        return _ENV.Activation({name: variables.get(name) or EMPTY for name in names})
    except Exception as exc:
        raise ValueError(f"attributes CEL cannot represent: {exc}") from None


def evaluate(rule: Rule, bound: Any) -> bool | None:
    """True/False, or None when the rule failed to evaluate or did not yield a bool."""
    try:
        # An evaluation error comes back as a value holding the message (a str), never a bool.
        result = rule.program.eval(bound).value()
    except Exception:
        return None
    return result if isinstance(result, bool) else None


def quote(value: str) -> str:
    """A CEL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


__all__ = [
    "PROTOCOL_VARIABLES",
    "VARIABLES",
    "Rule",
    "RuleError",
    "activation",
    "compile_rule",
    "evaluate",
    "quote",
]
