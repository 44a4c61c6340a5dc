"""Pieces every translating provider shares: canonical answer and chunk shapes (messages, tool
calls, finish reasons, usage), request pieces (content parts, inline images and files, tool calls
and results, tools, stop, max_tokens, alternating turns), request headers, embeddings answers,
and mapping an upstream's HTTP error onto the gateway's error tree.

The canonical form is OpenAI Chat Completions. A few extension fields carry what OpenAI's
shape has no room for, so a round trip through another provider loses nothing:

- `message.reasoning_content` / `delta.reasoning_content`: visible reasoning ("thinking") text.
- `message.thinking_blocks` / `delta.thinking_blocks`: Anthropic-shaped thinking blocks
  (`{type: "thinking", thinking, signature}` or `{type: "redacted_thinking", data}`), needed to
  send a thinking turn back to the model. In a stream, a block's signature arrives as a delta
  `{type: "thinking", thinking: "", signature}` after its text.
- `usage.prompt_tokens_details.cache_creation_tokens`: prompt tokens written to a cache.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, ParamSpec, TypeVar

import orjson

from crossway.config.llm import ProviderConfig
from crossway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthenticated,
    UnprocessableEntity,
    UpstreamError,
    UpstreamTimeout,
)
from crossway.llm.providers.base import Json

CONTEXT_LENGTH_EXCEEDED: Final = "context_length_exceeded"
"""Error `code` set when an upstream refused a prompt as too long (OpenAI's own code), so
routing can fall back to a model with a larger context window."""

# OpenAI Chat request keys a translating provider consumes or must not forward; any other key a
# client sends is passed through to providers whose API might accept it.
OPENAI_ONLY_KEYS: Final = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "response_format",
        "parallel_tool_calls",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "user",
        "store",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "service_tier",
        "verbosity",
        "web_search_options",
        "prompt_cache_key",
        "safety_identifier",
        "temperature",
        "top_p",
        "metadata",
    }
)

_STATUS_ERRORS: Final[dict[int, type[GatewayError]]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    408: UpstreamTimeout,
    413: PayloadTooLarge,
    422: UnprocessableEntity,
    429: RateLimited,
    503: ServiceUnavailable,
    504: UpstreamTimeout,
}

_KEPT_HEADERS: Final = ("retry-after", "retry-after-ms")

ERROR_EXCERPT_BYTES: Final = 500
"""How much of a non-JSON upstream error body becomes the error's message."""

_TOO_LONG_HINTS: Final = (
    "prompt is too long",
    "input is too long",
    "too many input tokens",
    "input token count",
    "exceeds the maximum number of tokens",
    "context length",
    "context window",
    "maximum context",
)


_P = ParamSpec("_P")
_R = TypeVar("_R")
SHAPE_ERRORS: Final = (KeyError, TypeError, AttributeError, ValueError, IndexError)
"""What reading an upstream's JSON of an unexpected shape raises."""


def unexpected_shape(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turn a translator's shape errors (an upstream answer that is valid JSON but not the
    documented structure) into `UpstreamError`, so they fail that attempt cleanly."""

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except GatewayError:
                raise
            except SHAPE_ERRORS as exc:
                raise UpstreamError(
                    f"upstream sent an unexpected {what} ({type(exc).__name__}: {exc})"
                ) from None

        return guarded

    return decorate


def error_or_fallback(
    fn: Callable[[int, Mapping[str, str], bytes], GatewayError],
) -> Callable[[int, Mapping[str, str], bytes], GatewayError]:
    """An error translator that never raises: an error body of an odd shape still gives an
    error with the upstream's status."""

    @functools.wraps(fn)
    def guarded(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        try:
            return fn(status, headers, body)
        except SHAPE_ERRORS:
            return status_error(status, f"upstream answered HTTP {status}", headers)

    return guarded


def status_error(
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
) -> GatewayError:
    """The gateway error for an upstream's HTTP error `status`, keeping status, message and
    the retry hints (`retry-after`) a client or the router needs."""
    keep: dict[str, str] = {}
    if headers:
        for name in _KEPT_HEADERS:
            value = header(headers, name)
            if value:
                keep[name] = value
    if code is None and status in (400, 413) and _looks_too_long(message):
        code = CONTEXT_LENGTH_EXCEEDED
    cls = _STATUS_ERRORS.get(status, UpstreamError)
    return cls(message, code=code, param=param, status=status, headers=keep)


def provider_headers(
    config: ProviderConfig, base: dict[str, str], api_key_header: str
) -> dict[str, str]:
    """A provider's request headers: `base`, its `api_key` (when set) under `api_key_header`,
    then the configured `headers` (names lower-cased; they override the others)."""
    headers = dict(base)
    if config.api_key is not None and config.api_key.get_secret_value():
        headers[api_key_header] = config.api_key.get_secret_value()
    headers.update({k.lower(): v.get_secret_value() for k, v in config.headers.items()})
    return headers


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Header `name` (lower case) from a mapping whose keys may be in any case."""
    value = headers.get(name)
    if value is None:
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def body_excerpt(body: bytes) -> str:
    """The start of an upstream error body that is not JSON, as text for the error message."""
    return body[:ERROR_EXCERPT_BYTES].decode("utf-8", "replace")


def _looks_too_long(message: str) -> bool:
    lower = message.lower()
    return any(hint in lower for hint in _TOO_LONG_HINTS)


def loads_object(body: bytes | str, what: str = "answer") -> Json:
    """Parse a JSON object sent by an upstream; anything else is an `UpstreamError`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"upstream sent an invalid JSON {what}") from None
    if not isinstance(data, dict):
        raise UpstreamError(f"upstream sent an unexpected {what}")
    return data


def new_id(prefix: str) -> str:
    """A random id such as `chatcmpl-3f9a...` for answers whose provider gives none."""
    return prefix + os.urandom(12).hex()


def now() -> int:
    return int(time.time())


# --- canonical shapes -----------------------------------------------------------------------


def completion(
    id_: str, model: str, message: Json, finish_reason: str | None, usage: Json | None
) -> Json:
    """A canonical `chat.completion` with one choice."""
    out: Json = {
        "id": id_,
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def usage_object(
    prompt: int,
    completion_tokens: int,
    *,
    cached: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
    total: int | None = None,
) -> Json:
    """Canonical usage; `prompt` counts cached tokens too, `completion_tokens` reasoning too."""
    details: Json = {"cached_tokens": cached}
    if cache_write:
        details["cache_creation_tokens"] = cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": total if total is not None else prompt + completion_tokens,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def usage_with_cache(input_tokens: int, cache_read: int, cache_write: int, output: int) -> Json:
    """Canonical usage for an API whose input count leaves out cache reads and writes
    (Anthropic, Converse): both are added to the prompt tokens."""
    return usage_object(
        input_tokens + cache_read + cache_write, output, cached=cache_read, cache_write=cache_write
    )


def tool_call(call_id: str, name: str, arguments: Any) -> Json:
    """A canonical tool call; `arguments` (the provider's object) becomes JSON text."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments or {}).decode()},
    }


def assistant_message(
    text: list[str],
    calls: list[Json],
    reasoning: list[str],
    thinking_blocks: list[Json] | None = None,
) -> Json:
    """A canonical answer message from its pieces: `content` is null only when the model made
    tool calls and wrote nothing; reasoning text and thinking blocks go in the extension fields."""
    message: Json = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning or thinking_blocks:
        message["reasoning_content"] = "".join(reasoning)
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    message["refusal"] = None
    return message


def tool_use_finish(stop_reasons: Mapping[str, str], reason: str | None, tool_calls: bool) -> str:
    """The canonical `finish_reason` for a provider's stop `reason` (unknown or none: `stop`).
    A tool-use stop without `tool_calls` was the forced `JSON_TOOL` call, answered as text."""
    finish = stop_reasons.get(reason, "stop") if reason else "stop"
    if finish == "tool_calls" and not tool_calls:
        return "stop"
    return finish


class ChunkFactory:
    """Builds the `chat.completion.chunk` dicts of one stream (same id, model and time)."""

    __slots__ = ("created", "id", "model")

    def __init__(self, id_: str, model: str) -> None:
        self.id = id_
        self.model = model
        self.created = now()

    def delta(self, delta: Json, finish_reason: str | None = None, index: int = 0) -> Json:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }

    def tool_call_start(self, index: int, call_id: str, name: str) -> Json:
        """The chunk opening tool call `index`; its arguments follow in `tool_call_arguments`."""
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self.delta({"tool_calls": [call]})

    def tool_call_arguments(self, index: int, fragment: str) -> Json:
        """A chunk carrying the next `fragment` of tool call `index`'s JSON arguments."""
        # Built here rather than through `delta`: one call less on a per-event path.
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": index, "function": {"arguments": fragment}}]
                    },
                    "finish_reason": None,
                    "logprobs": None,
                }
            ],
        }

    def thinking_signature(self, signature: str) -> Json:
        """The chunk that ends a streamed thinking block: its signature, as a `thinking_blocks`
        delta with empty text (see the module docstring)."""
        block = {"type": "thinking", "thinking": "", "signature": signature}
        return self.delta({"thinking_blocks": [block]})

    def usage(self, usage: Json) -> Json:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }


