"""Masking a stream as it flows: one `StreamMasker` per channel, a bounded hold-back.

A channel is one growing text (a choice's content, one tool call's arguments). The masker holds
back at most `window` characters: once that much is held, it scans the held text (with a little
already-released text before it, for word boundaries) and releases all but the last
`lookahead` (= window / 2) characters — never cutting through a match or a word, whose text
it keeps until the match is whole. So an entity of up to `lookahead` characters (`window` for
one without spaces) split across any number of chunks or events is masked whole, each character is scanned about twice, memory per
channel is bounded, and the first text of a stream is delayed by at most `window` characters.
A `block` finding raises (its text is never released).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from crossway.config.guardrails import Direction
from crossway.guard.engine import Finding, Guard, blocking

LEFT_CONTEXT: Final = 32
"""Characters of already-released text re-scanned before the held text (boundaries, `\\b`)."""

OnFindings = Callable[[list[Finding]], None]


class StreamBlocked(Exception):
    """A `block` detector matched in a stream (`finding` names it; its text was not released)."""

    def __init__(self, guard: str, finding: Finding) -> None:
        super().__init__(f"{guard}: {finding.detector}")
        self.guard = guard
        self.finding = finding


class StreamMasker:
    """Masks one channel of a stream with one guard."""

    __slots__ = ("_direction", "_guard", "_held", "_left", "_on_findings")

    def __init__(self, guard: Guard, direction: Direction, on_findings: OnFindings) -> None:
        self._guard = guard
        self._direction = direction
        self._on_findings = on_findings
        self._held = ""
        self._left = ""

    def feed(self, text: str) -> str:
        """Take the next piece of the channel; the text that may be sent now (maybe "")."""
        if text:
            self._held += text
        if len(self._held) < self._guard.window:
            return ""
        return self._release(final=False)

    def flush(self) -> str:
        """The channel ended: the rest of its text, masked."""
        if not self._held:
            return ""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        text = self._left + self._held
        off = len(self._left)
        findings = [f for f in self._guard.scan(text, self._direction) if f.end > off]
        if final:
            cut = len(text)
        else:
            cut = len(text) - self._guard.lookahead
            # Never cut inside a word either: an entity without spaces (an address, a token) of
            # up to `window` characters is then held whole even where it is longer than the
            # lookahead.
            space = max(text.rfind(" ", off, cut), text.rfind("\n", off, cut))
            if space >= off:
                cut = space + 1
        for f in findings:  # in order: hold back any match the cut would split
            if f.start < cut < f.end:
                cut = max(f.start, off)
                break
        released = [f for f in findings if f.start < cut]
        if released:
            self._on_findings(released)
            block = blocking(released)
            if block is not None:
                self._held = ""
                raise StreamBlocked(self._guard.name, block)
        if cut <= off:
            return ""
        out = Guard.mask(text, released, off, cut)
        self._left = text[max(0, cut - LEFT_CONTEXT) : cut]
        self._held = text[cut:]
        return out


__all__ = ["StreamBlocked", "StreamMasker"]
