"""How an upstream's answer becomes the client's: one small class per (downstream API, provider kind).

    client API      provider speaks      answer                      stream
    chat            openai_chat          bytes untouched             bytes untouched (usage read
                                                                     from the tail; the usage chunk
                                                                     Crossway asked for is cut out)
    chat            anything else        provider -> chat JSON       chunks -> `data:` events
    messages        anthropic_messages   bytes untouched             bytes untouched (usage read
                                                                     from message_start / _delta)
    messages        anything else        chat -> Messages JSON       chunks -> Messages events
    responses       any                  chat -> Response JSON       chunks -> Responses events

A stream `Relay` is fed each network chunk and returns the bytes to send; it raises
`GatewayError` when the upstream reports an error in the stream (or sends one event larger than
`max_event_bytes`: `crossway.proxy.sse.EventTooLarge`), `finish` ends a clean stream and `error`
a broken one in the client's format. `usage` is known once the stream ended.
"""

from __future__ import annotations

import abc
from collections import deque
from typing import Any, Final

import msgspec
import orjson

from crossway.errors import GatewayError, UpstreamError
from crossway.llm.api.anthropic_messages import MessagesStreamWriter, chat_to_message
from crossway.llm.api.responses import ResponsesStreamWriter, chat_to_response
from crossway.llm.api.sse import DONE, data_event, named_event
from crossway.llm.errors import openai_stream_error, render_anthropic_error
from crossway.llm.providers.base import Json, Provider, StreamTranslator
from crossway.llm.usage import (
    USAGE_MARKERS,
    StreamTail,
    Usage,
    usage_from_body,
    usage_from_chat,
)
from crossway.proxy.sse import EventSizeGuard, EventTooLarge

_MARKER_COMPACT, _MARKER_SPACED = USAGE_MARKERS
_NULL_USAGE: Final = b',"usage":null'
_NULL_USAGE_SPACED: Final = b', "usage": null'
END_BYTES: Final = 24
"""Bytes kept from the end of a passed-through OpenAI stream to see its `[DONE]`."""
ANTHROPIC_HEAD_BYTES: Final = 4096
"""Bytes kept from the start of a passed-through Anthropic stream (its message_start)."""


class Relay(abc.ABC):
    """Turns one streamed upstream answer into the client's stream."""

    usage: Usage | None = None

    @abc.abstractmethod
    def feed(self, data: bytes) -> bytes: ...

    @abc.abstractmethod
    def finish(self) -> bytes: ...

    @abc.abstractmethod
    def error(self, exc: GatewayError) -> bytes: ...


# --- OpenAI Chat Completions ----------------------------------------------------------------


