"""Masking the client's stream as it flows: SSE events in, the same events with masked text out.

The stream is the relay's output, already in the client's API, so one rewriter per client API
covers every provider. Events are parsed with `crossway.proxy.sse.SSEParser` (an event split
across network chunks waits for its end); each channel's text deltas go through the route's
`StreamGuard` (a bounded hold-back per channel), and each event is re-encoded with the text
released so far -- an event left with nothing to say is dropped. At a channel's end the held
text is flushed into the stream before the event that ends it:

    client API   channels                                 flushed
    chat         (choice, content|refusal|reasoning),     into the chunk with the choice's
                 (choice, "tool", tool-call index)        finish_reason (else before [DONE])
    messages     content block index (text_delta,         an extra content_block_delta just
                 input_json_delta)                        before content_block_stop
    responses    (output, content part, kind) for text,   an extra delta just before its
                 refusals, arguments, reasoning summaries `.done`; the `.done`, part, item and
                                                          `response.completed` events get the
                                                          text the client was sent

Events without text pass unchanged (`data: X` / `event: N` + `data: X`, as the relays and
providers frame them; comments and `id:` lines are not carried over); data that is not a JSON
object (an event an upstream cut short) is not sent, since its text cannot be guarded. Token logprobs are
dropped from guarded chat and Responses streams: they spell the tokens of text that may
still be masked. A `block` finding ends the stream with the client API's error event (the
matched text is never sent). A `LastChunk` stays the last chunk.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson

from crossway.errors import GatewayError
from crossway.llm.api.sse import named_event
from crossway.llm.calls import CHAT, MESSAGES, RESPONSES, LlmCall
from crossway.llm.errors import openai_stream_error, render_anthropic_error
from crossway.policy.guardrails import StreamGuard, stream_guard
from crossway.proxy.sse import SSEParser
from crossway.server.asgi import LastChunk
from crossway.server.context import RequestContext

MAX_EVENT_BYTES: Final = 64 * 1024 * 1024
"""The largest event the guard parses. The relays already bound what an upstream sends
(`max_event_bytes`); what is larger comes from Crossway itself: a Responses
`response.completed` carries the whole answer."""
_DONE: Final = b"[DONE]"


def guard_stream(
    call: LlmCall, chunks: AsyncIterator[Any], ctx: RequestContext
) -> AsyncIterator[Any]:
    """The client's stream, masked as it flows (`chunks` itself when no guard masks or blocks
    answers on this route)."""
    guard = stream_guard(ctx, "response")
    if guard is None:
        return chunks
    rewriter: Rewriter
    if call.api == CHAT:
        rewriter = ChatRewriter(guard)
    elif call.api == MESSAGES:
        rewriter = MessagesRewriter(guard)
    elif call.api == RESPONSES:
        from crossway.llm.guard_responses import ResponsesRewriter  # (it builds on Rewriter)

        rewriter = ResponsesRewriter(guard)
    else:
        return chunks
    return _guarded(chunks, rewriter)


async def _guarded(chunks: AsyncIterator[Any], rewriter: Rewriter) -> AsyncIterator[bytes]:
    parser = SSEParser(MAX_EVENT_BYTES)
    ended = False
    try:
        async for chunk in chunks:
            if ended:  # (a source yields nothing after its LastChunk; it may still settle)
                continue
            last = type(chunk) is LastChunk
            out: list[bytes] = []
            try:
                for name, data in parser.feed(chunk):
                    out.append(rewriter.event(name, data))
                if last:
                    out.extend(_closing(parser, rewriter))
            except GatewayError as exc:  # a block (or an event past the cap): end it here
                out.append(rewriter.error(exc))
                yield LastChunk(b"".join(out))
                return
            data = b"".join(out)
            if last:
                ended = True
                yield LastChunk(data)
            elif data:
                yield data
        if not ended:
            try:
                data = b"".join(_closing(parser, rewriter))
            except GatewayError as exc:
                data = rewriter.error(exc)
            if data:
                yield LastChunk(data)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _closing(parser: SSEParser, rewriter: Rewriter) -> list[bytes]:
    """The stream ended: its unterminated last event, and any text still held."""
    out = [rewriter.event(name, data) for name, data in parser.close()]
    out.append(rewriter.end())
    return out


def frame(name: bytes, data: bytes) -> bytes:
    """One SSE event (`event:` only when it has a name other than `message`)."""
    if b"\n" in data:
        data = data.replace(b"\n", b"\ndata: ")
    if name == b"message":
        return b"data: " + data + b"\n\n"
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


def _object(data: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _key(value: Any) -> int | str:
    """An index from an event, usable as a channel key whatever the upstream sent."""
    return value if isinstance(value, int | str) else 0


class Rewriter(abc.ABC):
    """Rewrites one client API's events through a `StreamGuard`."""

    def __init__(self, guard: StreamGuard) -> None:
        self.guard = guard

    @abc.abstractmethod
    def event(self, name: bytes, data: bytes) -> bytes:
        """The bytes to send for one event (maybe none, maybe extra events before it)."""

    @abc.abstractmethod
    def end(self) -> bytes:
        """The stream ended without closing some channels: their held text."""

    @abc.abstractmethod
    def error(self, exc: GatewayError) -> bytes:
        """The client API's error event that ends the stream."""


