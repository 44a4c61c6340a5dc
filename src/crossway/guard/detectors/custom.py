"""Custom detectors: a regular expression, a word list. Both run on RE2 (linear time in the
text, whatever the pattern: no catastrophic backtracking) and are compiled at load."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import re2

from crossway.guard.detectors.base import Match

RE2_MAX_MEM: Final = 64 << 20
"""Memory RE2 may use for one compiled program (a word list of 100,000 words needs a few tens
of MB; the default 8 MB makes big alternations fall back to a slower engine)."""

_PROBES: Final = ("", "a", " ", "0", "a b", "\n")
"""Texts a pattern is tried on at load: a pattern that matches the empty string in any of them
would report (and mask) nothing, everywhere."""


def _options(ignore_case: bool) -> Any:
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False
    options.max_mem = RE2_MAX_MEM
    return options


def compile_re2(pattern: str, *, ignore_case: bool = False, what: str = "pattern") -> Any:
    """Compile with RE2, or raise ValueError carrying RE2's message."""
    try:
        return re2.compile(pattern, _options(ignore_case))
    except re2.error as exc:
        message = exc.args[0] if exc.args else exc
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        raise ValueError(f"{what} {pattern!r} is not valid RE2 syntax: {message}") from None


class Re2Spans:
    """An RE2 program for str and for bytes: ASCII text (most of it) is searched as bytes,
    where offsets need no conversion (the wrapper converts each match's byte offsets to
    character offsets by decoding the text before it: quadratic in matches on long text)."""

    def __init__(self, pattern: str, *, ignore_case: bool = False, what: str = "pattern") -> None:
        self.text = compile_re2(pattern, ignore_case=ignore_case, what=what)
        self._bytes: Any = re2.compile(pattern.encode(), _options(ignore_case))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Every non-empty match's (start, end), in character offsets."""
        if text.isascii():
            return [m.span() for m in self._bytes.finditer(text.encode()) if m.end() > m.start()]
        return [m.span() for m in self.text.finditer(text) if m.end() > m.start()]


def entity_of(name: str) -> str:
    """The placeholder stem of a custom detector: its name, upper-cased, `-`/space as `_`."""
    return name.upper().replace("-", "_").replace(" ", "_")


class RegexDetector:
    """Matches of one RE2 expression; each is the upper-cased detector name as entity."""

    def __init__(self, name: str, pattern: str, *, ignore_case: bool = False) -> None:
        self.name = name
        self.entity = entity_of(name)
        self._regex = Re2Spans(pattern, ignore_case=ignore_case)
        for probe in _PROBES:
            m = self._regex.text.search(probe)
            if m is not None and m.end() == m.start():
                raise ValueError(
                    f"pattern {pattern!r} matches the empty string (it would match everywhere "
                    f"and mask nothing); make it match at least one character"
                )

    def find(self, text: str) -> list[Match]:
        return [Match(start, end, self.entity) for start, end in self._regex.spans(text)]


def _word_pattern(word: str) -> str:
    escaped = str(re2.escape(word))
    # Whole words: a boundary where the word's own edge is a word character ("c++" can't
    # have one after its "+").
    head = r"\b" if word[0].isalnum() or word[0] == "_" else ""
    tail = r"\b" if word[-1].isalnum() or word[-1] == "_" else ""
    return head + escaped + tail


class WordsDetector:
    """Whole words or phrases from a list, regardless of case; one RE2 alternation over all
    of them (one pass over the text however long the list)."""

    def __init__(self, name: str, words: Iterable[str]) -> None:
        self.name = name
        self.entity = entity_of(name)
        cleaned: list[str] = []
        for word in words:
            stripped = " ".join(word.split())
            if not stripped:
                raise ValueError("words: an empty word (or only whitespace) in the list")
            cleaned.append(stripped)
        if not cleaned:
            raise ValueError("words: the list is empty")
        unique = sorted(dict.fromkeys(w.lower() for w in cleaned), key=len, reverse=True)
        # Phrases match across any run of whitespace, as in the text.
        alternation = "|".join(_word_pattern(w).replace(r"\ ", r"\s+") for w in unique)
        self._regex = Re2Spans(
            f"(?:{alternation})", ignore_case=True, what=f"word list of {len(unique)} words"
        )

    def find(self, text: str) -> list[Match]:
        found = []
        for start, end in self._regex.spans(text):
            # RE2's \b knows only ASCII letters: "caf" would match in "café".
            if _glued(text, start - 1, text[start]) or _glued(text, end, text[end - 1]):
                continue
            found.append(Match(start, end, self.entity))
        return found


def _glued(text: str, index: int, edge: str) -> bool:
    """Whether the character at `index` continues the word whose edge character is `edge`."""
    if not 0 <= index < len(text) or not (edge.isalnum() or edge == "_"):
        return False
    neighbour = text[index]
    return neighbour.isalnum() or neighbour == "_"


__all__ = ["RE2_MAX_MEM", "Re2Spans", "RegexDetector", "WordsDetector", "compile_re2", "entity_of"]
