"""The Anthropic Messages API (`POST /v1/messages`) in front of any provider.

A Messages request becomes a canonical chat body (`messages_to_chat`), a canonical
`chat.completion` becomes a Messages answer (`chat_to_message`), canonical chunks become the
Messages event stream (`MessagesStreamWriter`), and gateway errors are rendered in Anthropic's
error shape (`render_error`).

`thinking` (enabled, with a token budget) becomes `reasoning_effort`, which the providers map
to their own reasoning settings (OpenAI's `reasoning_effort`, Gemini's `thinkingConfig`,
Anthropic's thinking budget). What has no counterpart in Chat Completions: `top_k`, thinking
blocks in the history, `cache_control`, `service_tier` are dropped; Anthropic server tools (web
search, bash, text editor...) are refused with a 400, since no other provider runs them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

import orjson

from crossway.errors import BadRequest, GatewayError
from crossway.llm.api.sse import named_event
from crossway.llm.errors import render_anthropic_error
from crossway.llm.usage import usage_from_chat

Json = dict[str, Any]

API_NAME: Final = "anthropic_messages"
DEFAULT_STOP_REASON: Final = "end_turn"

STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
"""Chat `finish_reason` -> Messages `stop_reason`."""

REASONING_EFFORTS: Final = ((4096, "low"), (16384, "medium"))
"""Thinking `budget_tokens` below the first number -> that `reasoning_effort`; above: "high".
The inverse of the Anthropic translation's budgets (1024 / 4096 / 16384), so they round-trip."""


def _bad(message: str, param: str | None = None) -> BadRequest:
    return BadRequest(f"{param}: {message}" if param else message, param=param)


def new_message_id() -> str:
    return "msg_" + os.urandom(12).hex()


# --- request ------------------------------------------------------------------------------


def messages_to_chat(body: Any) -> Json:
    """Translate a Messages request body into a canonical chat body, or raise `BadRequest`."""
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("Field required", "model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("Field required (a positive integer)", "max_tokens")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _bad("Field required (a non-empty list)", "messages")

    messages: list[Json] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(raw_messages):
        messages.extend(_message(message, f"messages.{i}"))

    out: Json = {"model": model, "messages": messages, "max_completion_tokens": max_tokens}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop_sequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("must be a list of strings", "stop_sequences")
        out["stop"] = stop
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    effort = _reasoning_effort(body.get("thinking"))
    if effort is not None:
        out["reasoning_effort"] = effort
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
    tool_choice = body.get("tool_choice")
    if tool_choice is not None:
        _tool_choice(tool_choice, out)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _reasoning_effort(thinking: Any) -> str | None:
    """`thinking: {type: "enabled", budget_tokens}` as a chat `reasoning_effort`."""
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise _bad("budget_tokens must be an integer", "thinking.budget_tokens")
    for limit, effort in REASONING_EFFORTS:
        if budget < limit:
            return effort
    return "high"


def _system_text(system: Any) -> str:
    if system is None or system == "":
        return ""
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        parts = []
        for j, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise _bad("system blocks must be text blocks", f"system.{j}")
            parts.append(str(block.get("text", "")))
        return "\n".join(parts)
    raise _bad("must be a string or a list of text blocks", "system")


def _message(message: Any, where: str) -> list[Json]:
    if not isinstance(message, dict):
        raise _bad("must be an object", where)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _bad("role must be 'user' or 'assistant'", f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _bad("must be a string or a list of content blocks", f"{where}.content")
    if role == "assistant":
        return [_assistant(content, where)]
    return _user(content, where)


def _assistant(blocks: list[Any], where: str) -> Json:
    texts: list[str] = []
    calls: list[Json] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad("tool_use needs an id and a name", f"{where}.content.{j}")
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # provider-specific reasoning traces do not carry over
        else:
            raise _bad(f"unsupported assistant content block {kind!r}", f"{where}.content.{j}")
    out: Json = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _user(blocks: list[Any], where: str) -> list[Json]:
    tool_messages: list[Json] = []
    parts: list[Json] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        at = f"{where}.content.{j}"
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block.get("source"), at))
        elif kind == "document":
            parts.append(_document(block.get("source"), at))
        elif kind == "tool_result":
            tool_id = block.get("tool_use_id")
            if not isinstance(tool_id, str):
                raise _bad("tool_result needs a tool_use_id", at)
            text, images = _tool_result_content(block.get("content"), at)
            if block.get("is_error"):
                text = f"Error: {text}" if text else "Error"
            tool_messages.append({"role": "tool", "tool_call_id": tool_id, "content": text})
            parts.extend(images)
        else:
            raise _bad(f"unsupported user content block {kind!r}", at)
    out = tool_messages
    if parts:
        if len(parts) == 1 and parts[0]["type"] == "text":
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _image(source: Any, where: str) -> Json:
    if isinstance(source, dict):
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            media = source.get("media_type") or "image/png"
            url = f"data:{media};base64,{source['data']}"
            return {"type": "image_url", "image_url": {"url": url}}
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _bad("image source must be base64 data or a url", f"{where}.source")


