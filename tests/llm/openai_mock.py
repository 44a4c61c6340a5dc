"""A scriptable mock of OpenAI's API (chat completions, responses, embeddings, models) for routing and fault
tests. It checks what the real API checks that matters here (bearer key, model, messages and
their roles, tool messages answering a tool call, `stream_options` only with `stream`) and
answers in OpenAI's wire format: `chat.completion`, SSE `chat.completion.chunk` events with
`usage: null` on every chunk and a final usage chunk when `include_usage` is set, `[DONE]`.

Faults and replies come from `tests.mocks.base.Reply` (status + Retry-After, reset, delay,
cut_after, stream_error), so the same script vocabulary drives every mock provider.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
from aiohttp import web

from tests.mocks.base import (
    MockServer,
    RecordedRequest,
    Reply,
    injected_fault,
    json_response,
    send_stream,
    split_text,
    sse_data,
    sse_event,
)

API_KEY = "sk-openai-mock"
_SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8"}
ROLES = {"system", "developer", "user", "assistant", "tool"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}


def error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    kind = ERROR_TYPES.get(status, "server_error")
    return json_response(
        status,
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        headers,
    )


def validate_chat(body: Any) -> tuple[str, str | None] | None:
    """(message, param) the real API would reject this body with; None if valid."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "[] is too short - 'messages'", "messages"
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"Invalid value for 'messages[{i}].role'.", f"messages[{i}].role"
        if message["role"] == "assistant":
            open_calls = {c.get("id") for c in message.get("tool_calls") or []}
        elif message["role"] == "tool":
            if message.get("tool_call_id") not in open_calls:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
    if body.get("stream_options") is not None and not body.get("stream"):
        return (
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    return None


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _call_id(reply: Reply, i: int) -> str:
    call = reply.tool_calls[i]
    return call.id or f"call_{i}_{hashlib.sha1(call.name.encode()).hexdigest()[:8]}"


def _finish(reply: Reply) -> str:
    return reply.stop or ("tool_calls" if reply.tool_calls else "stop")


def completion(reply: Reply, model: str, n: int) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text or None,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": _call_id(reply, i),
                "type": "function",
                "function": {"name": c.name, "arguments": orjson.dumps(c.arguments).decode()},
            }
            for i, c in enumerate(reply.tool_calls)
        ]
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": message, "logprobs": None, "finish_reason": _finish(reply)}
            for i in range(n)
        ],
        "usage": _usage(reply),
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }


