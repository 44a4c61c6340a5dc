"""Anthropic Messages API (`POST /v1/messages`) behind the canonical OpenAI Chat shape.

What is translated:
- system and developer messages go to the top-level `system` (as text blocks, in order);
- consecutive messages of one role are merged (Anthropic wants user / assistant alternating),
  so parallel tool results (one OpenAI `tool` message each) land in one user message;
- tool calls become `tool_use` blocks (arguments parsed into an object), tool results
  `tool_result` blocks with the same ids; images: data URLs become base64 sources, other URLs
  `url` sources; PDFs in `file` parts become `document` blocks;
- `max_tokens` is required by Anthropic: when the client sets none, `DEFAULT_MAX_TOKENS`
  (or the provider's `default_max_tokens`) is sent;
- `tool_choice` required -> any, a function -> tool, `parallel_tool_calls: false` ->
  `disable_parallel_tool_use`; `stop` -> `stop_sequences`; `user` -> `metadata.user_id`;
- `response_format` json_object / json_schema (with an object schema) becomes a forced call of
  a `crossway_json_response` tool whose input schema is the requested one, turned back into the
  answer's text; with tools of its own, extended thinking or a non-object schema, an instruction
  appended to the system prompt instead;
- `reasoning_effort` low / medium / high -> extended thinking with a budget of 1024 / 4096 /
  16384 tokens (`max_tokens` raised above it when needed; temperature and top_k dropped, as
  thinking requires);
- keys OpenAI does not know (`top_k`, `thinking`, ...) are forwarded as they are.

Answers: text blocks are joined into `content`, `tool_use` blocks become `tool_calls`, thinking
blocks become `reasoning_content` plus `thinking_blocks`; usage counts cache reads and writes
in `prompt_tokens` (Anthropic's `input_tokens` excludes them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from crossway.config.llm import DEFAULT_ANTHROPIC_VERSION, DEFAULT_MAX_EVENT_BYTES, ProviderConfig
from crossway.errors import BadRequest, GatewayError, UpstreamError
from crossway.llm.providers.base import Json, Provider, StreamTranslator, UpstreamRequest
from crossway.llm.providers.common import (
    JSON_TOOL,
    JSON_TOOL_DESCRIPTION,
    ChunkFactory,
    append_turn,
    assistant_message,
    body_excerpt,
    completion,
    content_parts,
    error_or_fallback,
    function_tools,
    inline_file,
    inline_image,
    json_instruction,
    json_tool_schema,
    loads_object,
    max_tokens_of,
    messages_of,
    new_id,
    passthrough_keys,
    provider_headers,
    status_error,
    stop_list,
    text_of,
    tool_call,
    tool_call_parts,
    tool_choice_of,
    tool_result_id,
    tool_use_finish,
    unexpected_shape,
    usage_with_cache,
)
from crossway.proxy.sse import SSEParser

DEFAULT_ANTHROPIC_BASE_URL: Final = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS: Final = 4096
"""`max_tokens` sent when the client sets none (every current Claude model allows at least this)."""

THINKING_BUDGETS: Final[dict[str, int]] = {
    "minimal": 1024,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
}
"""`reasoning_effort` -> extended thinking `budget_tokens` (when the client sent no `thinking`)."""

STOP_REASONS: Final[dict[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error types -> HTTP status, for errors that arrive inside a stream.
ERROR_STATUS: Final[dict[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# --- request ----------------------------------------------------------------------------------


def translate_request(body: Json, model: str | None, stream: bool, default_max_tokens: int) -> Json:
    """A canonical chat body as an Anthropic Messages body (`model` None leaves it out)."""
    system: list[Json] = []
    messages: list[Json] = []
    for i, msg in enumerate(messages_of(body)):
        role = msg["role"]
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(_text_blocks(msg.get("content"), where))
            continue
        if role == "user":
            blocks = _user_blocks(msg.get("content"), where)
            append_turn(messages, "user", blocks, is_tool_result=_is_tool_result)
        elif role == "assistant":
            append_turn(messages, "assistant", _assistant_blocks(msg, where))
        elif role in ("tool", "function"):
            blocks = [_tool_result(msg, where)]
            append_turn(messages, "user", blocks, is_tool_result=_is_tool_result)
        else:
            raise BadRequest(f"{where}.role {role!r} is not supported", param="messages")

    out: Json = passthrough_keys(body)
    if model is not None:
        out["model"] = model
    out["messages"] = messages
    out["max_tokens"] = max_tokens_of(body) or default_max_tokens
    budget = THINKING_BUDGETS.get(str(body.get("reasoning_effort")))
    if "thinking" in body:
        budget = None  # the client's own thinking config wins
    if budget is not None:
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if out["max_tokens"] <= budget:
            out["max_tokens"] = budget + default_max_tokens
    thinking = "thinking" in out
    json_schema = json_tool_schema(body) if not thinking else None
    if json_schema is None:
        instruction = json_instruction(body.get("response_format"))
        if instruction:
            system.append({"type": "text", "text": instruction})
    if system:
        out["system"] = system
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if budget is not None:
        # Extended thinking refuses a changed temperature or top_k.
        out.pop("temperature", None)
        out.pop("top_k", None)
    stops = stop_list(body)
    if stops:
        out["stop_sequences"] = stops
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["metadata"] = {"user_id": metadata["user_id"]}
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    n = body.get("n")
    if n not in (None, 1):
        raise BadRequest("n > 1 is not supported by Anthropic models", param="n")

    tools = function_tools(body)
    if tools:
        out["tools"] = [_tool(fn) for fn in tools]
    choice = tool_choice_of(body)
    anthropic_choice: Json | None = None
    if choice is not None:
        mode, name = choice
        if mode == "none":
            anthropic_choice = {"type": "none"}
        elif mode == "auto":
            anthropic_choice = {"type": "auto"}
        elif mode == "required":
            anthropic_choice = {"type": "any"}
        else:
            anthropic_choice = {"type": "tool", "name": name}
    if body.get("parallel_tool_calls") is False and tools:
        anthropic_choice = anthropic_choice or {"type": "auto"}
        if anthropic_choice["type"] != "none":
            anthropic_choice["disable_parallel_tool_use"] = True
    if anthropic_choice is not None and tools:
        out["tool_choice"] = anthropic_choice
    if json_schema is not None:
        out["tools"] = [
            {
                "name": JSON_TOOL,
                "description": JSON_TOOL_DESCRIPTION,
                "input_schema": json_schema,
            }
        ]
        out["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
    if stream:
        out["stream"] = True
    else:
        out.pop("stream", None)
    return out


def _is_tool_result(block: Json) -> bool:
    return block.get("type") == "tool_result"


def _text_blocks(content: Any, where: str) -> list[Json]:
    blocks: list[Json] = []
    for part in content_parts(content, where):
        if part["type"] in ("text", "input_text") and part.get("text"):
            block: Json = {"type": "text", "text": part["text"]}
            if "cache_control" in part:
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
    return blocks


def _user_blocks(content: Any, where: str) -> list[Json]:
    blocks: list[Json] = []
    for j, part in enumerate(content_parts(content, where)):
        kind = part["type"]
        at = f"{where}.content[{j}]"
        block: Json
        if kind in ("text", "input_text"):
            if not part.get("text"):
                continue
            block = {"type": "text", "text": part["text"]}
        elif kind == "image_url":
            url, inline = inline_image(part, at)
            if inline is not None:
                source: Json = {"type": "base64", "media_type": inline[0], "data": inline[1]}
            else:
                source = {"type": "url", "url": url}
            block = {"type": "image", "source": source}
        elif kind == "file":
            block = _document(part, at)
        elif kind in ("image", "document", "tool_result", "search_result"):
            block = dict(part)  # already Anthropic-shaped (sent by an Anthropic-aware client)
        else:
            raise BadRequest(f"{at}: content type {kind!r} is not supported by Anthropic models")
        if "cache_control" in part:
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _document(part: Json, where: str) -> Json:
    media_type, payload = inline_file(part, where)
    source = {"type": "base64", "media_type": media_type, "data": payload}
    return {"type": "document", "source": source}


def _assistant_blocks(msg: Json, where: str) -> list[Json]:
    blocks: list[Json] = []
    thinking = msg.get("thinking_blocks")
    if isinstance(thinking, list):
        blocks.extend(b for b in thinking if isinstance(b, dict))
    for part in content_parts(msg.get("content"), where):
        if part["type"] in ("text", "output_text") and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
    calls = msg.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise BadRequest(f"{where}.tool_calls must be a list", param="messages")
        for k, call in enumerate(calls):
            call_id, name, arguments = tool_call_parts(call, f"{where}.tool_calls[{k}]")
            blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
    return blocks


def _tool_result(msg: Json, where: str) -> Json:
    content = msg.get("content")
    result: Json = {"type": "tool_result", "tool_use_id": tool_result_id(msg, where)}
    if isinstance(content, list):
        result["content"] = _user_blocks(content, where)
    else:
        result["content"] = text_of(content)
    return result


def _tool(fn: Json) -> Json:
    schema = fn.get("parameters") or {"type": "object", "properties": {}}
    tool: Json = {"name": fn["name"], "input_schema": schema}
    if fn.get("description"):
        tool["description"] = fn["description"]
    return tool


# --- response ---------------------------------------------------------------------------------


def anthropic_usage(usage: Any) -> Json:
    """Anthropic usage as canonical usage (cache reads and writes count as prompt tokens)."""
    if not isinstance(usage, dict):
        usage = {}
    return usage_with_cache(
        usage.get("input_tokens") or 0,
        usage.get("cache_read_input_tokens") or 0,
        usage.get("cache_creation_input_tokens") or 0,
        usage.get("output_tokens") or 0,
    )


@unexpected_shape("answer")
def translate_response(data: Json, model: str) -> Json:
    """An Anthropic `message` as a canonical `chat.completion`."""
    text: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[Json] = []
    calls: list[Json] = []
    for block in data.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "tool_use" and block.get("name") == JSON_TOOL:
            text.append(orjson.dumps(block.get("input") or {}).decode())
        elif kind == "tool_use":
            calls.append(tool_call(block.get("id", ""), block.get("name", ""), block.get("input")))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
            thinking_blocks.append(block)
        elif kind == "redacted_thinking":
            thinking_blocks.append(block)
    message = assistant_message(text, calls, reasoning, thinking_blocks)
    out = completion(
        str(data.get("id") or new_id("chatcmpl-")),
        model,
        message,
        tool_use_finish(STOP_REASONS, data.get("stop_reason"), bool(calls)),
        anthropic_usage(data.get("usage")),
    )
    if data.get("stop_reason") == "stop_sequence":
        # Canonical extension (vLLM's name): the stop string that ended the answer.
        out["choices"][0]["stop_reason"] = str(data.get("stop_sequence") or "")
    return out


@error_or_fallback
def anthropic_error(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """An Anthropic error answer (`{type: "error", error: {type, message}}`) as a gateway error."""
    message = f"upstream answered HTTP {status}"
    kind = None
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            kind = err.get("type")
    except orjson.JSONDecodeError:
        if body:
            message = body_excerpt(body)
    return status_error(status, message, headers, code=kind if kind == "overloaded_error" else None)


# --- stream -----------------------------------------------------------------------------------


class AnthropicStreamTranslator(StreamTranslator):
    """Anthropic SSE events -> canonical chunks, one event at a time."""

    def __init__(self, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._sse = SSEParser(max_event_bytes)
        self.chunks = self._chunks = ChunkFactory(new_id("chatcmpl-"), model)
        self._tool_index: dict[int, int] = {}  # content block index -> tool call index
        self._json_blocks: set[int] = set()  # blocks of the forced JSON tool: their input is text
        self._usage: Json = {}
        self._finished = False
        self._stopped = False

    def feed(self, data: bytes) -> list[Json]:
        delta = self._chunks.delta
        return [
            delta({"content": item}) if type(item) is str else item  # type: ignore[misc]
            for item in self.feed_lazy(data)
        ]

    @unexpected_shape("stream event")
    def feed_lazy(self, data: bytes) -> list[Json | str]:
        out: list[Json | str] = []
        for name, payload in self._sse.feed(data):
            if name == b"content_block_delta":  # the bulk of a stream: text
                event = loads_object(payload, "stream event")
                delta = event.get("delta")
                if (
                    type(delta) is dict
                    and delta.get("type") == "text_delta"
                    and type(delta.get("text")) is str
                    and event.get("type") == "content_block_delta"
                ):
                    out.append(delta["text"])
                    continue
                self._decoded(name, event, out)
            else:
                self._event(name, payload, out)
        return out

    @unexpected_shape("stream event")
    def close(self) -> list[Json]:
        out: list[Json | str] = []
        for name, payload in self._sse.close():
            self._event(name, payload, out)
        if not self._stopped:
            raise UpstreamError("the upstream stream ended before message_stop")
        delta = self._chunks.delta
        return [delta({"content": i}) if type(i) is str else i for i in out]  # type: ignore[misc]

    def _event(self, name: bytes, payload: bytes, out: list[Json | str]) -> None:
        if name != b"ping":
            self._decoded(name, loads_object(payload, "stream event"), out)

    def _decoded(self, name: bytes, event: Json, out: list[Json | str]) -> None:
        kind = event.get("type") or name.decode("utf-8", "replace")
        chunks = self._chunks
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            dkind = delta.get("type")
            if dkind == "text_delta":
                text = delta.get("text", "")
                out.append(text if type(text) is str else chunks.delta({"content": text}))
            elif dkind == "input_json_delta":
                fragment = delta.get("partial_json", "")
                if fragment and event.get("index", 0) in self._json_blocks:
                    out.append(chunks.delta({"content": fragment}))
                elif fragment:
                    index = self._tool_index.get(event.get("index", 0), 0)
                    out.append(chunks.tool_call_arguments(index, fragment))
            elif dkind == "thinking_delta":
                out.append(chunks.delta({"reasoning_content": delta.get("thinking", "")}))
            elif dkind == "signature_delta":
                out.append(chunks.thinking_signature(delta.get("signature", "")))
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            bkind = block.get("type")
            if bkind == "tool_use" and block.get("name") == JSON_TOOL:
                self._json_blocks.add(event.get("index", 0))
            elif bkind == "tool_use":
                index = len(self._tool_index)
                self._tool_index[event.get("index", 0)] = index
                out.append(
                    chunks.tool_call_start(index, block.get("id", ""), block.get("name", ""))
                )
            elif bkind == "text" and block.get("text"):
                out.append(chunks.delta({"content": block["text"]}))
            elif bkind == "thinking" and block.get("thinking"):
                out.append(chunks.delta({"reasoning_content": block["thinking"]}))
            elif bkind == "redacted_thinking":
                out.append(chunks.delta({"thinking_blocks": [block]}))
        elif kind == "message_start":
            message = event.get("message") or {}
            if message.get("id"):
                chunks.id = str(message["id"])
            self._usage.update(message.get("usage") or {})
            out.append(chunks.delta({"role": "assistant", "content": ""}))
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict):
                self._usage.update({k: v for k, v in usage.items() if v is not None})
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason and not self._finished:
                self._finished = True
                finish = tool_use_finish(STOP_REASONS, reason, bool(self._tool_index))
                chunk = chunks.delta({}, finish)
                if reason == "stop_sequence":  # canonical extension, as in answers
                    sequence = (event.get("delta") or {}).get("stop_sequence")
                    chunk["choices"][0]["stop_reason"] = str(sequence or "")
                out.append(chunk)
        elif kind == "message_stop":
            self._stopped = True
            if not self._finished:
                self._finished = True
                out.append(chunks.delta({}, "stop"))
            out.append(chunks.usage(anthropic_usage(self._usage)))
        elif kind == "error":
            err = event.get("error") or {}
            etype = err.get("type", "api_error")
            raise status_error(
                ERROR_STATUS.get(etype, 500),
                str(err.get("message") or etype),
                code=etype if etype == "overloaded_error" else None,
            )


# --- provider ---------------------------------------------------------------------------------


class AnthropicProvider(Provider):
    """Anthropic's API with an `x-api-key` and the `anthropic-version` header."""

    native_api = "anthropic_messages"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.base_url = (config.base_url or DEFAULT_ANTHROPIC_BASE_URL).rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.max_tokens = config.default_max_tokens or DEFAULT_MAX_TOKENS
        base = {
            "content-type": "application/json",
            "anthropic-version": config.anthropic_version or DEFAULT_ANTHROPIC_VERSION,
        }
        self.headers = provider_headers(config, base, "x-api-key")

    async def chat_request(self, body: Json, model: str, stream: bool) -> UpstreamRequest:
        payload = translate_request(body, model, stream, self.max_tokens)
        return UpstreamRequest(
            "POST", self.base_url + "/v1/messages", dict(self.headers), orjson.dumps(payload)
        )

    def chat_response(self, body: bytes) -> Json:
        data = loads_object(body)
        return translate_response(data, str(data.get("model") or ""))

    def chat_stream(self, model: str) -> StreamTranslator:
        return AnthropicStreamTranslator(model, self.max_event_bytes)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        return anthropic_error(status, headers, body)
