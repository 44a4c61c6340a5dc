"""A cached answer, normalized: one canonical chat choice (message and finish reason) and its
usage, whatever API the client that caused it spoke, and however it was sent.

    captured from                     how
    chat JSON / SSE chunks            the chat.completion, or the chunks reassembled
    Anthropic Messages JSON / events  `providers.anthropic.translate_response` / its stream
                                      translator, then reassembled
    Responses JSON / events           the Response object (`response.completed` in a stream)

    replayed as                       with
    chat JSON / SSE                   a `chat.completion` / chunks + `data: [DONE]`
    Anthropic Messages JSON / events  `chat_to_message` / `MessagesStreamWriter`
    Responses JSON / events           `chat_to_response` / `ResponsesStreamWriter`
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson

from crossway.llm.api.anthropic_messages import MessagesStreamWriter, chat_to_message
from crossway.llm.api.responses import ResponsesStreamWriter, chat_to_response
from crossway.llm.api.sse import DONE, data_event
from crossway.llm.calls import CHAT, MESSAGES, RESPONSES
from crossway.llm.providers.anthropic import AnthropicStreamTranslator, translate_response
from crossway.llm.providers.base import StreamTranslator
from crossway.llm.providers.openai import OpenAIStreamDecoder
from crossway.llm.usage import Usage, usage_from_chat
from crossway.proxy.sse import SSEParser

Json = dict[str, Any]

_MESSAGE_KEYS: Final = ("content", "tool_calls", "reasoning_content", "refusal")
END_BYTES: Final = 32
"""Bytes kept from the end of a chat stream to see its `[DONE]`."""
_INCOMPLETE_FINISH: Final = {"max_output_tokens": "length", "content_filter": "content_filter"}


@dataclass(slots=True)
class CachedAnswer:
    """What is stored: the answer message, why it ended, its usage and what it cost."""

    message: Json
    finish_reason: str
    usage: Json | None
    cost: float | None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"m": self.message, "f": self.finish_reason, "u": self.usage, "c": self.cost}
        )

    @classmethod
    def from_json(cls, data: bytes) -> CachedAnswer:
        value = orjson.loads(data)
        return cls(value["m"], value["f"], value.get("u"), value.get("c"))

    def saved_tokens(self) -> int:
        usage = usage_from_chat(self.usage)
        return usage.total_tokens if usage is not None else 0

    def completion(self, model: str) -> Json:
        """The answer as a canonical `chat.completion` for `model`."""
        out: Json = {
            "id": "chatcmpl-" + os.urandom(12).hex(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", **self.message},
                    "finish_reason": self.finish_reason,
                    "logprobs": None,
                }
            ],
        }
        if self.usage is not None:
            out["usage"] = self.usage
        return out

    def chunks(self, model: str, with_usage: bool) -> list[Json]:
        """The answer as canonical `chat.completion.chunk`s: role, reasoning, text, each tool
        call whole, the finish reason, then (`with_usage`) a usage chunk."""
        chunk_id = "chatcmpl-" + os.urandom(12).hex()
        created = int(time.time())

        def chunk(delta: Json, finish: str | None = None) -> Json:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }

        message = self.message
        out = [chunk({"role": "assistant", "content": ""})]
        if message.get("reasoning_content"):
            out.append(chunk({"reasoning_content": message["reasoning_content"]}))
        if message.get("content"):
            out.append(chunk({"content": message["content"]}))
        if message.get("refusal"):
            out.append(chunk({"refusal": message["refusal"]}))
        for i, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            delta = {
                "index": i,
                "id": call.get("id") or "call_" + os.urandom(12).hex(),
                "type": "function",
                "function": {
                    "name": function.get("name", ""),
                    "arguments": function.get("arguments") or "",
                },
            }
            out.append(chunk({"tool_calls": [delta]}))
        out.append(chunk({}, self.finish_reason))
        if with_usage and self.usage is not None:
            out.append(
                {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": self.usage,
                }
            )
        return out


def usage_json(usage: Usage | None) -> Json | None:
    """Normalized usage as a canonical `usage` object."""
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


# --- replay ---------------------------------------------------------------------------------


def replay_body(answer: CachedAnswer, api: str, model: str, source: Json | None) -> bytes:
    """The answer as a whole JSON body in the client's API."""
    completion = answer.completion(model)
    if api == MESSAGES:
        return orjson.dumps(chat_to_message(completion, model))
    if api == RESPONSES:
        return orjson.dumps(chat_to_response(completion, source or {}, model))
    return orjson.dumps(completion)