def stream_events(reply: Reply, model: str, include_usage: bool) -> list[bytes]:
    created = int(time.time())

    def event(delta: dict[str, Any] | None, finish: str | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
            "choices": [
                {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
            ],
        }
        if include_usage:
            data["usage"] = None
        return sse_data(data)

    events = [event({"role": "assistant", "content": "", "refusal": None})]
    for piece in split_text(reply.text, reply.pieces):
        events.append(event({"content": piece}))
    if reply.stream_error:
        err = {"error": {"message": "The server had an error", "type": "server_error"}}
        return [*events[:2], sse_data(err)]
    for i, call in enumerate(reply.tool_calls):
        head = {
            "index": i,
            "id": _call_id(reply, i),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        events.append(event({"tool_calls": [head]}))
        for piece in split_text(orjson.dumps(call.arguments).decode(), reply.pieces):
            events.append(event({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    events.append(event({}, _finish(reply)))
    if include_usage:
        final = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
            "choices": [],
            "usage": _usage(reply),
        }
        events.append(sse_data(final))
    events.append(b"data: [DONE]\n\n")
    return events


def _injected_error(reply: Reply) -> web.Response:
    return error(reply.status, reply.error_text, code=reply.error_type, headers=reply.retry_headers)


async def chat(server: MockServer, request: web.Request, body: Any) -> web.StreamResponse:
    problem = validate_chat(body)
    if problem is not None:
        return error(400, problem[0], param=problem[1])
    reply = server.next_reply()
    faulted = await injected_fault(request, reply, _injected_error)
    if faulted is not None:
        return faulted
    model = body["model"]
    if not body.get("stream"):
        return json_response(200, completion(reply, model, int(body.get("n") or 1)))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = stream_events(reply, model, include_usage)
    return await send_stream(request, reply, events, _SSE_HEADERS)


async def embeddings(server: MockServer, request: web.Request, body: Any) -> web.StreamResponse:
    inputs = body.get("input") if isinstance(body, dict) else None
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        return error(400, "'input' is a required property", param="input")
    reply = server.next_reply()
    faulted = await injected_fault(request, reply, _injected_error)
    if faulted is not None:
        return faulted
    data = []
    for i, item in enumerate(inputs):
        digest = hashlib.sha256(str(item).encode()).digest()
        data.append({"object": "embedding", "index": i, "embedding": [b / 255 for b in digest[:4]]})
    tokens = reply.input_tokens * len(inputs)
    return json_response(
        200,
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


def _response_object(reply: Reply, model: str, status: str, output: list[Any]) -> dict[str, Any]:
    return {
        "id": "resp_mock",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "store": True,
        "usage": None
        if status != "completed"
        else {
            "input_tokens": reply.input_tokens,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": reply.input_tokens + reply.output_tokens,
        },
    }


def _output_items(reply: Reply) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if reply.text:
        items.append(
            {
                "type": "message",
                "id": "msg_mock",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        )
    for i, call in enumerate(reply.tool_calls):
        items.append(
            {
                "type": "function_call",
                "id": f"fc_mock_{i}",
                "call_id": _call_id(reply, i),
                "name": call.name,
                "arguments": orjson.dumps(call.arguments).decode(),
                "status": "completed",
            }
        )
    return items


def response_events(reply: Reply, model: str) -> list[bytes]:
    """The Responses API's typed SSE events for this reply, as OpenAI sends them."""
    seq = 0
    out: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        nonlocal seq
        data = {"type": kind, "sequence_number": seq, **fields}
        seq += 1
        out.append(sse_event(kind, data))

    event("response.created", response=_response_object(reply, model, "in_progress", []))
    event("response.in_progress", response=_response_object(reply, model, "in_progress", []))
    items = _output_items(reply)
    for index, item in enumerate(items):
        if item["type"] == "message":
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "content": [], "status": "in_progress"},
            )
            part = {"type": "output_text", "text": "", "annotations": []}
            event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
            for piece in split_text(reply.text, reply.pieces):
                event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=reply.text,
                logprobs=[],
            )
            event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=item["content"][0],
            )
        else:
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for piece in split_text(item["arguments"], reply.pieces):
                event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        event("response.output_item.done", output_index=index, item=item)
    event("response.completed", response=_response_object(reply, model, "completed", items))
    return out


async def responses(server: MockServer, request: web.Request, body: Any) -> web.StreamResponse:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return error(400, "Missing required parameter: 'model'.", param="model")
    if "input" not in body:
        return error(400, "Missing required parameter: 'input'.", param="input")
    reply = server.next_reply()
    faulted = await injected_fault(request, reply, _injected_error)
    if faulted is not None:
        return faulted
    model = body["model"]
    if not body.get("stream"):
        return json_response(200, _response_object(reply, model, "completed", _output_items(reply)))
    return await send_stream(request, reply, response_events(reply, model), _SSE_HEADERS)


async def handle(
    server: MockServer, request: web.Request, recorded: RecordedRequest
) -> web.StreamResponse:
    if recorded.headers.get("authorization") != f"Bearer {API_KEY}":
        return error(401, "Incorrect API key provided.", code="invalid_api_key")
    path = recorded.path
    if recorded.method == "GET" and path == "/v1/models":
        data = [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]
        return json_response(200, {"object": "list", "data": data})
    if recorded.method != "POST":
        return error(404, f"Unknown request URL: {recorded.method} {path}.", code="unknown_url")
    try:
        body = orjson.loads(recorded.body)
    except orjson.JSONDecodeError:
        return error(400, "We could not parse the JSON body of your request.")
    if path == "/v1/chat/completions":
        return await chat(server, request, body)
    if path == "/v1/embeddings":
        return await embeddings(server, request, body)
    if path == "/v1/responses":
        return await responses(server, request, body)
    return error(404, f"Unknown request URL: POST {path}.", code="unknown_url")


def openai_mock() -> MockServer:
    """A (not yet started) OpenAI mock; its base URL for a provider is `url + "/v1"`."""
    return MockServer(handle)