# -- OpenAI Chat Completions ---------------------------------------------------------------------

_CHAT_TEXT_KEYS: Final = ("content", "refusal", "reasoning_content", "reasoning")


class ChatRewriter(Rewriter):
    """`chat.completion.chunk` events: per choice, its text fields and each tool call's
    arguments; flushed into the chunk that carries the choice's `finish_reason`."""

    def __init__(self, guard: StreamGuard) -> None:
        super().__init__(guard)
        self._open: dict[int | str, list[tuple[Any, ...]]] = {}  # choice -> channels fed
        self._last: dict[str, Any] = {}  # the last chunk (its id, model...: for extra chunks)

    def event(self, name: bytes, data: bytes) -> bytes:
        if data == _DONE:
            return self._flush_all() + frame(name, data)
        chunk = _object(data)
        if chunk is None:
            return b""  # not a JSON object: text the guard cannot read (a cut event) is not sent
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            if "error" in chunk:  # the stream broke upstream: send what was held first
                return self._flush_all() + frame(name, data)
            return frame(name, data)
        self._last = chunk
        if len(choices) == 1 and not chunk.get("usage"):
            plain = self._plain_text(name, data, chunk, choices[0])
            if plain is not None:
                return plain
        changed = False
        for choice in choices:
            if isinstance(choice, dict) and self._choice(choice):
                changed = True
        if not changed:
            return frame(name, data)
        if _says_nothing(chunk):
            return b""
        return frame(name, orjson.dumps(chunk))

    def _plain_text(
        self, name: bytes, data: bytes, chunk: dict[str, Any], choice: Any
    ) -> bytes | None:
        """The common chunk, one choice with a content delta and nothing else, handled without
        the general walk (None: not such a chunk)."""
        if type(choice) is not dict or choice.get("finish_reason") or choice.get("logprobs"):
            return None
        delta = choice.get("delta")
        if type(delta) is not dict or len(delta) != 1:
            return None
        text = delta.get("content")
        if type(text) is not str or not text:
            return None
        out = self._feed((_key(choice.get("index", 0)), "content"), text)
        if out == text:
            return frame(name, data)
        if not out:
            return b""
        delta["content"] = out
        return frame(name, orjson.dumps(chunk))

    def _feed(self, channel: tuple[Any, ...], text: str) -> str:
        fed = self._open.setdefault(channel[0], [])
        if channel not in fed:
            fed.append(channel)
        return self.guard.feed(channel, text)

    def _choice(self, choice: dict[str, Any]) -> bool:
        index = _key(choice.get("index", 0))
        changed = False
        if choice.get("logprobs") is not None:
            choice["logprobs"] = None
            changed = True
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in _CHAT_TEXT_KEYS:
                text = delta.get(key)
                if isinstance(text, str) and text:
                    out = self._feed((index, key), text)
                    if out != text:
                        changed = True
                        if out:
                            delta[key] = out
                        else:
                            del delta[key]
            calls = delta.get("tool_calls")
            if isinstance(calls, list) and self._tool_calls(index, delta, calls):
                changed = True
            function = delta.get("function_call")  # (the legacy functions API)
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if isinstance(arguments, str) and arguments:
                assert isinstance(function, dict)
                out = self._feed((index, "function_call"), arguments)
                if out != arguments:
                    changed = True
                    function["arguments"] = out
        if choice.get("finish_reason") and self._flush_choice(index, choice):
            changed = True
        return changed

    def _tool_calls(self, index: int | str, delta: dict[str, Any], calls: list[Any]) -> bool:
        changed = False
        kept = []
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if isinstance(arguments, str) and arguments:
                assert isinstance(call, dict) and isinstance(function, dict)
                out = self._feed((index, "tool", _key(call.get("index", 0))), arguments)
                if out != arguments:
                    changed = True
                    function["arguments"] = out
                    if not out and not (call.get("id") or call.get("type") or function.get("name")):
                        continue  # a fragment with nothing left to say
            kept.append(call)
        if len(kept) != len(calls):
            if kept:
                delta["tool_calls"] = kept
            else:
                del delta["tool_calls"]
        return changed

    def _flush_choice(self, index: int | str, choice: dict[str, Any]) -> bool:
        """Put the held text of a choice's channels into this chunk of it."""
        changed = False
        for channel in self._open.pop(index, ()):
            rest = self.guard.flush(channel)
            if not rest:
                continue
            changed = True
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = choice["delta"] = {}
            if channel[1] == "function_call":
                function = delta.get("function_call")
                if not isinstance(function, dict):
                    function = delta["function_call"] = {}
                function["arguments"] = (function.get("arguments") or "") + rest
                continue
            if channel[1] != "tool":
                delta[channel[1]] = (delta.get(channel[1]) or "") + rest
                continue
            calls = delta.get("tool_calls")
            if not isinstance(calls, list):
                calls = delta["tool_calls"] = []
            for call in calls:
                if isinstance(call, dict) and _key(call.get("index", 0)) == channel[2]:
                    function = call.get("function")
                    if not isinstance(function, dict):
                        function = call["function"] = {}
                    function["arguments"] = (function.get("arguments") or "") + rest
                    break
            else:
                calls.append({"index": channel[2], "function": {"arguments": rest}})
        return changed

    def _flush_all(self) -> bytes:
        """Extra chunks with the held text of every choice still open."""
        out = b""
        envelope = {k: v for k, v in self._last.items() if k not in ("choices", "usage")}
        for index in list(self._open):
            choice: dict[str, Any] = {"index": index, "delta": {}, "finish_reason": None}
            if self._flush_choice(index, choice):
                out += frame(b"message", orjson.dumps({**envelope, "choices": [choice]}))
        return out

    def end(self) -> bytes:
        return self._flush_all()

    def error(self, exc: GatewayError) -> bytes:
        return openai_stream_error(exc)