class ChatPassthrough(Relay):
    """OpenAI-style upstream, OpenAI-style client: forward bytes.

    With `hide_usage` (Crossway added `include_usage` for a client that did not ask), events are
    forwarded whole -- a partial last event waits for the next network chunk -- so the one
    carrying usage can be cut out, and the `"usage": null` of the others dropped. Either way an
    event longer than `max_event_bytes` raises `EventTooLarge` (the held part, or a count of the
    bytes forwarded since the last event boundary).
    """

    __slots__ = ("_carry", "_end", "_guard", "_hide", "_max", "_tail", "usage")

    def __init__(self, hide_usage: bool, max_event_bytes: int) -> None:
        self._hide = hide_usage
        self._max = max_event_bytes
        self._carry = b""
        self._end = b""  # the last bytes seen, to check the stream ended with [DONE]
        self._tail = None if hide_usage else StreamTail()
        self._guard: EventSizeGuard | None = None  # made at the first chunk not ending an event
        self.usage = None

    def feed(self, data: bytes) -> bytes:
        self._end = data[-END_BYTES:] if len(data) >= END_BYTES else (self._end + data)[-END_BYTES:]
        if self._tail is not None:
            if not data.endswith(b"\n\n"):  # the usual chunk ends on an event boundary
                self._guard = _count(self._guard, self._max, data)
            elif self._guard is not None:
                self._guard.since = 0
            self._tail.add(data)
            return data
        if self._carry:
            data = self._carry + data
        cut = data.rfind(b"\n\n") + 2
        if cut == 1:  # no complete event yet
            if len(data) > self._max:
                self._carry = b""
                raise EventTooLarge(self._max)
            self._carry = data
            return b""
        if cut != len(data):  # upstream chunks usually end on an event boundary: no copy then
            self._carry = data[cut:]
            data = data[:cut]
            if len(self._carry) > self._max:
                self._carry = b""
                raise EventTooLarge(self._max)
        else:
            self._carry = b""
        if _MARKER_COMPACT in data or _MARKER_SPACED in data:
            data = self._cut_usage_events(data)
        # The `"usage": null` that include_usage adds to every chunk: the client never asked.
        # (A quote inside a JSON string is escaped, so these bytes only match the key itself.)
        out = data.replace(_NULL_USAGE, b"")
        return data.replace(_NULL_USAGE_SPACED, b"") if out is data else out

    def _cut_usage_events(self, data: bytes) -> bytes:
        """Remove the usage-only events (`choices: []` with a usage object), reading their usage.
        Only the events around a usage marker are looked at; the rest is sliced, not split."""
        start = 0
        while True:
            found = [i for i in (data.find(m, start) for m in USAGE_MARKERS) if i >= 0]
            if not found:
                return data
            at = min(found)
            begin = data.rfind(b"\n\n", 0, at) + 2  # 1 when the event opens the chunk
            begin = 0 if begin == 1 else begin
            end = data.find(b"\n\n", at)
            end = len(data) if end < 0 else end + 2
            event = data[begin:end]
            if b'"choices":[]' in event or b'"choices": []' in event:
                self.usage = usage_from_body(event.strip()[5:].strip())
                data = data[:begin] + data[end:]
                start = begin
            else:
                start = end

    def finish(self) -> bytes:
        if self._tail is not None:
            self.usage = self._tail.usage()
        if b"[DONE]" not in self._end:
            raise UpstreamError("the upstream stream ended before it was complete")
        rest, self._carry = self._carry, b""
        return rest

    def error(self, exc: GatewayError) -> bytes:
        if self._tail is not None:
            self.usage = self._tail.usage()
        return _after_partial(self._guard) + openai_stream_error(exc)


def _count(guard: EventSizeGuard | None, limit: int, data: bytes) -> EventSizeGuard:
    """Feed a chunk that does not end an event to the stream's size guard (made on first use:
    streams whose chunks all end on an event boundary never need one)."""
    if guard is None:
        guard = EventSizeGuard(limit)
    guard.feed(data)
    return guard


def _after_partial(guard: EventSizeGuard | None) -> bytes:
    """A blank line when the client was sent part of an event, so the error event that follows
    is read as an event of its own."""
    return b"\n\n" if guard is not None and guard.mid_event else b""


class ChatTranslated(Relay):
    """Another provider, OpenAI-style client: canonical chunks become `data:` events.

    Text deltas the translator hands over as plain strings (`StreamTranslator.feed_lazy`) are
    written into a template: the bytes orjson gives for such a chunk, split around the text."""

    __slots__ = ("_finished", "_hide", "_model", "_prefix", "_prefix_id", "_translator", "usage")

    def __init__(self, translator: StreamTranslator, model: str, hide_usage: bool) -> None:
        self._translator = translator
        self._model = model
        self._hide = hide_usage
        self._finished = False
        self._prefix = b""
        self._prefix_id = ""  # the stream id `_prefix` was made for (Anthropic sets it late)
        self.usage = None

    def _text_prefix(self) -> bytes:
        factory = self._translator.chunks
        assert factory is not None  # a translator returns strings only with a ChunkFactory
        if factory.id != self._prefix_id or not self._prefix:
            chunk = factory.delta({"content": ""})
            chunk["model"] = self._model
            encoded = data_event(chunk)
            at = encoded.index(_EMPTY_CONTENT) + len(_EMPTY_CONTENT) - 3  # at the ""
            if encoded[at + 2 :] != _TEXT_SUFFIX:
                raise AssertionError("unexpected chunk encoding")  # ChunkFactory changed shape
            self._prefix, self._prefix_id = encoded[:at], factory.id
        return self._prefix

    def _encode(self, chunks: list[Json | str]) -> bytes:
        out = []
        prefix = b""
        for chunk in chunks:
            if type(chunk) is str:
                prefix = prefix or self._text_prefix()
                out.append(prefix + orjson.dumps(chunk) + _TEXT_SUFFIX)
                continue
            assert isinstance(chunk, dict)
            for choice in chunk.get("choices") or ():
                if choice.get("finish_reason"):
                    self._finished = True
            if chunk.get("usage"):
                self.usage = usage_from_chat(chunk["usage"])
                if self._hide and not chunk.get("choices"):
                    continue
            chunk["model"] = self._model
            out.append(data_event(chunk))
        return b"".join(out)

    def feed(self, data: bytes) -> bytes:
        return self._encode(self._translator.feed_lazy(data))

    def finish(self) -> bytes:
        out = self._encode(self._translator.close())  # type: ignore[arg-type]
        if not self._finished:
            raise UpstreamError("the upstream stream ended before it was complete")
        return out + DONE

    def error(self, exc: GatewayError) -> bytes:
        return openai_stream_error(exc)


