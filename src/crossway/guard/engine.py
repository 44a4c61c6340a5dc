"""One configured guard: its detectors, scanning text, resolving overlaps, masking.

`Guard.scan(text, direction)` runs the local detectors that act in that direction and returns
the findings, non-overlapping and in order (where two overlap, the one starting first wins, the
longer at equal starts; a `block` finding is never dropped for a `mask` one: see `blocking`).
`Guard.mask(text, findings)` replaces the `mask` findings with their placeholders. External
checks (`crossway.guard.external`) are listed in `Guard.external` for the policy to await.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from crossway.config.guardrails import Action, Direction, GuardrailsConfig
from crossway.guard.detectors.base import Detector

DIRECTIONS: Final[tuple[Direction, ...]] = ("request", "response")


@dataclass(frozen=True, slots=True)
class Finding:
    """One match of one detector: `text[start:end]`, what it is and what to do about it."""

    detector: str
    entity: str
    action: Action
    start: int
    end: int
    placeholder: str


@dataclass(frozen=True, slots=True)
class _Rule:
    detector: Detector
    action: Action
    placeholder: str | None  # a configured placeholder (regex, words), else from the entity


class Guard:
    """A `guardrails` policy's detectors, compiled once per config snapshot."""

    __slots__ = ("_rules", "external", "lookahead", "name", "placeholder_format", "window")

    def __init__(self, config: GuardrailsConfig) -> None:
        from crossway.guard.detectors import build_detectors  # the detectors' own imports
        from crossway.guard.external import build_external

        self.name = config.name
        self.window = config.stream_window
        self.lookahead = max(1, config.stream_window // 2)
        self.placeholder_format = config.placeholder_format
        self._rules: dict[Direction, tuple[_Rule, ...]] = {}
        self.external: dict[Direction, tuple[Any, ...]] = {}
        local: list[tuple[Any, Detector]] = []
        externals: list[tuple[Any, Any]] = []
        for dc in config.detectors:
            check = build_external(dc, guard=config.name)
            if check is not None:
                externals.append((dc, check))
                continue
            local.extend((dc, d) for d in build_detectors(dc))
        for direction in DIRECTIONS:
            self._rules[direction] = tuple(
                _Rule(d, dc.action_for(direction), getattr(dc, "placeholder", None))
                for dc, d in local
                if dc.action_for(direction) != "off"
            )
            self.external[direction] = tuple(
                check for dc, check in externals if dc.action_for(direction) != "off"
            )

    def acts_on(self, direction: Direction) -> bool:
        """Whether any detector of this guard looks at this direction."""
        return bool(self._rules[direction] or self.external[direction])

    def masks_or_blocks(self, direction: Direction) -> bool:
        """Whether a local detector can change or stop this direction (streams need a masker)."""
        return any(r.action in ("mask", "block") for r in self._rules[direction])

    def scan(self, text: str, direction: Direction) -> list[Finding]:
        """The local detectors' findings in `text`, in order, overlaps resolved."""
        found: list[Finding] = []
        fmt = self.placeholder_format
        for rule in self._rules[direction]:
            for m in rule.detector.find(text):
                if m.end <= m.start:
                    continue
                found.append(
                    Finding(
                        rule.detector.name,
                        m.entity,
                        rule.action,
                        m.start,
                        m.end,
                        rule.placeholder or fmt.replace("{entity}", m.entity),
                    )
                )
        if len(found) < 2:
            return found
        return _resolve(found)

    @staticmethod
    def mask(
        text: str,
        findings: Iterable[Finding],
        start: int = 0,
        end: int | None = None,
        every: bool = False,
    ) -> str:
        """`text[start:end]` with its `mask` findings (`every`: all findings) replaced by their
        placeholders (findings are in `text`'s offsets, in order and not overlapping, as `scan`
        returns them)."""
        stop = len(text) if end is None else end
        parts: list[str] = []
        at = start
        for f in findings:
            if (f.action != "mask" and not every) or f.end <= start or f.start >= stop:
                continue
            begin = max(f.start, at)
            if begin >= f.end:  # wholly inside an earlier finding
                continue
            parts.append(text[at:begin])
            parts.append(f.placeholder)
            at = min(f.end, stop)
        parts.append(text[at:stop])
        return "".join(parts)


def blocking(findings: Iterable[Finding]) -> Finding | None:
    """The first finding whose action is `block`, if any."""
    for f in findings:
        if f.action == "block":
            return f
    return None


def _resolve(found: list[Finding]) -> list[Finding]:
    """Non-overlapping findings in order. Where two overlap, the earlier (then the longer)
    wins, except that a `block` finding always stays (the content is refused anyway)."""
    found.sort(key=lambda f: (f.start, f.start - f.end))
    kept: list[Finding] = []
    end = -1
    for f in found:
        if f.start >= end:
            kept.append(f)
            end = f.end
        elif f.action == "block" and kept[-1].action != "block":
            kept[-1] = f
            end = max(end, f.end)
    return kept


__all__ = ["Finding", "Guard", "blocking"]
