"""Masking a Responses API stream as it flows (the `responses` row of `crossway.llm.guard_stream`).

Channels are (output index, content part or summary index, kind) for output text, refusals,
function-call arguments and reasoning summaries; each channel's held text goes out as an extra
delta just before its `.done`, and the `.done`, part, item and `response.completed` events are
given exactly the text the client was sent as deltas.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from crossway.errors import GatewayError
from crossway.llm.api.responses import error_event
from crossway.llm.api.sse import named_event
from crossway.llm.guard_stream import Rewriter, _key, _object, frame
from crossway.policy.guardrails import StreamGuard

_RESPONSES_DELTAS: Final = {
    "response.output_text.delta": "text",
    "response.refusal.delta": "refusal",
    "response.function_call_arguments.delta": "arguments",
    "response.reasoning_summary_text.delta": "summary",
}
_RESPONSES_DONES: Final = {
    "response.output_text.done": ("text", "text"),
    "response.refusal.done": ("refusal", "refusal"),
    "response.function_call_arguments.done": ("arguments", "arguments"),
    "response.reasoning_summary_text.done": ("summary", "text"),
}
"""`.done` event -> (channel kind, the field holding the whole text)."""
_RESPONSES_PARTS: Final = {
    "response.content_part.added": "content_index",
    "response.content_part.done": "content_index",
    "response.reasoning_summary_part.added": "summary_index",
    "response.reasoning_summary_part.done": "summary_index",
}
_RESPONSES_WHOLE: Final = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.queued",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)
_RESPONSES_TERMINAL: Final = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "error"}
)
Channel = tuple[int | str, int | str, str]
"""(output index, content part or summary index, kind)."""


class ResponsesRewriter(Rewriter):
    """Responses events: deltas per (output item, part, kind), flushed before their `.done`;
    every event that repeats a whole text (`.done`, parts, items, the response) gets the text
    the client was sent through the deltas (texts never streamed are masked whole)."""

    def __init__(self, guard: StreamGuard) -> None:
        super().__init__(guard)
        self._open: dict[Channel, dict[str, Any]] = {}  # channel -> its delta event's fields
        self._sent: dict[Channel, list[str]] = {}  # channel -> the text released so far
        self._final: dict[Channel, str] = {}  # closed channel -> all it released
        self._whole: dict[str, str] = {}  # texts masked whole (never streamed)
        self._seq = 0

    def event(self, name: bytes, data: bytes) -> bytes:
        event = _object(data)
        if event is None:
            return b""  # not a JSON object: text the guard cannot read (a cut event) is not sent
        seq = event.get("sequence_number")
        if isinstance(seq, int):
            self._seq = seq
        kind = event.get("type")
        if not isinstance(kind, str):
            return frame(name, data)
        stream = _RESPONSES_DELTAS.get(kind)
        if stream is not None:
            return self._delta(name, data, event, stream)
        extra = b""
        changed = False
        done = _RESPONSES_DONES.get(kind)
        if done is not None:
            channel = _channel(event, done[0])
            extra = self._close(channel)
            changed = self._set(event, done[1], channel)
            if event.get("logprobs"):
                event["logprobs"] = []
                changed = True
        elif kind in _RESPONSES_PARTS:
            index = _key(event.get(_RESPONSES_PARTS[kind]))
            kind_of = "summary" if "summary" in kind else ""
            changed = self._part(_key(event.get("output_index")), index, event.get("part"), kind_of)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            output = _key(event.get("output_index"))
            if kind.endswith(".done"):
                extra = self._close_output(output)
            changed = self._item(output, event.get("item"))
        elif kind in _RESPONSES_WHOLE or kind == "error":
            if kind in _RESPONSES_TERMINAL:
                extra = self._close_all()
            response = event.get("response")
            if isinstance(response, dict):
                items = response.get("output")
                for i, item in enumerate(items if isinstance(items, list) else []):
                    changed = self._item(i, item) or changed
                if isinstance(response.get("output_text"), str):
                    changed = self._set(response, "output_text", (-1, -1, "output_text")) or changed
        return extra + (frame(name, orjson.dumps(event)) if changed else frame(name, data))

    def _delta(self, name: bytes, data: bytes, event: dict[str, Any], stream: str) -> bytes:
        text = event.get("delta")
        if not isinstance(text, str) or not text:
            return frame(name, data)
        channel = _channel(event, stream)
        if channel not in self._open:
            self._open[channel] = {k: v for k, v in event.items() if k != "delta"}
            self._sent[channel] = []
        out = self.guard.feed(channel, text)
        if out:
            self._sent[channel].append(out)
        if out == text and not event.get("logprobs"):
            return frame(name, data)
        if not out:
            return b""
        event["delta"] = out
        if event.get("logprobs"):
            event["logprobs"] = []
        return frame(name, orjson.dumps(event))

    def _close(self, channel: Channel) -> bytes:
        """A channel ended: its held text as one more delta event; what it sent is kept."""
        fields = self._open.pop(channel, None)
        if fields is None:
            return b""
        sent = self._sent.pop(channel)
        rest = self.guard.flush(channel)
        extra = b""
        if rest:
            sent.append(rest)
            event = {**fields, "delta": rest}
            if "sequence_number" in event:
                event["sequence_number"] = self._seq  # (the `.done` event's: it comes next)
            if "logprobs" in event:
                event["logprobs"] = []
            kind = event.get("type")
            extra = named_event(kind if isinstance(kind, str) else "message", event)
        self._final[channel] = "".join(sent)
        return extra

    def _close_output(self, output: int | str) -> bytes:
        return b"".join(self._close(c) for c in list(self._open) if c[0] == output)

    def _close_all(self) -> bytes:
        return b"".join(self._close(c) for c in list(self._open))

    def _text(self, channel: Channel, text: str) -> str:
        """The text the client was sent for a channel, or (never streamed) `text` masked."""
        final = self._final.get(channel)
        if final is not None:
            return final
        masked = self._whole.get(text)
        if masked is None:
            key = ("whole", len(self._whole))
            masked = self.guard.feed(key, text) + self.guard.flush(key)
            self._whole[text] = masked
        return masked

    def _set(self, container: dict[str, Any], field: str, channel: Channel) -> bool:
        text = container.get(field)
        if not isinstance(text, str) or not text:
            return False
        new = self._text(channel, text)
        if new == text:
            return False
        container[field] = new
        return True

    def _part(self, output: int | str, index: int | str, part: Any, summary: str = "") -> bool:
        if not isinstance(part, dict):
            return False
        ptype = part.get("type")
        if summary or ptype == "summary_text":
            return self._set(part, "text", (output, index, "summary"))
        if ptype == "output_text":
            changed = self._set(part, "text", (output, index, "text"))
            if part.get("logprobs"):
                part["logprobs"] = []
                changed = True
            return changed
        if ptype == "refusal":
            return self._set(part, "refusal", (output, index, "refusal"))
        return False

    def _item(self, output: int | str, item: Any) -> bool:
        if not isinstance(item, dict):
            return False
        itype = item.get("type")
        changed = False
        if itype == "message":
            content = item.get("content")
            for i, part in enumerate(content if isinstance(content, list) else ()):
                changed = self._part(output, i, part) or changed
        elif itype == "function_call":
            changed = self._set(item, "arguments", (output, 0, "arguments"))
        elif itype == "reasoning":
            summary = item.get("summary")
            for i, part in enumerate(summary if isinstance(summary, list) else ()):
                changed = self._part(output, i, part, "summary") or changed
        return changed

    def end(self) -> bytes:
        return self._close_all()

    def error(self, exc: GatewayError) -> bytes:
        return named_event("error", error_event(exc, self._seq + 1))


def _channel(event: dict[str, Any], kind: str) -> Channel:
    output = _key(event.get("output_index"))
    if kind == "arguments":
        return (output, 0, kind)
    index = event.get("summary_index" if kind == "summary" else "content_index")
    return (output, _key(index), kind)


__all__ = ["ResponsesRewriter"]