def _document(source: Any, where: str) -> Json:
    if isinstance(source, dict) and source.get("type") == "base64":
        media = source.get("media_type") or "application/pdf"
        data = f"data:{media};base64,{source.get('data', '')}"
        return {"type": "file", "file": {"filename": "document.pdf", "file_data": data}}
    if isinstance(source, dict) and source.get("type") == "text":
        return {"type": "text", "text": str(source.get("data", ""))}
    raise _bad("document source must be base64 data or text", f"{where}.source")


def _tool_result_content(content: Any, where: str) -> tuple[str, list[Json]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise _bad("tool_result content must be a string or a list of blocks", where)
    texts: list[str] = []
    images: list[Json] = []
    for k, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "image":
            images.append(_image(block.get("source"), f"{where}.content.{k}"))
        else:
            raise _bad(f"unsupported tool_result block {kind!r}", f"{where}.content.{k}")
    return "\n".join(texts), images


def _tools(tools: Any) -> list[Json]:
    if not isinstance(tools, list):
        raise _bad("must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad("each tool needs a name", f"tools.{i}")
        schema = tool.get("input_schema")
        kind = tool.get("type")
        if kind not in (None, "custom") or not isinstance(schema, dict):
            raise _bad(
                f"tool {tool['name']!r} is an Anthropic server tool ({kind}); only custom tools "
                "with an input_schema can be served by this model's provider",
                f"tools.{i}",
            )
        function: Json = {"name": tool["name"], "parameters": schema}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, out: Json) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _bad("must be auto, any, tool (with a name) or none", "tool_choice")
    if choice.get("disable_parallel_tool_use") and out.get("tools"):
        out["parallel_tool_calls"] = False


# --- response -----------------------------------------------------------------------------


def anthropic_usage(usage: Any) -> Json:
    """Canonical usage -> Messages usage (whose `input_tokens` excludes cache reads and writes)."""
    u = usage_from_chat(usage)
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0}
    fresh = max(u.input_tokens - u.cached_tokens - u.cache_write_tokens, 0)
    return {
        "input_tokens": fresh,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
    }


def _tool_input(arguments: Any) -> Json:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def _reasoning(message: Mapping[str, Any]) -> str | None:
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) and value else None


def chat_to_message(resp: Json, model: str) -> Json:
    """Translate a canonical `chat.completion` into a Messages answer for `model`."""
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[Json] = []
    reasoning = _reasoning(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if not text and message.get("refusal"):
        text = message["refusal"]
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + os.urandom(12).hex(),
                "name": function.get("name", ""),
                "input": _tool_input(function.get("arguments")),
            }
        )
    stop_reason, stop_sequence = _stop(choice)
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(resp.get("usage")),
    }