def replay_stream(
    answer: CachedAnswer, api: str, model: str, source: Json | None, wants_usage: bool
) -> bytes:
    """The answer as a complete SSE stream in the client's API."""
    if api == MESSAGES:
        writer: MessagesStreamWriter | ResponsesStreamWriter = MessagesStreamWriter(model)
    elif api == RESPONSES:
        writer = ResponsesStreamWriter(source or {}, model)
    else:
        chunks = answer.chunks(model, wants_usage)
        return b"".join(data_event(c) for c in chunks) + DONE
    out = [writer.feed(c) for c in answer.chunks(model, True)]
    out.append(writer.finish())
    return b"".join(out)


# --- capture --------------------------------------------------------------------------------


class Incomplete(Exception):
    """The answer cannot be stored: cut short, an error, or not in a shape the cache knows."""


def _answer_of(completion: Json) -> CachedAnswer:
    choices = completion.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise Incomplete("not one choice")
    choice = choices[0]
    finish = choice.get("finish_reason")
    message = choice.get("message")
    if not isinstance(finish, str) or not finish or not isinstance(message, dict):
        raise Incomplete("no finish reason")
    kept = {k: message[k] for k in _MESSAGE_KEYS if message.get(k) is not None}
    if not kept.get("content") and not kept.get("tool_calls") and not kept.get("refusal"):
        raise Incomplete("an empty answer")
    kept.setdefault("content", None)
    usage = completion.get("usage")
    return CachedAnswer(kept, finish, usage if isinstance(usage, dict) else None, None)