def _says_nothing(chunk: dict[str, Any]) -> bool:
    """Whether a chunk whose text was held back has nothing else for the client."""
    if chunk.get("usage"):
        return False
    for choice in chunk["choices"]:
        if not isinstance(choice, dict) or choice.get("finish_reason"):
            return False
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(v is not None and v != "" for v in delta.values()):
            return False
    return True


# -- Anthropic Messages --------------------------------------------------------------------------

_MESSAGES_DELTAS: Final = {"text_delta": "text", "input_json_delta": "partial_json"}
"""The content_block_delta types with text to guard, and their text field (thinking deltas
are signed: not touched)."""


class MessagesRewriter(Rewriter):
    """Messages events: per content block, its text or tool-input JSON deltas; flushed in an
    extra `content_block_delta` just before the block's `content_block_stop`."""

    def __init__(self, guard: StreamGuard) -> None:
        super().__init__(guard)
        self._open: dict[int | str, str] = {}  # content block index -> its delta type

    def event(self, name: bytes, data: bytes) -> bytes:
        event = _object(data)
        if event is None:
            return b""  # not a JSON object: text the guard cannot read (a cut event) is not sent
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                return frame(name, data)
            dtype = delta.get("type")
            field = _MESSAGES_DELTAS.get(dtype) if isinstance(dtype, str) else None
            text = delta.get(field) if field is not None else None
            if field is None or not isinstance(text, str) or not text:
                return frame(name, data)
            index = _key(event.get("index"))
            self._open[index] = dtype  # type: ignore[assignment]
            out = self.guard.feed(index, text)
            if out == text:
                return frame(name, data)
            if not out:
                return b""
            delta[field] = out
            return frame(name, orjson.dumps(event))
        if kind == "content_block_start":
            block = event.get("content_block")
            text = block.get("text") if isinstance(block, dict) else None
            if not isinstance(text, str) or not text:
                return frame(name, data)
            assert isinstance(block, dict)
            index = _key(event.get("index"))
            self._open[index] = "text_delta"
            block["text"] = self.guard.feed(index, text)
            return frame(name, orjson.dumps(event))
        if kind == "content_block_stop":
            return self._flush(_key(event.get("index"))) + frame(name, data)
        if kind in ("message_delta", "message_stop", "error"):
            return self.end() + frame(name, data)
        return frame(name, data)

    def _flush(self, index: int | str) -> bytes:
        dtype = self._open.pop(index, None)
        if dtype is None:
            return b""
        rest = self.guard.flush(index)
        if not rest:
            return b""
        delta = {"type": dtype, _MESSAGES_DELTAS[dtype]: rest}
        return named_event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def end(self) -> bytes:
        return b"".join(self._flush(index) for index in list(self._open))

    def error(self, exc: GatewayError) -> bytes:
        return b"event: error\ndata: " + render_anthropic_error(exc)[2] + b"\n\n"


# -- OpenAI Responses ----------------------------------------------------------------------------

__all__ = [
    "MAX_EVENT_BYTES",
    "ChatRewriter",
    "MessagesRewriter",
    "Rewriter",
    "frame",
    "guard_stream",
]