def _stop(choice: Mapping[str, Any]) -> tuple[str, str | None]:
    """`(stop_reason, stop_sequence)` for a canonical choice. A stop string that ended the
    answer arrives as `choice.stop_reason` (vLLM's extension, also set by the Anthropic and
    Bedrock translations); "" means a stop sequence whose text the provider did not say."""
    reason = choice.get("finish_reason")
    sequence = choice.get("stop_reason")
    if reason == "stop" and isinstance(sequence, str):
        return "stop_sequence", sequence or None
    return STOP_REASONS.get(reason or "", DEFAULT_STOP_REASON), None


# --- streaming ----------------------------------------------------------------------------


class MessagesStreamWriter:
    """Turns canonical `chat.completion.chunk` dicts into the Messages event stream.

    Events: `message_start` (on the first chunk), then per content block
    `content_block_start` / `content_block_delta` / `content_block_stop`, and at the end
    `message_delta` (stop reason and usage) and `message_stop`. Usage arrives last in canonical
    streams, so `message_start` carries zeros and `message_delta` the real counts (the SDK
    takes both). `finish` ends a clean stream; `error` ends a broken one with `event: error`.
    """

    __slots__ = (
        "_block",
        "_block_index",
        "_model",
        "_started",
        "_stop",
        "_stop_sequence",
        "_tools",
        "_usage",
    )

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._block: str | None = None  # "text" | "thinking" | "tool_use"
        self._block_index = -1
        self._tools: dict[int, int] = {}  # canonical tool-call index -> block index
        self._stop: str | None = None
        self._stop_sequence: str | None = None
        self._usage: Any = None

    @property
    def started(self) -> bool:
        return self._started

    def _start(self) -> bytes:
        self._started = True
        message: Json = {
            "id": new_message_id(),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return named_event(
            "message_start", {"type": "message_start", "message": message}
        ) + named_event("ping", {"type": "ping"})

    def _close_block(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        return named_event(
            "content_block_stop", {"type": "content_block_stop", "index": self._block_index}
        )

    def _open_block(self, kind: str, block: Json) -> bytes:
        out = self._close_block()
        self._block = kind
        self._block_index += 1
        return out + named_event(
            "content_block_start",
            {"type": "content_block_start", "index": self._block_index, "content_block": block},
        )

    def _delta(self, index: int, delta: Json) -> bytes:
        return named_event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def feed(self, chunk: Json) -> bytes:
        """Events for one canonical chunk (possibly none)."""
        out = b"" if self._started else self._start()
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = _reasoning(delta)
            if reasoning:
                if self._block != "thinking":
                    out += self._open_block("thinking", {"type": "thinking", "thinking": ""})
                out += self._delta(
                    self._block_index, {"type": "thinking_delta", "thinking": reasoning}
                )
            text = delta.get("content")
            if text:
                if self._block != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out += self._delta(self._block_index, {"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._stop, self._stop_sequence = _stop(choice)
        return out

    def _tool_delta(self, call: Json) -> bytes:
        out = b""
        index = call.get("index", 0)
        function = call.get("function") or {}
        if index not in self._tools:
            block: Json = {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + os.urandom(12).hex(),
                "name": function.get("name") or "",
                "input": {},
            }
            out += self._open_block("tool_use", block)
            self._tools[index] = self._block_index
        arguments = function.get("arguments")
        if arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out += self._delta(self._tools[index], delta)
        return out

    def finish(self) -> bytes:
        """Close the stream after the upstream ended it cleanly."""
        if self._stop is None:
            return self.error(GatewayError("the upstream ended the stream before it finished"))
        out = (b"" if self._started else self._start()) + self._close_block()
        usage = anthropic_usage(self._usage)
        out += named_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": self._stop, "stop_sequence": self._stop_sequence},
                "usage": usage,
            },
        )
        return out + named_event("message_stop", {"type": "message_stop"})

    def error(self, exc: GatewayError) -> bytes:
        """End a broken stream with an `error` event the Anthropic SDKs raise on."""
        return b"event: error\ndata: " + render_anthropic_error(exc)[2] + b"\n\n"
