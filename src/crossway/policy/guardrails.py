"""The `guardrails` policy, and what backends call to guard the content they carry.

A guard is a policy of the chain (listener, backend or route), so one config covers LLM, MCP
and A2A alike. It does not act in the chain's usual phases: it needs the content, which only
the protocol backend can take apart. A backend asks `guarded(ctx)` (cheap: False on routes
without a guard) and then hands over `Slot`s (`crossway.guard.content`):

- `await guard_content(ctx, slots, "request")` before forwarding (prompts, tool arguments,
  messages sent), `"response"` before answering (answers, tool results, artifacts);
- `stream_guard(ctx)` for a streamed answer: text deltas per channel in, masked text out.

A `block` finding raises `GuardBlocked` (400 `guardrail_blocked`, naming the guard and the
detector, never the matched text); `mask` rewrites the slot; `log` only counts. Every
finding is counted in `crossway_guard_decisions_total` and listed, without the text, in
`ctx.attrs["guard.decisions"]` (the access log and the request log show it).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Any, Final

from crossway.config.guardrails import Direction, GuardrailsConfig
from crossway.errors import BadRequest
from crossway.guard.content import Slot
from crossway.guard.engine import Finding, Guard, blocking
from crossway.guard.stream import StreamBlocked, StreamMasker
from crossway.policy.base import Policy
from crossway.server.context import RequestContext
from crossway.telemetry import metrics
from crossway.telemetry.request_log import GUARD_DECISIONS

log = logging.getLogger("crossway.policy.guardrails")

DECISIONS: Final = GUARD_DECISIONS
"""`ctx.attrs` key: the guard decisions of a request (guard, detector, action, direction, count)."""
GUARDRAIL_BLOCKED: Final = "guardrail_blocked"


class GuardBlocked(BadRequest):
    """A guard refused the content (400 `guardrail_blocked`); the message names the guard and
    the detector, never the matched text."""

    def __init__(self, guard: str, detector: str, direction: Direction, why: str = "") -> None:
        where = "the request" if direction == "request" else "the response"
        reason = f" ({why})" if why else ""
        super().__init__(
            f"{where} was blocked by guardrail {guard!r}: detector {detector!r} matched{reason}",
            code=GUARDRAIL_BLOCKED,
            detail={"guard": guard, "detector": detector, "direction": direction},
        )
        self.guard = guard
        self.detector = detector
        self.direction = direction


class GuardrailPolicy(Policy):
    """One guard: its detectors over the content the route's backend hands it."""

    phases = frozenset()  # called by the backends through `guard_content` / `stream_guard`
    guards_content = True

    def __init__(self, config: GuardrailsConfig) -> None:
        self.config = config
        try:
            self.guard = Guard(config)
        except ValueError as exc:
            raise ValueError(f"guardrails {config.name!r}: {exc}") from None

    def _checks(self) -> list[Any]:
        """Each external check once (one acting in both directions is listed under both)."""
        unique: dict[int, Any] = {}
        for checks in self.guard.external.values():
            for check in checks:
                unique.setdefault(id(check), check)
        return list(unique.values())

    async def start(self) -> None:
        for check in self._checks():
            await check.start()

    async def close(self) -> None:
        for check in self._checks():
            await check.close()

    async def check(self, ctx: RequestContext, slots: Sequence[Slot], direction: Direction) -> None:
        """Scan, mask or refuse the slots; then ask the external checks."""
        guard = self.guard
        for slot in slots:
            findings = guard.scan(slot.text, direction)
            if not findings:
                continue
            record(ctx, guard.name, findings, direction)
            block = blocking(findings)
            if block is not None:
                # The content is refused; what is kept of it (the request log) keeps no match.
                slot.set(Guard.mask(slot.text, findings, every=True))
                raise GuardBlocked(guard.name, block.detector, direction)
            if any(f.action == "mask" for f in findings):
                slot.set(Guard.mask(slot.text, findings))
        for external in guard.external[direction]:
            await self._external(ctx, external, slots, direction)

    async def _external(
        self, ctx: RequestContext, check: Any, slots: Sequence[Slot], direction: Direction
    ) -> None:
        texts = [s.text for s in slots]
        if not texts:
            return
        action = check.action_for(direction)
        verdict = await check.check(texts, direction, request_id=ctx.request_id)
        name = self.guard.name
        if verdict.failed is not None:
            # `log` only records; otherwise `fail` decides (the check logs outages once).
            closed = action != "log" and check.config.fail == "closed"
            _count(ctx, name, check.name, "error_closed" if closed else "error_open", direction)
            log.debug("guardrails %s: check %s failed: %s", name, check.name, verdict.failed)
            if closed:
                raise GuardBlocked(name, check.name, direction, "the check is unavailable")
            return
        if verdict.blocked is not None:
            # A service that judges whole texts has nothing to mask in place: `mask` refuses.
            _count(ctx, name, check.name, "block" if action == "mask" else action, direction)
            if action in ("block", "mask"):
                raise GuardBlocked(name, check.name, direction, verdict.blocked)
            return
        rewritten = verdict.rewritten
        if rewritten is not None and action in ("mask", "block"):
            changed = False
            for slot, text in zip(slots, rewritten, strict=True):
                if text != slot.text:
                    slot.set(text)
                    changed = True
            if changed:
                _count(ctx, name, check.name, "mask", direction)


