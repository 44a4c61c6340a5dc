"""Google Gemini API (`generateContent` / `streamGenerateContent?alt=sse`) behind the canonical
OpenAI Chat shape. Vertex AI serves the same format (see `crossway.llm.providers.vertex`).

What is translated:
- system and developer messages -> `systemInstruction`; assistant -> role `model`; tool results
  -> `functionResponse` parts in a user turn; consecutive same-role turns are merged;
- images: data URLs -> `inlineData`, other URLs -> `fileData` (media type guessed from the
  extension); PDFs in `file` parts -> `inlineData`;
- tools -> `functionDeclarations` with the JSON schema rewritten into the subset Gemini takes
  (`crossway.llm.providers.gemini_schema`); `tool_choice` -> `functionCallingConfig` (none ->
  NONE, auto -> AUTO, required -> ANY, a function -> ANY with `allowedFunctionNames`);
- sampling keys -> `generationConfig` (`max_tokens` -> `maxOutputTokens`, `n` -> `candidateCount`,
  `stop`, `seed`, penalties, `response_format` -> `responseMimeType` / `responseSchema`,
  `reasoning_effort` -> `thinkingConfig`); Gemini's own keys (`safetySettings`,
  `cachedContent`, `generationConfig`, `labels`) pass as they are; other unknown keys are dropped
  (Gemini refuses unknown fields).

Gemini function calls have no ids: Crossway makes them up (`call_<random>`) and, on the way
back, finds each result's function name from the assistant turn that made the call. A call's
thought signature (Gemini 3 requires it back) rides in its id after a `~`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import orjson

from crossway.config.llm import DEFAULT_MAX_EVENT_BYTES, ProviderConfig
from crossway.errors import BadRequest, GatewayError, UpstreamError
from crossway.llm.providers.base import Json, Provider, StreamTranslator, UpstreamRequest
from crossway.llm.providers.common import (
    ChunkFactory,
    append_turn,
    assistant_message,
    body_excerpt,
    content_parts,
    embedding_inputs,
    embeddings_list,
    error_or_fallback,
    estimate_tokens,
    function_tools,
    guess_media_type,
    inline_file,
    inline_image,
    loads_object,
    max_tokens_of,
    messages_of,
    new_id,
    now,
    provider_headers,
    status_error,
    stop_list,
    text_of,
    tool_arguments,
    tool_call,
    tool_choice_of,
    unexpected_shape,
    usage_object,
)
from crossway.llm.providers.gemini_schema import sanitize_schema_cached
from crossway.proxy.sse import SSEParser

DEFAULT_GEMINI_BASE_URL: Final = "https://generativelanguage.googleapis.com/v1beta"

FINISH_REASONS: Final[dict[str, str]] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
}

# reasoning_effort -> thinking token budget.
THINKING_BUDGETS: Final[dict[str, int]] = {
    "none": 0,
    "minimal": 0,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
}

# Gemini request keys a client may send as they are (generationConfig is merged).
NATIVE_KEYS: Final = frozenset({"safetySettings", "cachedContent", "labels", "toolConfig"})

_SIGNATURE_SEPARATOR: Final = "~"


# --- request ----------------------------------------------------------------------------------


def translate_request(body: Json) -> Json:
    """A canonical chat body as a `GenerateContentRequest` (the model goes in the URL)."""
    system: list[Json] = []
    contents: list[Json] = []
    call_names: dict[str, str] = {}
    for i, msg in enumerate(messages_of(body)):
        role = msg["role"]
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            text = text_of(msg.get("content"))
            if text:
                system.append({"text": text})
        elif role == "user":
            parts = _user_parts(msg.get("content"), where)
            append_turn(contents, "user", parts, blocks_key="parts")
        elif role == "assistant":
            parts = _model_parts(msg, where, call_names)
            append_turn(contents, "model", parts, assistant_role="model", blocks_key="parts")
        elif role in ("tool", "function"):
            parts = [_function_response(msg, where, call_names)]
            append_turn(contents, "user", parts, blocks_key="parts")
        else:
            raise BadRequest(f"{where}.role {role!r} is not supported", param="messages")

    out: Json = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = function_tools(body)
    if tools:
        out["tools"] = [
            {"functionDeclarations": [_declaration(fn, i) for i, fn in enumerate(tools)]}
        ]
    choice = tool_choice_of(body)
    if choice is not None and (tools or choice[0] == "none"):
        mode, name = choice
        config: Json = {
            "mode": {"none": "NONE", "auto": "AUTO", "required": "ANY", "function": "ANY"}[mode]
        }
        if name:
            config["allowedFunctionNames"] = [name]
        out["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config(body)
    if generation:
        out["generationConfig"] = generation
    for key in NATIVE_KEYS:
        if key in body:
            out[key] = body[key]
    return out


def _generation_config(body: Json) -> Json:
    config: Json = {}
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("logprobs", "responseLogprobs"),
        ("top_logprobs", "logprobs"),
    ):
        if body.get(src) is not None:
            config[dst] = body[src]
    max_tokens = max_tokens_of(body)
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    n = body.get("n")
    if n is not None and n != 1:
        config["candidateCount"] = n
    stops = stop_list(body)
    if stops:
        config["stopSequences"] = stops
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            config["responseSchema"] = sanitize_schema_cached(
                spec["schema"], "response_format.json_schema.schema"
            )
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in THINKING_BUDGETS:
        budget = THINKING_BUDGETS[effort]
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    native = body.get("generationConfig")
    if isinstance(native, dict):
        config.update(native)
    return config


def _user_parts(content: Any, where: str) -> list[Json]:
    parts: list[Json] = []
    for j, part in enumerate(content_parts(content, where)):
        kind = part["type"]
        at = f"{where}.content[{j}]"
        if kind in ("text", "input_text"):
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            url, inline = inline_image(part, at)
            if inline is not None:
                parts.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
            else:
                parts.append({"fileData": {"mimeType": guess_media_type(url), "fileUri": url}})
        elif kind == "file":
            media_type, data = inline_file(part, at)
            parts.append({"inlineData": {"mimeType": media_type, "data": data}})
        else:
            raise BadRequest(f"{at}: content type {kind!r} is not supported by Gemini")
    return parts


def _model_parts(msg: Json, where: str, call_names: dict[str, str]) -> list[Json]:
    parts: list[Json] = []
    for part in content_parts(msg.get("content"), where):
        if part["type"] in ("text", "output_text") and part.get("text"):
            parts.append({"text": part["text"]})
    for k, call in enumerate(msg.get("tool_calls") or []):
        at = f"{where}.tool_calls[{k}]"
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise BadRequest(f"{at}.function is required", param="messages")
        name = call["function"].get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{at}.function.name is required", param="messages")
        call_id = str(call.get("id") or "")
        call_names[call_id] = name
        fc: Json = {"functionCall": {"name": name, "args": tool_arguments(call, at)}}
        _, sep, signature = call_id.partition(_SIGNATURE_SEPARATOR)
        if sep and signature:
            fc["thoughtSignature"] = signature
        parts.append(fc)
    return parts


def _function_response(msg: Json, where: str, call_names: dict[str, str]) -> Json:
    call_id = msg.get("tool_call_id")
    name = call_names.get(call_id) if isinstance(call_id, str) else None
    name = name or msg.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(
            f"{where}: no assistant tool call with id {call_id!r} precedes this tool result "
            "(Gemini needs the function name)",
            param="messages",
        )
    text = text_of(msg.get("content"))
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    response = (
        parsed if isinstance(parsed, dict) else {"result": parsed if parsed is not None else text}
    )
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(fn: Json, i: int) -> Json:
    decl: Json = {"name": fn["name"]}
    if fn.get("description"):
        decl["description"] = fn["description"]
    params = fn.get("parameters")
    if params:
        schema = sanitize_schema_cached(params, f"tools[{i}].function.parameters")
        if schema.get("properties") or schema.get("type") not in (None, "object"):
            decl["parameters"] = schema
    return decl


# --- response ---------------------------------------------------------------------------------


def gemini_usage(meta: Any) -> Json:
    """`usageMetadata` as canonical usage (thoughts count as completion tokens)."""
    if not isinstance(meta, dict):
        meta = {}
    prompt = (meta.get("promptTokenCount") or 0) + (meta.get("toolUsePromptTokenCount") or 0)
    thoughts = meta.get("thoughtsTokenCount") or 0
    completion_tokens = (meta.get("candidatesTokenCount") or 0) + thoughts
    return usage_object(
        prompt,
        completion_tokens,
        cached=meta.get("cachedContentTokenCount") or 0,
        reasoning=thoughts,
        total=meta.get("totalTokenCount") or prompt + completion_tokens,
    )


def _call_id(part: Json) -> str:
    call_id = str((part.get("functionCall") or {}).get("id") or "call_" + new_id(""))
    signature = part.get("thoughtSignature")
    return f"{call_id}{_SIGNATURE_SEPARATOR}{signature}" if signature else call_id


def _tool_call(part: Json) -> Json:
    fc = part["functionCall"]
    return tool_call(_call_id(part), fc.get("name", ""), fc.get("args"))


@unexpected_shape("answer")
def translate_response(data: Json, model: str) -> Json:
    """A `GenerateContentResponse` as a canonical `chat.completion` (one choice per candidate)."""
    choices: list[Json] = []
    for n, candidate in enumerate(data.get("candidates") or []):
        text: list[str] = []
        thoughts: list[str] = []
        calls: list[Json] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if "functionCall" in part:
                calls.append(_tool_call(part))
            elif "text" in part:
                (thoughts if part.get("thought") else text).append(part["text"])
        message = assistant_message(text, calls, thoughts)
        finish = FINISH_REASONS.get(candidate.get("finishReason") or "STOP", "stop")
        if calls and finish == "stop":
            finish = "tool_calls"
        choices.append(
            {
                "index": candidate.get("index", n),
                "message": message,
                "finish_reason": finish,
                "logprobs": None,
            }
        )
    if not choices:
        blocked = (data.get("promptFeedback") or {}).get("blockReason")
        message = {"role": "assistant", "content": "", "refusal": None}
        choices.append(
            {
                "index": 0,
                "message": message,
                "finish_reason": "content_filter" if blocked else "stop",
                "logprobs": None,
            }
        )
    return {
        "id": str(data.get("responseId") or new_id("chatcmpl-")),
        "object": "chat.completion",
        "created": now(),
        "model": str(data.get("modelVersion") or model),
        "choices": choices,
        "usage": gemini_usage(data.get("usageMetadata")),
    }


@error_or_fallback
def google_error(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """A Google API error (`{error: {code, message, status, details}}`) as a gateway error."""
    message = f"upstream answered HTTP {status}"
    keep = dict(headers)
    try:
        data = orjson.loads(body)
        if isinstance(data, list) and data:
            data = data[0]
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            delay = _retry_delay(err.get("details"))
            if delay is not None and not any(k.lower() == "retry-after" for k in keep):
                keep["retry-after"] = str(delay)
    except orjson.JSONDecodeError:
        if body:
            message = body_excerpt(body)
    return status_error(status, message, keep)


def _retry_delay(details: Any) -> int | None:
    """Seconds of a `google.rpc.RetryInfo` detail (`"retryDelay": "37s"`), rounded up."""
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith(
            "google.rpc.RetryInfo"
        ):
            delay = str(detail.get("retryDelay", ""))
            if delay.endswith("s"):
                try:
                    return max(1, math.ceil(float(delay[:-1])))
                except ValueError:
                    return None
    return None


# --- stream -----------------------------------------------------------------------------------


class GeminiStreamTranslator(StreamTranslator):
    """`alt=sse` events (each a whole `GenerateContentResponse`) -> canonical chunks."""

    def __init__(self, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._sse = SSEParser(max_event_bytes)
        self._chunks = ChunkFactory(new_id("chatcmpl-"), model)
        self._started: set[int] = set()
        self._tool_counts: dict[int, int] = {}
        self._finished: set[int] = set()
        self._usage: Any = None

    @unexpected_shape("stream event")
    def feed(self, data: bytes) -> list[Json]:
        out: list[Json] = []
        for _, payload in self._sse.feed(data):
            self._event(payload, out)
        return out

    @unexpected_shape("stream event")
    def close(self) -> list[Json]:
        out: list[Json] = []
        for _, payload in self._sse.close():
            self._event(payload, out)
        if not self._finished:
            raise UpstreamError("the upstream stream ended before a finishReason")
        if self._usage is not None:
            out.append(self._chunks.usage(gemini_usage(self._usage)))
        return out

    def _event(self, payload: bytes, out: list[Json]) -> None:
        event = loads_object(payload, "stream event")
        if "error" in event:
            err = (
                event["error"]
                if isinstance(event["error"], dict)
                else {"message": str(event["error"])}
            )
            code = err.get("code")
            raise status_error(
                code if isinstance(code, int) else 500, str(err.get("message") or "upstream error")
            )
        chunks = self._chunks
        if event.get("responseId") and not self._started:
            chunks.id = str(event["responseId"])
        if event.get("usageMetadata") is not None:
            self._usage = event["usageMetadata"]
        candidates = event.get("candidates") or []
        if not candidates and (event.get("promptFeedback") or {}).get("blockReason"):
            self._finished.add(0)
            out.append(chunks.delta({"role": "assistant", "content": ""}))
            out.append(chunks.delta({}, "content_filter"))
        for n, candidate in enumerate(candidates):
            index = candidate.get("index", n)
            if index not in self._started:
                self._started.add(index)
                out.append(chunks.delta({"role": "assistant", "content": ""}, index=index))
            for part in (candidate.get("content") or {}).get("parts") or []:
                if "functionCall" in part:
                    call = _tool_call(part)
                    call["index"] = self._tool_counts.get(index, 0)
                    self._tool_counts[index] = call["index"] + 1
                    out.append(chunks.delta({"tool_calls": [call]}, index=index))
                elif part.get("text"):
                    key = "reasoning_content" if part.get("thought") else "content"
                    out.append(chunks.delta({key: part["text"]}, index=index))
            reason = candidate.get("finishReason")
            if reason and index not in self._finished:
                self._finished.add(index)
                finish = FINISH_REASONS.get(reason, "stop")
                if finish == "stop" and self._tool_counts.get(index):
                    finish = "tool_calls"
                out.append(chunks.delta({}, finish, index=index))


# --- provider ---------------------------------------------------------------------------------


class GeminiProvider(Provider):
    """The Gemini API with an API key (`x-goog-api-key`)."""

    native_api = "gemini"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.base_url = (config.base_url or DEFAULT_GEMINI_BASE_URL).rstrip("/")
        base = {"content-type": "application/json"}
        self.headers = provider_headers(config, base, "x-goog-api-key")

    def model_url(self, model: str, stream: bool) -> str:
        model = model.removeprefix("models/")
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self.base_url}/models/{model}:{action}"

    async def auth_headers(self) -> dict[str, str]:
        """Headers that authorize one request (Vertex replaces the API key with a token)."""
        return self.headers

    async def chat_request(self, body: Json, model: str, stream: bool) -> UpstreamRequest:
        payload = orjson.dumps(translate_request(body))
        return UpstreamRequest(
            "POST", self.model_url(model, stream), dict(await self.auth_headers()), payload
        )

    def chat_response(self, body: bytes) -> Json:
        return translate_response(loads_object(body), "")

    def chat_stream(self, model: str) -> StreamTranslator:
        return GeminiStreamTranslator(model, self.max_event_bytes)

    async def embeddings_request(self, body: Json, model: str) -> UpstreamRequest:
        """`batchEmbedContents`, one request per input text (`dimensions` -> `outputDimensionality`)."""
        name = model.removeprefix("models/")
        requests = []
        for text in embedding_inputs(body):
            item: Json = {"model": f"models/{name}", "content": {"parts": [{"text": text}]}}
            if isinstance(body.get("dimensions"), int):
                item["outputDimensionality"] = body["dimensions"]
            requests.append(item)
        url = f"{self.base_url}/models/{name}:batchEmbedContents"
        payload = orjson.dumps({"requests": requests})
        return UpstreamRequest("POST", url, dict(await self.auth_headers()), payload)

    @unexpected_shape("embeddings answer")
    def embeddings_response(self, body: bytes, request: Json) -> Json:
        data = loads_object(body)
        vectors = [e["values"] for e in data["embeddings"]]
        return embeddings_list(vectors, request, estimate_tokens(embedding_inputs(request)))

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        return google_error(status, headers, body)
