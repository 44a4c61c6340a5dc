"""Redaction: the one function every log, stored request and captured span content passes
through before it leaves the process.

Two kinds of rule, compiled once (`Redactor`):

- **patterns** (regular expressions): every match inside any string is replaced by `MASK`;
- **field paths** (dotted JSON paths): the whole value at that path is replaced by `MASK`.
  Segments are object keys (case-insensitive), `*` (any one key or list index) and `**`
  (any depth, including none); list items are reached by `*` or by their index:
  `messages.*.content`, `params.arguments.password`, `**.email`.

Built-in rules always apply, whatever the config says: values under keys named like
credentials (`authorization`, `x-api-key`, `api_key`, `cookie`, `password`, `client_secret`,
...) at any depth, and inside any string: `sk-...` keys (OpenAI, Anthropic and Crossway's own
`sk-cw-...`), `Bearer`/`Basic` credentials and JWTs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

MASK: Final = "**********"
"""What a redacted value or match becomes (the same mask as the effective config's)."""

SECRET_KEYS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "api_key",
        "apikey",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "access_token",
        "refresh_token",
        "id_token",
        "private_key",
    }
)
"""Object keys (lower-case) whose values are masked at any depth, always."""

SECRET_PATTERNS: Final = (
    r"\bsk-[A-Za-z0-9_\-]{6,}",  # OpenAI / Anthropic / Crossway (sk-cw-...) keys
    r"(?i:\bbearer)\s+[A-Za-z0-9._~+/=\-]{8,}",
    r"(?i:\bbasic)\s+[A-Za-z0-9+/=]{6,}",
    r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*",  # JWTs
    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key ids
)
"""Patterns masked inside every string, always."""

_ANY: Final = "*"
_DEEP: Final = "**"


def _parse_path(path: str) -> tuple[str, ...]:
    """`a.b[0].c` / `a.b.*.c` / `$.a.b` -> segments (lower-cased keys)."""
    text = path.strip()
    text = text.removeprefix("$").removeprefix(".")
    text = re.sub(r"\[(\*|\d+)\]", r".\1", text)
    segments = tuple(s.lower() for s in text.split(".") if s)
    if not segments:
        raise ValueError(f"empty field path {path!r}")
    return segments


def check_path(path: str) -> str:
    """Validate a field path (for config): returns it, raises `ValueError` if empty."""
    _parse_path(path)
    return path


class Redactor:
    """Compiled redaction rules: the built-ins plus `patterns` and `fields`."""

    __slots__ = ("_field_paths", "_pattern", "_top_keys")

    def __init__(self, patterns: Iterable[str] = (), fields: Iterable[str] = ()) -> None:
        sources = [*SECRET_PATTERNS, *patterns]
        self._pattern = re.compile("|".join(f"(?:{s})" for s in sources))
        self._field_paths = tuple(_parse_path(p) for p in fields)

    # -- strings ------------------------------------------------------------------------------

    def text(self, value: str) -> str:
        """`value` with every pattern match masked."""
        return self._pattern.sub(MASK, value)

    # -- JSON values --------------------------------------------------------------------------

    def value(self, value: Any) -> Any:
        """A copy of a JSON-like value (dicts, lists, strings, numbers) with secret keys,
        field paths and pattern matches masked. Other objects become their redacted `str`."""
        paths = self._field_paths
        return self._walk(value, list(paths) if paths else None)

    def _walk(self, value: Any, paths: list[tuple[str, ...]] | None) -> Any:
        if paths is not None:
            if any(not p for p in paths):
                return MASK  # a path ends here: the whole value goes
            if not paths:
                paths = None
        if isinstance(value, str):
            return self._pattern.sub(MASK, value)
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = str(key)
                lower = name.lower()
                if lower in SECRET_KEYS:
                    out[name] = MASK
                else:
                    out[self._pattern.sub(MASK, name)] = self._walk(
                        item, _advance(paths, lower) if paths is not None else None
                    )
            return out
        if isinstance(value, (list, tuple)):
            return [
                self._walk(item, _advance(paths, str(i)) if paths is not None else None)
                for i, item in enumerate(value)
            ]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self._pattern.sub(MASK, str(value))


def _advance(paths: list[tuple[str, ...]], key: str) -> list[tuple[str, ...]]:
    """The rest of each path after stepping into `key`."""
    out: list[tuple[str, ...]] = []
    for path in paths:
        if not path:
            continue
        head = path[0]
        if head == _DEEP:
            out.append(path)  # `**` may go deeper still
            rest = path[1:]
            if rest and (rest[0] == key or rest[0] == _ANY):
                out.append(rest[1:])  # ... or stop here
        elif head == key or head == _ANY:
            out.append(path[1:])
    return out


BUILTIN: Final = Redactor()
"""The built-in rules alone (what every log applies when nothing is configured)."""


def redact(value: Any, redactor: Redactor = BUILTIN) -> Any:
    """The one redaction function: `value` (a string or a JSON-like value) with every rule of
    `redactor` (default: the built-ins) applied."""
    if isinstance(value, str):
        return redactor.text(value)
    return redactor.value(value)


__all__ = ["BUILTIN", "MASK", "SECRET_KEYS", "SECRET_PATTERNS", "Redactor", "check_path", "redact"]