# --- request pieces ---------------------------------------------------------------------------


def text_of(content: Any) -> str:
    """The text of a message `content` (a string or a list of parts; non-text parts skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text")
        )
    raise BadRequest("message content must be a string or a list of parts")


def content_parts(content: Any, where: str) -> list[Json]:
    """A message `content` as a list of part dicts (a string becomes one text part)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list):
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise BadRequest(f"{where}.content[{i}] must be an object with a type")
        return content
    raise BadRequest(f"{where}.content must be a string or a list of parts")


def image_url_of(part: Json, where: str) -> str:
    """The URL of an OpenAI `image_url` part."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.image_url.url must be a non-empty string")
    return url


def parse_data_url(url: str, where: str) -> tuple[str, str] | None:
    """`(media_type, base64 data)` of a `data:` URL, or None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise BadRequest(f"{where}: data URLs must be base64 encoded (data:<type>;base64,...)")
    media_type = header[: -len(";base64")] or "application/octet-stream"
    return media_type, data


def inline_image(part: Json, where: str) -> tuple[str, tuple[str, str] | None]:
    """An OpenAI `image_url` part as `(url, inline)`: `inline` is `(media_type, base64 data)`,
    the data checked, for a `data:` URL, and None for a link."""
    url = image_url_of(part, where)
    parsed = parse_data_url(url, where)
    if parsed is None:
        return url, None
    return url, (parsed[0], check_base64(parsed[1], where))