_EMPTY_CONTENT: Final = b'"delta":{"content":""}'
_TEXT_SUFFIX: Final = b'},"finish_reason":null,"logprobs":null}]}\n\n'
"""What follows a text delta's JSON string in the event `ChunkFactory.delta` gives."""


# --- canonical chunks -> another API's events ----------------------------------------------


class WriterRelay(Relay):
    """Any provider, Anthropic Messages or Responses client: chunks -> that API's events."""

    def __init__(
        self, translator: StreamTranslator, writer: MessagesStreamWriter | ResponsesStreamWriter
    ) -> None:
        self._translator = translator
        self._writer = writer
        self.usage = None

    def _write(self, chunks: list[Json]) -> bytes:
        out = b""
        for chunk in chunks:
            if chunk.get("usage"):
                self.usage = usage_from_chat(chunk["usage"])
            out += self._writer.feed(chunk)
        return out

    def feed(self, data: bytes) -> bytes:
        return self._write(self._translator.feed(data))

    def finish(self) -> bytes:
        return self._write(self._translator.close()) + self._writer.finish()

    def error(self, exc: GatewayError) -> bytes:
        return self._writer.error(exc)


# --- Anthropic -> Anthropic -----------------------------------------------------------------


class _AnthropicUsageOnly(msgspec.Struct):
    usage: dict[str, Any] | None = None
    message: dict[str, Any] | None = None


_anthropic_usage_decoder: Final = msgspec.json.Decoder(_AnthropicUsageOnly)


def usage_from_anthropic(usage: Any, base: Usage | None = None) -> Usage | None:
    """Anthropic usage (input excludes cache reads and writes) -> normalized usage."""
    if not isinstance(usage, dict):
        return base

    def num(key: str, default: int) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) else default

    b = base or Usage()
    fresh_default = b.input_tokens - b.cached_tokens - b.cache_write_tokens
    cached = num("cache_read_input_tokens", b.cached_tokens)
    written = num("cache_creation_input_tokens", b.cache_write_tokens)
    fresh = num("input_tokens", fresh_default)
    return Usage(
        input_tokens=fresh + cached + written,
        output_tokens=num("output_tokens", b.output_tokens),
        cached_tokens=cached,
        cache_write_tokens=written,
    )


def anthropic_body_usage(body: bytes) -> Usage | None:
    try:
        return usage_from_anthropic(_anthropic_usage_decoder.decode(body).usage)
    except msgspec.DecodeError:
        return None


