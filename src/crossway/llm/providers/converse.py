"""The Bedrock Converse wire format: canonical chat requests to Converse bodies, Converse answers
and ConverseStream event-stream messages back, Bedrock exceptions to gateway errors.

What is translated:
- system and developer messages -> `system[{text}]`; consecutive same-role messages merged
  (Converse wants user / assistant alternating), so parallel tool results share a user turn;
- text, images (data URLs only: Bedrock takes image bytes, not links), PDFs and other documents
  in `file` parts, `toolUse` / `toolResult` blocks with the client's ids, reasoning blocks;
- `max_tokens` / `temperature` / `top_p` / `stop` -> `inferenceConfig`; tools ->
  `toolConfig.tools[].toolSpec` with `inputSchema.json`; `tool_choice` auto / required (`any`) /
  a function (`tool`); Converse has no "none": the tools are left out instead (unless the
  conversation already holds tool calls, which Bedrock only accepts with tools defined);
- keys OpenAI does not know go to `additionalModelRequestFields` (e.g. `top_k`, `thinking`);
  Converse's own top-level keys (`guardrailConfig`, `performanceConfig`, ...) pass as they are.

Streams are `application/vnd.amazon.eventstream` binary messages, decoded incrementally;
usage comes in the final `metadata` event; exception messages become gateway errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from crossway.config.llm import DEFAULT_MAX_EVENT_BYTES
from crossway.errors import BadRequest, GatewayError, UpstreamError
from crossway.llm.providers.base import Json, StreamTranslator
from crossway.llm.providers.common import (
    JSON_TOOL,
    JSON_TOOL_DESCRIPTION,
    ChunkFactory,
    append_turn,
    assistant_message,
    body_excerpt,
    check_base64,
    completion,
    content_parts,
    error_or_fallback,
    function_tools,
    header,
    image_url_of,
    inline_file,
    json_instruction,
    json_tool_schema,
    loads_object,
    max_tokens_of,
    messages_of,
    new_id,
    parse_data_url,
    passthrough_keys,
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
from crossway.llm.providers.eventstream import EventStreamDecoder

STOP_REASONS: Final[dict[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

# Exception names (in `x-amzn-ErrorType` or a stream's `:exception-type`) -> HTTP status.
EXCEPTION_STATUS: Final[dict[str, int]] = {
    "validationexception": 400,
    "accessdeniedexception": 403,
    "unrecognizedclientexception": 403,
    "invalidsignatureexception": 403,
    "resourcenotfoundexception": 404,
    "throttlingexception": 429,
    "servicequotaexceededexception": 429,
    "modelnotreadyexception": 429,
    "modeltimeoutexception": 408,
    "modelerrorexception": 424,
    "modelstreamerrorexception": 424,
    "internalserverexception": 500,
    "serviceunavailableexception": 503,
}

# Converse request keys a client may send as they are.
NATIVE_KEYS: Final = frozenset(
    {
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "guardrailConfig",
        "performanceConfig",
        "promptVariables",
        "requestMetadata",
    }
)

_IMAGE_FORMATS: Final = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DOCUMENT_FORMATS: Final = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
_DOC_NAME_BAD_CHARS: Final = re.compile(r"[^A-Za-z0-9\s\-()\[\]]+")


# --- request ----------------------------------------------------------------------------------


def translate_request(
    body: Json, default_max_tokens: int | None = None, *, forced_tool: bool = False
) -> Json:
    """A canonical chat body as a Converse body (the model goes in the URL).

    `forced_tool`: the model can be made to call a given tool (Claude can), so a JSON
    `response_format` is served by a forced `JSON_TOOL` call instead of an instruction.
    """
    system: list[Json] = []
    messages: list[Json] = []
    has_tool_blocks = False
    for i, msg in enumerate(messages_of(body)):
        role = msg["role"]
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            text = text_of(msg.get("content"))
            if text:
                system.append({"text": text})
        elif role == "user":
            blocks = _user_blocks(msg.get("content"), where)
            append_turn(messages, "user", blocks, is_tool_result=_is_tool_result)
        elif role == "assistant":
            blocks = _assistant_blocks(msg, where)
            has_tool_blocks = has_tool_blocks or any("toolUse" in b for b in blocks)
            append_turn(messages, "assistant", blocks)
        elif role in ("tool", "function"):
            has_tool_blocks = True
            blocks = [_tool_result(msg, where)]
            append_turn(messages, "user", blocks, is_tool_result=_is_tool_result)
        else:
            raise BadRequest(f"{where}.role {role!r} is not supported", param="messages")

    out: Json = {"messages": messages}
    json_schema = json_tool_schema(body) if forced_tool and not has_tool_blocks else None
    if json_schema is None:
        instruction = json_instruction(body.get("response_format"))
        if instruction:
            system.append({"text": instruction})
    if system:
        out["system"] = system
    inference: Json = {}
    max_tokens = max_tokens_of(body) or default_max_tokens
    if max_tokens is not None:
        inference["maxTokens"] = max_tokens
    for src, dst in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(src) is not None:
            inference[dst] = body[src]
    stops = stop_list(body)
    if stops:
        inference["stopSequences"] = stops
    if inference:
        out["inferenceConfig"] = inference
    if body.get("n") not in (None, 1):
        raise BadRequest("n > 1 is not supported by Bedrock Converse", param="n")

    tools = function_tools(body)
    choice = tool_choice_of(body)
    if tools and (choice is None or choice[0] != "none" or has_tool_blocks):
        config: Json = {"tools": [_tool_spec(fn) for fn in tools]}
        if choice is not None and choice[0] == "required":
            config["toolChoice"] = {"any": {}}
        elif choice is not None and choice[0] == "function":
            config["toolChoice"] = {"tool": {"name": choice[1]}}
        elif choice is not None and choice[0] == "auto":
            config["toolChoice"] = {"auto": {}}
        out["toolConfig"] = config

    if json_schema is not None:
        spec = {
            "name": JSON_TOOL,
            "description": JSON_TOOL_DESCRIPTION,
            "inputSchema": {"json": json_schema},
        }
        out["toolConfig"] = {
            "tools": [{"toolSpec": spec}],
            "toolChoice": {"tool": {"name": JSON_TOOL}},
        }

    extra = passthrough_keys(body, NATIVE_KEYS)
    additional: Json = dict(extra.pop("additionalModelRequestFields", None) or {})
    for key in list(extra):
        if key not in NATIVE_KEYS:
            additional[key] = extra.pop(key)
    out.update(extra)
    if additional:
        out["additionalModelRequestFields"] = additional
    return out


def _is_tool_result(block: Json) -> bool:
    return "toolResult" in block


def _user_blocks(content: Any, where: str) -> list[Json]:
    blocks: list[Json] = []
    for j, part in enumerate(content_parts(content, where)):
        kind = part["type"]
        at = f"{where}.content[{j}]"
        if kind in ("text", "input_text"):
            if part.get("text"):
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            url = image_url_of(part, at)
            parsed = parse_data_url(url, at)
            if parsed is None:
                raise BadRequest(
                    f"{at}: Bedrock takes images as data URLs only (data:image/png;base64,...)"
                )
            media_type, data = parsed
            fmt = _IMAGE_FORMATS.get(media_type)
            if fmt is None:
                raise BadRequest(f"{at}: image type {media_type} is not supported by Bedrock")
            blocks.append({"image": {"format": fmt, "source": {"bytes": check_base64(data, at)}}})
        elif kind == "file":
            blocks.append(_document(part, at, len(blocks)))
        else:
            raise BadRequest(f"{at}: content type {kind!r} is not supported by Bedrock")
    return blocks


def _document(part: Json, where: str, n: int) -> Json:
    media_type, data = inline_file(part, where)
    fmt = _DOCUMENT_FORMATS.get(media_type)
    if fmt is None:
        raise BadRequest(f"{where}: document type {media_type} is not supported by Bedrock")
    filename = part["file"].get("filename")  # inline_file made sure `file` is an object
    raw_name = str(filename or f"document {n + 1}").rsplit(".", 1)[0]
    name = _DOC_NAME_BAD_CHARS.sub(" ", raw_name).strip() or f"document {n + 1}"
    return {"document": {"format": fmt, "name": name, "source": {"bytes": data}}}


def _assistant_blocks(msg: Json, where: str) -> list[Json]:
    blocks: list[Json] = []
    for block in msg.get("thinking_blocks") or []:
        if isinstance(block, dict) and block.get("type") == "thinking":
            text: Json = {"text": block.get("thinking", "")}
            if block.get("signature"):
                text["signature"] = block["signature"]
            blocks.append({"reasoningContent": {"reasoningText": text}})
        elif isinstance(block, dict) and block.get("type") == "redacted_thinking":
            blocks.append({"reasoningContent": {"redactedContent": block.get("data", "")}})
    for part in content_parts(msg.get("content"), where):
        if part["type"] in ("text", "output_text") and part.get("text"):
            blocks.append({"text": part["text"]})
    for k, call in enumerate(msg.get("tool_calls") or []):
        call_id, name, arguments = tool_call_parts(call, f"{where}.tool_calls[{k}]")
        blocks.append({"toolUse": {"toolUseId": call_id, "name": name, "input": arguments}})
    return blocks


def _tool_result(msg: Json, where: str) -> Json:
    call_id = tool_result_id(msg, where)
    content = msg.get("content")
    if isinstance(content, list):
        result_blocks = _user_blocks(content, where)
    else:
        result_blocks = [{"text": text_of(content)}]
    return {"toolResult": {"toolUseId": call_id, "content": result_blocks}}


def _tool_spec(fn: Json) -> Json:
    spec: Json = {
        "name": fn["name"],
        "inputSchema": {"json": fn.get("parameters") or {"type": "object", "properties": {}}},
    }
    if fn.get("description"):
        spec["description"] = fn["description"]
    return {"toolSpec": spec}


# --- response ---------------------------------------------------------------------------------


def bedrock_usage(usage: Any) -> Json:
    """Converse usage as canonical usage (cache reads and writes count as prompt tokens)."""
    if not isinstance(usage, dict):
        usage = {}
    return usage_with_cache(
        usage.get("inputTokens") or 0,
        usage.get("cacheReadInputTokens") or 0,
        usage.get("cacheWriteInputTokens") or 0,
        usage.get("outputTokens") or 0,
    )


@unexpected_shape("answer")
def translate_response(data: Json, model: str) -> Json:
    """A Converse answer as a canonical `chat.completion`."""
    message = ((data.get("output") or {}).get("message")) or {}
    text: list[str] = []
    reasoning: list[str] = []
    thinking: list[Json] = []
    calls: list[Json] = []
    for block in message.get("content") or []:
        if "text" in block:
            text.append(block["text"])
        elif "toolUse" in block and block["toolUse"].get("name") == JSON_TOOL:
            text.append(orjson.dumps(block["toolUse"].get("input") or {}).decode())
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(tool_call(use.get("toolUseId", ""), use.get("name", ""), use.get("input")))
        elif "reasoningContent" in block:
            rc = block["reasoningContent"]
            if "reasoningText" in rc:
                rt = rc["reasoningText"]
                reasoning.append(rt.get("text", ""))
                thinking.append(
                    {
                        "type": "thinking",
                        "thinking": rt.get("text", ""),
                        "signature": rt.get("signature", ""),
                    }
                )
            elif "redactedContent" in rc:
                thinking.append({"type": "redacted_thinking", "data": rc["redactedContent"]})
    out_msg = assistant_message(text, calls, reasoning, thinking)
    finish = tool_use_finish(STOP_REASONS, data.get("stopReason"), bool(calls))
    out = completion(new_id("chatcmpl-"), model, out_msg, finish, bedrock_usage(data.get("usage")))
    if data.get("stopReason") == "stop_sequence":
        # Canonical extension (vLLM's name): the stop string, when the model reports it.
        out["choices"][0]["stop_reason"] = _stop_sequence(data)
    return out


def _stop_sequence(event: Json) -> str:
    """The stop sequence Claude models report in `additionalModelResponseFields` ("" if none)."""
    fields = event.get("additionalModelResponseFields")
    value = fields.get("stop_sequence") if isinstance(fields, dict) else None
    return value if isinstance(value, str) else ""


def exception_error(
    kind: str, message: str, status: int | None = None, headers: Mapping[str, str] | None = None
) -> GatewayError:
    """A Bedrock exception (by name) as a gateway error with the matching status."""
    name = kind.split(":", 1)[0].strip()
    code = EXCEPTION_STATUS.get(name.lower())
    return status_error(
        status or code or 500, message or name or "Bedrock error", headers, code=None
    )


@error_or_fallback
def bedrock_error(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """A Bedrock error answer (`{message}` with `x-amzn-ErrorType`) as a gateway error."""
    kind = header(headers, "x-amzn-errortype") or ""
    message = ""
    try:
        data = orjson.loads(body)
        if isinstance(data, dict):
            message = str(data.get("message") or data.get("Message") or "")
    except orjson.JSONDecodeError:
        message = body_excerpt(body)
    if not message:
        message = f"upstream answered HTTP {status}"
    if kind:
        message = f"{kind.split(':', 1)[0]}: {message}"
    return exception_error(kind, message, status, headers)


# --- stream -----------------------------------------------------------------------------------


class BedrockStreamTranslator(StreamTranslator):
    """ConverseStream event-stream messages -> canonical chunks."""

    def __init__(self, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._decoder = EventStreamDecoder(max_event_bytes)
        self.chunks = self._chunks = ChunkFactory(new_id("chatcmpl-"), model)
        self._tool_index: dict[int, int] = {}
        self._json_blocks: set[int] = set()
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
        for (headers, kind, event_type), payload in self._decoder.feed_raw(data):
            if kind == "event":
                event = loads_object(payload, "stream event")
                if event_type == "contentBlockDelta":  # the bulk of a stream: text
                    delta = event.get("delta")
                    if type(delta) is dict and type(delta.get("text")) is str:
                        out.append(delta["text"])
                        continue
                self._event(event_type, event, out)
            elif kind == "exception":
                text = ""
                try:
                    text = str(orjson.loads(payload).get("message", ""))
                except (orjson.JSONDecodeError, AttributeError):
                    text = body_excerpt(payload)
                raise exception_error(event_type, f"{event_type}: {text}")
            else:
                code = str(headers.get(":error-code", "InternalServerException"))
                raise exception_error(code, str(headers.get(":error-message", code)))
        return out

    def close(self) -> list[Json]:
        if self._decoder.pending or not self._stopped:
            raise UpstreamError("the upstream stream ended before messageStop")
        return []

    def _event(self, kind: str, event: Json, out: list[Json | str]) -> None:
        chunks = self._chunks
        if kind == "contentBlockDelta":
            delta = event.get("delta") or {}
            if "text" in delta:
                out.append(chunks.delta({"content": delta["text"]}))
            elif "toolUse" in delta:
                block_index = event.get("contentBlockIndex", 0)
                index = self._tool_index.get(block_index, 0)
                fragment = (delta["toolUse"] or {}).get("input", "")
                if fragment and block_index in self._json_blocks:
                    out.append(chunks.delta({"content": fragment}))
                elif fragment:
                    out.append(chunks.tool_call_arguments(index, fragment))
            elif "reasoningContent" in delta:
                rc = delta["reasoningContent"] or {}
                if "text" in rc:
                    out.append(chunks.delta({"reasoning_content": rc["text"]}))
                elif "signature" in rc:
                    out.append(chunks.thinking_signature(rc["signature"]))
                elif "redactedContent" in rc:
                    block = {"type": "redacted_thinking", "data": rc["redactedContent"]}
                    out.append(chunks.delta({"thinking_blocks": [block]}))
        elif kind == "contentBlockStart":
            use = (event.get("start") or {}).get("toolUse")
            if use and use.get("name") == JSON_TOOL:
                self._json_blocks.add(event.get("contentBlockIndex", 0))
            elif use:
                index = len(self._tool_index)
                self._tool_index[event.get("contentBlockIndex", 0)] = index
                out.append(
                    chunks.tool_call_start(index, use.get("toolUseId", ""), use.get("name", ""))
                )
        elif kind == "messageStart":
            out.append(chunks.delta({"role": "assistant", "content": ""}))
        elif kind == "messageStop":
            self._stopped = True
            finish = tool_use_finish(STOP_REASONS, event.get("stopReason"), bool(self._tool_index))
            chunk = chunks.delta({}, finish)
            if event.get("stopReason") == "stop_sequence":
                chunk["choices"][0]["stop_reason"] = _stop_sequence(event)
            out.append(chunk)
        elif kind == "metadata":
            out.append(chunks.usage(bedrock_usage(event.get("usage"))))