def inline_file(part: Json, where: str) -> tuple[str, str]:
    """`(media_type, base64 data)` of an OpenAI `file` part; only inline `file_data` data URLs
    can be translated (uploaded `file_id`s live on OpenAI's side)."""
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    parsed = parse_data_url(data, where) if isinstance(data, str) else None
    if parsed is None:
        raise BadRequest(f"{where}: files must be sent inline as file_data data URLs")
    return parsed


def guess_media_type(url: str, default: str = "image/jpeg") -> str:
    """A media type from a URL's file extension (for providers that want one with a URL)."""
    path = url.split("?", 1)[0].lower()
    for ext, media in (
        (".png", "image/png"),
        (".jpg", "image/jpeg"),
        (".jpeg", "image/jpeg"),
        (".gif", "image/gif"),
        (".webp", "image/webp"),
        (".pdf", "application/pdf"),
    ):
        if path.endswith(ext):
            return media
    return default


def check_base64(data: str, where: str) -> str:
    """`data` unchanged if it is valid base64; a `BadRequest` naming `where` otherwise."""
    try:
        base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: invalid base64 data") from None
    return data


def tool_arguments(call: Json, where: str) -> Json:
    """The arguments of an OpenAI tool call (a JSON string) as the object other providers want."""
    fn = call.get("function")
    if not isinstance(fn, dict):
        raise BadRequest(f"{where}.function is required")
    raw = fn.get("arguments")
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        args = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        raise BadRequest(f"{where}.function.arguments is not valid JSON") from None
    if not isinstance(args, dict):
        raise BadRequest(f"{where}.function.arguments must be a JSON object")
    return args


def tool_call_parts(call: Any, where: str) -> tuple[str, str, Json]:
    """`(id, function name, arguments object)` of a tool call in an assistant message, for
    providers that pair calls and results by the client's ids (the id is required)."""
    if not isinstance(call, dict) or not isinstance(call.get("id"), str):
        raise BadRequest(f"{where}.id is required", param="messages")
    fn = call.get("function")
    name = fn.get("name", "") if isinstance(fn, dict) else ""
    return call["id"], name, tool_arguments(call, where)


def tool_result_id(msg: Json, where: str) -> str:
    """The id of the tool call a `tool` message answers (required)."""
    call_id = msg.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(f"{where}.tool_call_id is required", param="messages")
    return call_id


def function_tools(body: Json) -> list[Json]:
    """The `function` objects of a request's tools (legacy `functions` too), validated."""
    tools = body.get("tools")
    if tools is None and isinstance(body.get("functions"), list):
        tools = [{"type": "function", "function": f} for f in body["functions"]]
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list", param="tools")
    out: list[Json] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise BadRequest(
                f"tools[{i}]: only function tools can be translated (got {kind!r})",
                param=f"tools[{i}].type",
            )
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise BadRequest(f"tools[{i}].function.name is required", param=f"tools[{i}].function")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise BadRequest(
                f"tools[{i}].function.parameters must be an object",
                param=f"tools[{i}].function.parameters",
            )
        out.append(fn)
    return out