class MessagesPassthrough(Relay):
    """Anthropic upstream, Anthropic client: forward bytes; read usage from the first few
    kilobytes (`message_start`) and the tail (`message_delta`) once the stream ended."""

    def __init__(self, max_event_bytes: int) -> None:
        self._head: list[bytes] = []
        self._head_size = 0
        self._tail: deque[bytes] = deque(maxlen=4)
        self._max = max_event_bytes
        self._guard: EventSizeGuard | None = None
        self.usage = None

    def feed(self, data: bytes) -> bytes:
        if not data.endswith(b"\n\n"):  # the usual chunk ends on an event boundary
            self._guard = _count(self._guard, self._max, data)
        elif self._guard is not None:
            self._guard.since = 0
        if self._head_size < ANTHROPIC_HEAD_BYTES:
            self._head.append(data)
            self._head_size += len(data)
        else:
            self._tail.append(data)
        return data

    def _read_usage(self) -> None:
        usage = None
        for chunk in (b"".join(self._head), b"".join(self._tail)):
            for line in chunk.split(b"\n"):
                if line.startswith(b"data:") and b'"usage"' in line:
                    try:
                        event = _anthropic_usage_decoder.decode(line[5:].strip())
                    except msgspec.DecodeError:
                        continue
                    raw = event.usage
                    if raw is None and event.message is not None:
                        raw = event.message.get("usage")
                    usage = usage_from_anthropic(raw, usage)
        self.usage = usage

    def finish(self) -> bytes:
        self._read_usage()
        return b""

    def error(self, exc: GatewayError) -> bytes:
        self._read_usage()
        body = render_anthropic_error(exc)[2]
        return _after_partial(self._guard) + b"event: error\ndata: " + body + b"\n\n"


# --- OpenAI Responses -> OpenAI Responses --------------------------------------------------


class ResponsesPassthrough(Relay):
    """OpenAI upstream, Responses client: forward bytes; keep what follows the terminal event's
    marker (`response.completed` carries the whole response, usage included) to read usage.
    What is kept after the marker is bounded by `max_event_bytes` (the terminal event's cap)."""

    def __init__(self, max_event_bytes: int) -> None:
        self._prev = b""
        self._final: list[bytes] | None = None
        self._final_room = max_event_bytes
        self._max = max_event_bytes
        self._guard: EventSizeGuard | None = None
        self.usage = None

    def feed(self, data: bytes) -> bytes:
        if not data.endswith(b"\n\n"):  # the usual chunk ends on an event boundary
            self._guard = _count(self._guard, self._max, data)
        elif self._guard is not None:
            self._guard.since = 0
        if self._final is not None:
            if self._final_room > 0:
                self._final.append(data)
                self._final_room -= len(data)
        elif any(marker in data for marker in _RESPONSES_TERMINAL):
            self._final = [self._prev, data]
        self._prev = data
        return data

    def _read_usage(self) -> None:
        if self._final is None:
            return
        tail = b"".join(self._final)
        at = max(tail.rfind(marker) for marker in _RESPONSES_TERMINAL)
        start = tail.rfind(b"data:", 0, at)
        end = tail.find(b"\n", at)
        try:
            event = orjson.loads(tail[start + 5 : end if end >= 0 else len(tail)])
            self.usage = usage_from_chat(event["response"]["usage"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.usage = None

    def finish(self) -> bytes:
        self._read_usage()
        return b""

    def error(self, exc: GatewayError) -> bytes:
        self._read_usage()
        event = {
            "type": "error",
            "code": exc.code or exc.type,
            "message": exc.message,
            "param": None,
        }
        return _after_partial(self._guard) + named_event("error", event)


_RESPONSES_TERMINAL: Final = (
    b'"type":"response.completed"',
    b'"type":"response.incomplete"',
    b'"type":"response.failed"',
)


# --- whole answers ---------------------------------------------------------------------------


def translate_answer(
    api: str, provider: Provider, data: bytes, model: str, request: Json | None
) -> tuple[bytes, Usage | None]:
    """A non-streamed upstream answer as the client's body, and its usage."""
    resp = provider.chat_response(data)
    usage = usage_from_chat(resp.get("usage"))
    if api == "chat":
        resp["model"] = model
        return orjson.dumps(resp), usage
    if api == "anthropic_messages":
        return orjson.dumps(chat_to_message(resp, model)), usage
    return orjson.dumps(chat_to_response(resp, request or {}, model)), usage
