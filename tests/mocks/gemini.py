"""A mock of the Gemini API (`models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`) that checks what Google checks: the API key, known fields only
(`Invalid JSON payload received. Unknown name ...`), the OpenAPI schema subset of function
declarations, non-empty parts, and function responses matching the previous turn's calls. It
answers in the documented format: `{error: {code, message, status}}` errors, `data:` lines each
holding a whole `GenerateContentResponse` ending in CRLF CRLF, usage in every chunk.

The same handlers serve Vertex AI's Gemini routes (see `tests.mocks.vertex`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from tests.mocks.base import (
    MockServer,
    RecordedRequest,
    Reply,
    injected_fault,
    json_response,
    running,
    send_stream,
    split_text,
    sse_data,
)

API_KEY = "gemini-mock-key"

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
TOP_LEVEL = {
    "contents",
    "tools",
    "toolConfig",
    "safetySettings",
    "systemInstruction",
    "generationConfig",
    "cachedContent",
    "labels",
}
GENERATION_KEYS = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "candidateCount",
    "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty", "frequencyPenalty",
    "responseLogprobs", "logprobs", "thinkingConfig", "responseModalities", "mediaResolution",
}  # fmt: skip
SCHEMA_KEYS = {
    "type", "format", "title", "description", "nullable", "enum", "items", "minItems", "maxItems",
    "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern",
    "minimum", "maximum", "anyOf", "propertyOrdering", "default", "example",
}  # fmt: skip
PART_DATA = {
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
}
_PATH = re.compile(
    r"^/v1beta/models/(?P<model>[^/:]+):(?P<action>generateContent|streamGenerateContent|batchEmbedContents)$"
)


def error(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    details: list[Any] | None = None,
) -> web.Response:
    err: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        err["details"] = details
    return json_response(status, {"error": err}, headers)


def _schema_problem(schema: Any, where: str) -> str | None:
    if not isinstance(schema, dict):
        return f"{where}: Proto field is not repeating, cannot start list."
    for key in schema:
        if key not in SCHEMA_KEYS:
            return f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."
    kind = str(schema.get("type", "")).upper()
    if kind == "OBJECT" and "properties" in schema and not schema["properties"]:
        return f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type"
    if "enum" in schema and kind != "STRING":
        return f"* GenerateContentRequest.{where}.enum: only allowed for STRING type"
    for name, sub in (schema.get("properties") or {}).items():
        problem = _schema_problem(sub, f"{where}.properties[{name}]")
        if problem:
            return problem
    if "items" in schema:
        return _schema_problem(schema["items"], f"{where}.items")
    for k, sub in enumerate(schema.get("anyOf") or []):
        problem = _schema_problem(sub, f"{where}.any_of[{k}]")
        if problem:
            return problem
    return None


def validate(body: Any) -> str | None:
    """What the Gemini API would reject, as its error message; None if valid."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    for key in body:
        if key not in TOP_LEVEL:
            return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    for key in body.get("generationConfig") or {}:
        if key not in GENERATION_KEYS:
            return f"Invalid JSON payload received. Unknown name \"{key}\" at 'generation_config': Cannot find field."
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    previous_calls = 0
    previous_role = None
    for i, content in enumerate(contents):
        role = content.get("role")
        if role not in ("user", "model", "function", None):
            return f"Please use a valid role: user, model. (contents[{i}].role = {role!r})"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return (
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            )
        calls = responses = 0
        for j, part in enumerate(parts):
            data = [k for k in part if k in PART_DATA]
            extra = [
                k for k in part if k not in PART_DATA and k not in ("thought", "thoughtSignature")
            ]
            if len(data) != 1 or extra:
                return f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof field 'data' must have one initialized field"
            calls += "functionCall" in part
            if "functionResponse" in part:
                responses += 1
                if not isinstance(part["functionResponse"].get("response"), dict):
                    return f"contents[{i}].parts[{j}].function_response.response: Starting an object on a scalar field"
        if calls and previous_role == "model":
            return "Please ensure that function call turn comes immediately after a user turn or after a function response turn."
        if responses and responses != previous_calls:
            return "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn."
        previous_calls = calls
        previous_role = role
    for t, tool in enumerate(body.get("tools") or []):
        for d, decl in enumerate(tool.get("functionDeclarations") or []):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-:]{0,63}", str(decl.get("name", ""))):
                return f"* GenerateContentRequest.tools[{t}].function_declarations[{d}].name: Invalid function name."
            if "parameters" in decl:
                problem = _schema_problem(
                    decl["parameters"], f"tools[{t}].function_declarations[{d}].parameters"
                )
                if problem:
                    return problem
    return None


def usage(reply: Reply, final: bool = True) -> dict[str, Any]:
    prompt = reply.input_tokens + reply.cached_tokens
    out: dict[str, Any] = {"promptTokenCount": prompt}
    if final:
        out["candidatesTokenCount"] = reply.output_tokens
        if reply.reasoning_tokens:
            out["thoughtsTokenCount"] = reply.reasoning_tokens
    out["totalTokenCount"] = prompt + (reply.output_tokens + reply.reasoning_tokens if final else 0)
    if reply.cached_tokens:
        out["cachedContentTokenCount"] = reply.cached_tokens
    out["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return out


def _finish(reply: Reply) -> str:
    return reply.stop or "STOP"


def response(reply: Reply, model: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if reply.thinking is not None:
        parts.append({"text": reply.thinking, "thought": True})
    if reply.text:
        parts.append({"text": reply.text})
    for n, call in enumerate(reply.tool_calls):
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.arguments}}
        if n == 0 and reply.thinking is not None:
            part["thoughtSignature"] = "c2lnbmF0dXJl"
        parts.append(part)
    return {
        "candidates": [
            {
                "content": {"parts": parts, "role": "model"},
                "finishReason": _finish(reply),
                "index": 0,
            }
        ],
        "usageMetadata": usage(reply),
        "modelVersion": model,
        "responseId": "mock-response-id",
    }