def tool_choice_of(body: Json) -> tuple[str, str | None] | None:
    """The request's tool choice as `(mode, function name)`: mode is none / auto / required /
    function; None when the client did not say."""
    choice = body.get("tool_choice", body.get("function_call"))
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise BadRequest(f"unknown tool_choice {choice!r}", param="tool_choice")
        return choice, None
    if isinstance(choice, dict):
        fn = choice.get("function") if "function" in choice else choice
        name = fn.get("name") if isinstance(fn, dict) else None
        if isinstance(name, str) and name:
            return "function", name
    raise BadRequest("tool_choice must be none, auto, required or a function", param="tool_choice")


def stop_list(body: Json) -> list[str] | None:
    """`stop` as a list of strings, or None."""
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    raise BadRequest("stop must be a string or a list of strings", param="stop")


def max_tokens_of(body: Json) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest("max_tokens must be a positive integer", param="max_tokens")
    return value


def append_turn(
    turns: list[Json],
    role: str,
    blocks: list[Json],
    *,
    assistant_role: str = "assistant",
    blocks_key: str = "content",
    is_tool_result: Callable[[Json], bool] | None = None,
) -> None:
    """Add a turn to a conversation for an API that wants user and assistant turns alternating
    (Anthropic, Converse, Gemini): a turn of the same role as the last one is merged into it.

    An empty assistant turn (no text, no tool calls) is left out: these APIs refuse it. With
    `is_tool_result`, a merged user turn that gains tool results keeps every tool result ahead
    of its other blocks, as Anthropic and Converse require.
    """
    if not blocks and role == assistant_role:
        return
    if turns and turns[-1]["role"] == role:
        previous: list[Json] = turns[-1][blocks_key]
        if is_tool_result is not None and role == "user" and blocks and is_tool_result(blocks[0]):
            results = [b for b in previous if is_tool_result(b)]
            others = [b for b in previous if not is_tool_result(b)]
            turns[-1][blocks_key] = results + blocks + others
        else:
            previous.extend(blocks)
        return
    turns.append({"role": role, blocks_key: blocks})


def messages_of(body: Json) -> list[Json]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", param="messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a role", param="messages")
    return messages


JSON_TOOL: Final = "crossway_json_response"
"""Name of the tool Crossway forces on providers without a JSON mode, to get `response_format`
JSON back; its call is turned back into the answer's text (and never shown as a tool call)."""
JSON_TOOL_DESCRIPTION: Final = "Give the answer as JSON."
"""The forced `JSON_TOOL`'s description, as the model sees it."""


def json_tool_schema(body: Json) -> Json | None:
    """The object schema a forced `JSON_TOOL` call should follow, when the request asks for JSON
    (`response_format` json_object / json_schema) and has no tools of its own; else None."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    if body.get("tools") or body.get("functions"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "object"}
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if isinstance(schema, dict) and schema.get("type") == "object":
        return schema
    return None


def json_instruction(response_format: Any) -> str | None:
    """A system-prompt instruction asking for JSON, for when no forced tool can be used."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "Respond with a single JSON object and nothing else."
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return (
            "Respond with a single JSON value and nothing else, matching this JSON schema: "
            + orjson.dumps(schema).decode()
        )
    return None


def passthrough_keys(body: Json, native: frozenset[str] = frozenset()) -> Json:
    """Keys of the request that are not OpenAI's, to forward to a provider that may take them."""
    return {k: v for k, v in body.items() if k not in OPENAI_ONLY_KEYS or k in native}


# --- embeddings -------------------------------------------------------------------------------


def embedding_inputs(request: Json) -> list[str]:
    """The texts of an OpenAI embeddings request (a string or a list of strings)."""
    value = request.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise BadRequest(
        "input must be a string or a non-empty list of strings for this provider "
        "(token arrays are OpenAI-only)",
        param="input",
    )


def embeddings_list(vectors: list[list[float]], request: Json, prompt_tokens: int) -> Json:
    """OpenAI's embeddings answer for `vectors`, base64-encoded when the client asked."""
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for i, vector in enumerate(vectors):
        value: Any = vector
        if as_base64:
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": str(request.get("model") or ""),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def estimate_tokens(texts: list[str]) -> int:
    """About one token per four characters, for providers that report no token counts."""
    return sum(max(1, len(t) // 4) for t in texts)