def guarded(ctx: RequestContext) -> bool:
    """Whether the route's chain has a guard (the backends' cheap test before building slots)."""
    chain = ctx.chain
    return chain is not None and bool(chain.guards)


async def guard_content(ctx: RequestContext, slots: Sequence[Slot], direction: Direction) -> None:
    """Apply every guard of the route, in chain order, to these slots (see the module doc)."""
    chain = ctx.chain
    if chain is None or not slots:
        return
    for policy in chain.guards:
        if policy.guard.acts_on(direction):
            await policy.check(ctx, slots, direction)


def stream_guard(ctx: RequestContext, direction: Direction = "response") -> StreamGuard | None:
    """A masker for a streamed answer, or None when no guard masks or blocks that direction."""
    chain = ctx.chain
    if chain is None:
        return None
    guards = [p.guard for p in chain.guards if p.guard.masks_or_blocks(direction)]
    if not guards:
        return None
    return StreamGuard(ctx, guards, direction)


class StreamGuard:
    """The stream maskers of one streamed answer: per channel, one masker per guard, chained.

    `feed(channel, text)` returns the text that may be sent now; `flush(channel)` the rest when
    the channel ends. Both raise `GuardBlocked` when a `block` detector matches."""

    __slots__ = ("_channels", "_ctx", "_direction", "_guards")

    def __init__(self, ctx: RequestContext, guards: list[Guard], direction: Direction) -> None:
        self._ctx = ctx
        self._guards = guards
        self._direction = direction
        self._channels: dict[Hashable, list[StreamMasker]] = {}

    def _maskers(self, channel: Hashable) -> list[StreamMasker]:
        maskers = self._channels.get(channel)
        if maskers is None:
            ctx, direction = self._ctx, self._direction
            maskers = self._channels[channel] = [
                StreamMasker(g, direction, _recorder(ctx, g.name, direction)) for g in self._guards
            ]
        return maskers

    def feed(self, channel: Hashable, text: str) -> str:
        """The next text of a channel in; what may be released now out."""
        try:
            for masker in self._maskers(channel):
                text = masker.feed(text)
                if not text:
                    return ""
            return text
        except StreamBlocked as exc:
            raise GuardBlocked(exc.guard, exc.finding.detector, self._direction) from None

    def flush(self, channel: Hashable) -> str:
        """The channel ended: its held text, masked (and the channel forgotten)."""
        maskers = self._channels.pop(channel, None)
        if maskers is None:
            return ""
        out = ""
        try:
            for masker in maskers:
                out = masker.feed(out) + masker.flush()
        except StreamBlocked as exc:
            raise GuardBlocked(exc.guard, exc.finding.detector, self._direction) from None
        return out

    def flush_all(self) -> dict[Hashable, str]:
        """Every open channel's held text (the stream ended)."""
        return {channel: self.flush(channel) for channel in list(self._channels)}


def record(ctx: RequestContext, guard: str, findings: list[Finding], direction: Direction) -> None:
    """Count findings by detector and action (in metrics and `ctx.attrs`), without their text."""
    counts: dict[tuple[str, str], int] = {}
    for f in findings:
        key = (f.detector, f.action)
        counts[key] = counts.get(key, 0) + 1
    for (detector, action), n in counts.items():
        _count(ctx, guard, detector, action, direction, n)


def _recorder(ctx: RequestContext, guard: str, direction: Direction) -> Any:
    def on_findings(findings: list[Finding]) -> None:
        record(ctx, guard, findings, direction)

    return on_findings


def _count(
    ctx: RequestContext, guard: str, detector: str, action: str, direction: str, n: int = 1
) -> None:
    metrics.observe_guard_decision(guard, detector, action, direction, n)
    decisions: list[dict[str, Any]] | None = ctx.attrs.get(DECISIONS)
    if decisions is None:
        decisions = ctx.attrs[DECISIONS] = []
    for d in decisions:
        if (
            d["guard"] == guard
            and d["detector"] == detector
            and d["action"] == action
            and d["direction"] == direction
        ):
            d["count"] += n
            return
    decisions.append(
        {"guard": guard, "detector": detector, "action": action, "direction": direction, "count": n}
    )


__all__ = [
    "DECISIONS",
    "GUARDRAIL_BLOCKED",
    "GuardBlocked",
    "GuardrailPolicy",
    "StreamGuard",
    "guard_content",
    "guarded",
    "stream_guard",
]