def stream_events(reply: Reply, model: str) -> list[bytes]:
    events: list[dict[str, Any]] = []

    def chunk(parts: list[dict[str, Any]]) -> None:
        events.append(
            {
                "candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0}],
                "usageMetadata": usage(reply, final=False),
                "modelVersion": model,
                "responseId": "mock-response-id",
            }
        )

    if reply.thinking is not None:
        for piece in split_text(reply.thinking, reply.pieces):
            chunk([{"text": piece, "thought": True}])
    for piece in split_text(reply.text, reply.pieces):
        chunk([{"text": piece}])
    if reply.tool_calls:
        calls: list[dict[str, Any]] = [
            {"functionCall": {"name": c.name, "args": c.arguments}} for c in reply.tool_calls
        ]
        if reply.thinking is not None:
            calls[0]["thoughtSignature"] = "c2lnbmF0dXJl"
        chunk(calls)
    if not events:
        chunk([{"text": ""}])
    last = events[-1]
    last["candidates"][0]["finishReason"] = _finish(reply)
    last["usageMetadata"] = usage(reply)
    frames = [sse_data(e, line_end=b"\r\n") for e in events]
    if reply.stream_error:
        overloaded = {
            "code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE",
        }
        frames[1:] = [sse_data({"error": overloaded}, line_end=b"\r\n")]
    return frames


def _injected_error(reply: Reply) -> web.Response:
    details = None
    if reply.status == 429:
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]
    return error(reply.status, reply.error_text, reply.retry_headers, details)


async def answer(
    request: web.Request, reply: Reply, model: str, stream: bool
) -> web.StreamResponse:
    faulted = await injected_fault(request, reply, _injected_error)
    if faulted is not None:
        return faulted
    if not stream:
        return json_response(200, response(reply, model))
    headers = {"content-type": "text/event-stream"}
    return await send_stream(request, reply, stream_events(reply, model), headers)


async def serve_generate(
    server: MockServer, request: web.Request, recorded: RecordedRequest, model: str, action: str
) -> web.StreamResponse:
    """Validate and answer a generateContent / streamGenerateContent call (auth already checked)."""
    stream = action == "streamGenerateContent"
    if stream and recorded.query.get("alt") != "sse":
        return error(400, "This mock only streams with alt=sse")
    try:
        body = orjson.loads(recorded.body)
    except orjson.JSONDecodeError:
        return error(400, "Invalid JSON payload received.")
    problem = validate(body)
    if problem is not None:
        return error(400, problem)
    return await answer(request, server.next_reply(), model, stream)


async def handle(
    server: MockServer, request: web.Request, recorded: RecordedRequest
) -> web.StreamResponse:
    m = _PATH.match(recorded.path)
    if recorded.method != "POST" or m is None:
        return error(404, f"Method not found: {recorded.path}")
    key = recorded.headers.get("x-goog-api-key") or recorded.query.get("key")
    if key is None:
        return error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        )
    if key != API_KEY:
        return error(400, "API key not valid. Please pass a valid API key.")
    if m["action"] == "batchEmbedContents":
        return await embed(server, request, recorded, m["model"])
    return await serve_generate(server, request, recorded, m["model"], m["action"])


def vector(text: str, size: int) -> list[float]:
    """A deterministic fake embedding of `text`."""
    seed = sum(text.encode()) or 1
    return [((seed * (i + 7)) % 101) / 100.0 for i in range(size)]


async def embed(
    server: MockServer, request: web.Request, recorded: RecordedRequest, model: str
) -> web.StreamResponse:
    try:
        body = orjson.loads(recorded.body)
    except orjson.JSONDecodeError:
        return error(400, "Invalid JSON payload received.")
    requests = body.get("requests") if isinstance(body, dict) else None
    if set(body) - {"requests"} or not isinstance(requests, list) or not requests:
        return error(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
    out = []
    for k, item in enumerate(requests):
        if item.get("model") != f"models/{model}":
            return error(
                400,
                f"* BatchEmbedContentsRequest.requests[{k}].model: model must match the URL's model",
            )
        parts = (item.get("content") or {}).get("parts") or []
        if not parts or set(item) - {
            "model",
            "content",
            "taskType",
            "title",
            "outputDimensionality",
        }:
            return error(400, f"* BatchEmbedContentsRequest.requests[{k}]: invalid request")
        out.append(
            {"values": vector(parts[0].get("text", ""), item.get("outputDimensionality") or 8)}
        )
    faulted = await injected_fault(
        request, server.next_reply(), lambda reply: error(reply.status, reply.error_text)
    )
    if faulted is not None:
        return faulted
    return json_response(200, {"embeddings": out})


@asynccontextmanager
async def start_gemini_mock() -> AsyncIterator[MockServer]:
    """A running Gemini mock; its provider `base_url` is `url + "/v1beta"`."""
    async with running(MockServer(handle)) as server:
        yield server