def from_body(api: str, body: bytes) -> CachedAnswer:
    """The answer in a whole JSON body of the client's API."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Incomplete("not JSON") from exc
    if not isinstance(data, dict):
        raise Incomplete("not an object")
    if api == MESSAGES:
        if data.get("type") != "message":
            raise Incomplete("not a message")
        return _answer_of(translate_response(data, str(data.get("model") or "")))
    if api == RESPONSES:
        return _answer_of(response_to_chat(data))
    return _answer_of(data)


def response_to_chat(response: Json) -> Json:
    """A Responses API `response` object as a canonical `chat.completion` (what the cache
    keeps of it: text, function calls, reasoning summary, finish reason and usage)."""
    status = response.get("status")
    if status not in ("completed", "incomplete"):
        raise Incomplete(f"response status {status!r}")
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[Json] = []
    for item in response.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    text.append(str(part.get("text", "")))
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    text.append(str(part.get("refusal", "")))
        elif kind == "function_call":
            calls.append(
                {
                    "id": item.get("call_id") or "",
                    "type": "function",
                    "function": {
                        "name": item.get("name") or "",
                        "arguments": item.get("arguments") or "",
                    },
                }
            )
        elif kind == "reasoning":
            for part in item.get("summary") or ():
                if isinstance(part, dict):
                    reasoning.append(str(part.get("text", "")))
        else:
            raise Incomplete(f"output item {kind!r}")
    message: Json = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        finish = _INCOMPLETE_FINISH.get(reason or "", "length")
    else:
        finish = "tool_calls" if calls else "stop"
    usage = usage_from_chat(response.get("usage"))
    return {"choices": [{"message": message, "finish_reason": finish}], "usage": usage_json(usage)}


class StreamCapture:
    """Reassembles the answer from the client's stream as it is sent (bounded: past `limit`
    bytes it stops keeping anything, and the answer is not stored)."""

    def __init__(self, api: str, model: str, limit: int, max_event_bytes: int) -> None:
        self.api = api
        self.limit = limit
        self.size = 0
        self.broken: str | None = None
        self._translator: StreamTranslator | None = None
        self._sse: SSEParser | None = None
        if api == MESSAGES:
            self._translator = AnthropicStreamTranslator(model, max_event_bytes)
        elif api == RESPONSES:
            self._sse = SSEParser(max_event_bytes)
        else:
            self._translator = OpenAIStreamDecoder(max_event_bytes)
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        self._calls: dict[int, Json] = {}
        self._finish: str | None = None
        self._usage: Json | None = None
        self._response: Json | None = None  # Responses: the terminal event's response
        self._end = b""  # the last bytes of a chat stream, which ends with `data: [DONE]`

    def feed(self, data: bytes) -> None:
        """Take the next bytes the client was sent (never raises: a problem marks it broken)."""
        if self.broken is not None:
            return
        self.size += len(data)
        if self.size > self.limit * 4 + 65536:  # SSE framing is several times the answer
            self.broken = "too large"
            return
        try:
            if self._sse is not None:
                for name, payload in self._sse.feed(data):
                    self._responses_event(name, payload)
                return
            assert self._translator is not None
            if self.api == CHAT:
                self._end = (self._end + data)[-END_BYTES:]
            for chunk in self._translator.feed(data):
                self._chunk(chunk)
        except Exception as exc:  # an error event, or bytes the cache cannot read
            self.broken = str(exc) or type(exc).__name__

    def _responses_event(self, name: bytes, payload: bytes) -> None:
        if name in (b"response.completed", b"response.incomplete"):
            event = orjson.loads(payload)
            self._response = event.get("response")
        elif name in (b"error", b"response.failed"):
            raise Incomplete("the stream ended with an error")

    def _chunk(self, chunk: Json) -> None:
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                raise Incomplete("more than one choice")
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._text.append(delta["content"])
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._reasoning.append(reasoning)
            if delta.get("refusal"):
                self._refusal.append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                held = self._calls.get(index)
                function = call.get("function") or {}
                if held is None:
                    held = self._calls[index] = {
                        "id": call.get("id") or "",
                        "type": "function",
                        "function": {"name": function.get("name") or "", "arguments": ""},
                    }
                if function.get("arguments"):
                    held["function"]["arguments"] += function["arguments"]
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def answer(self, usage: Usage | None) -> CachedAnswer:
        """The reassembled answer of a stream that ended (`usage`: what the relay counted,
        for streams whose client did not ask for a usage chunk)."""
        if self.broken is not None:
            raise Incomplete(self.broken)
        if self._sse is not None:
            if self._response is None:
                raise Incomplete("no response.completed")
            answer = _answer_of(response_to_chat(self._response))
        else:
            assert self._translator is not None
            if self.api == CHAT and not self._end.rstrip().endswith(DONE.rstrip()):
                raise Incomplete("no [DONE]")
            try:
                for chunk in self._translator.close():
                    self._chunk(chunk)
            except Exception as exc:
                raise Incomplete(str(exc)) from exc
            message: Json = {"content": "".join(self._text) if self._text else None}
            if self._calls:
                message["tool_calls"] = [self._calls[i] for i in sorted(self._calls)]
            if self._reasoning:
                message["reasoning_content"] = "".join(self._reasoning)
            if self._refusal:
                message["refusal"] = "".join(self._refusal)
            completion = {
                "choices": [{"message": message, "finish_reason": self._finish}],
                "usage": self._usage,
            }
            answer = _answer_of(completion)
        if usage is not None:
            answer.usage = usage_json(usage)
        return answer
