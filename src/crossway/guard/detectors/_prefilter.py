"""RE2 prefilters: one linear pass that says whether a detector's exact (Python `re`)
patterns can match at all.

Python's `re` tries a pattern that starts with `\\b(alternation)` or a lookbehind at every
position of the text: tens of µs per KB and per pattern. RE2 scans once, in C, whatever the
pattern (a few µs per KB for a dozen patterns in one alternation). A prefilter must accept a
superset of what the exact patterns match; the exact patterns then run only on texts it
accepts, which for ordinary text is almost none.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import re2

_MAX_MEM: Final = 64 << 20

_WORD: Final = r"\pL\pN\pM_"
_SPACE: Final = r"\s\pZ\x{85}"


def unicode_superset(pattern: str) -> str:
    """A Python pattern rewritten for RE2 so that it matches at least what Python matches:
    `\\w` and `\\s` as their Unicode classes (RE2's are ASCII), `\\b` dropped (RE2's is
    ASCII, and dropping a constraint only widens)."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escape = pattern[i + 1]
            if escape == "w":
                out.append(_WORD if in_class else f"[{_WORD}]")
            elif escape == "s":
                out.append(_SPACE if in_class else f"[{_SPACE}]")
            elif escape == "b" and not in_class:
                pass
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


class Prefilter:
    """An RE2 alternation of patterns; `maybe(text)` is False only when none can match."""

    def __init__(self, patterns: Iterable[str], *, ignore_case: bool = False) -> None:
        combined = "|".join(f"(?:{p})" for p in patterns)
        options = re2.Options()
        options.case_sensitive = not ignore_case
        options.log_errors = False
        options.max_mem = _MAX_MEM
        # Searched as UTF-8 bytes: only whether there is a match matters, not where, so the
        # wrapper's conversion of byte offsets to character offsets is not needed.
        self._regex: Any = re2.compile(combined.encode(), options)

    def maybe(self, text: str) -> bool:
        """False only when none of the patterns can match `text`."""
        # A lone surrogate (not encodable) becomes U+FFFD: a character either way.
        return self._regex.search(text.encode("utf-8", "replace")) is not None


class GateSet:
    """Several RE2 patterns searched in one pass (an `RE2::Set`): which of them match the
    text, wherever and however they overlap."""

    def __init__(self, patterns: Iterable[str]) -> None:
        options = re2.Options()
        options.log_errors = False
        options.max_mem = _MAX_MEM
        self._set: Any = re2.Set.SearchSet(options)
        for pattern in patterns:
            self._set.Add(pattern.encode())
        self._set.Compile()

    def passed(self, text: str) -> frozenset[int]:
        """The indexes (in the order given) of the patterns that match `text`."""
        hits = self._set.Match(text.encode("utf-8", "replace"))
        return frozenset(hits) if hits else frozenset()


__all__ = ["GateSet", "Prefilter", "unicode_superset"]
