"""A mock of Anthropic's Messages API (`POST /v1/messages`) that checks what the real one checks
(x-api-key, anthropic-version, max_tokens, roles alternating from user, tool_use / tool_result
pairing, non-empty text blocks) and answers in its exact wire format, SSE framing included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from tests.mocks.base import (
    MockServer,
    RecordedRequest,
    Reply,
    ToolCall,
    injected_fault,
    json_response,
    running,
    send_stream,
    split_text,
    sse_event,
)

API_KEY = "sk-ant-test-key"
VERSION = "2023-06-01"

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error(
    status: int, message: str, kind: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    kind = kind or ERROR_TYPES.get(status, "api_error")
    return json_response(
        status, {"type": "error", "error": {"type": kind, "message": message}}, headers
    )


def validate(body: Any, *, vertex: bool = False) -> str | None:
    """What the real API would reject in this body, as its error message; None if valid."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    if vertex:
        if body.get("anthropic_version") != "vertex-2023-10-16":
            return "anthropic_version: Field required"
        if "model" in body:
            return "model: Extra inputs are not permitted"
    elif not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Field required"
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list) or any(b.get("type") != "text" for b in system):
            return "system: Input should be a valid string or a list of text blocks"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    pending: set[str] = set()
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i == 0 and role != "user":
            return 'messages: first message must use the "user" role'
        if i > 0 and messages[i - 1].get("role") == role:
            return 'messages: roles must alternate between "user" and "assistant"'
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            return f"messages.{i}: all messages must have non-empty content"
        results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if pending and results != pending:
            return (
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(sorted(pending - results))}"
            )
        if results - pending:
            return f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks"
        pending = set()
        for j, block in enumerate(blocks):
            kind = block.get("type")
            if kind == "text" and not block.get("text"):
                return f"messages.{i}.content.{j}.text: text content blocks must be non-empty"
            if kind == "tool_use":
                if role != "assistant" or not isinstance(block.get("input"), dict):
                    return f"messages.{i}.content.{j}: invalid tool_use block"
                pending.add(block.get("id"))
            if kind == "image":
                source = block.get("source") or {}
                if source.get("type") not in ("base64", "url"):
                    return f"messages.{i}.content.{j}.image.source: invalid source type"
            if kind not in (
                "text",
                "image",
                "document",
                "tool_use",
                "tool_result",
                "thinking",
                "redacted_thinking",
            ):
                return f"messages.{i}.content.{j}.type: unknown content block type {kind!r}"
    for k, tool in enumerate(body.get("tools") or []):
        schema = tool.get("input_schema")
        if not tool.get("name") or not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{k}.input_schema: JSON schema of type object is required"
    choice = body.get("tool_choice")
    if choice is not None and choice.get("type") not in ("auto", "any", "tool", "none"):
        return "tool_choice: invalid type"
    return None


def checked_body(
    recorded: RecordedRequest, *, vertex: bool = False
) -> dict[str, Any] | web.Response:
    """The request's body, or the 400 the real API answers when it is not JSON or not valid."""
    try:
        body = orjson.loads(recorded.body)
    except orjson.JSONDecodeError:
        return error(400, "Request body is not valid JSON")
    problem = validate(body, vertex=vertex)
    if problem is not None:
        return error(400, problem)
    assert isinstance(body, dict)
    return body


def check_auth(recorded: RecordedRequest) -> web.Response | None:
    if recorded.headers.get("x-api-key") != API_KEY:
        return error(401, "invalid x-api-key")
    if recorded.headers.get("anthropic-version") is None:
        return error(400, "anthropic-version: header is required")
    return None


def _stop_reason(reply: Reply) -> str:
    return reply.stop or ("tool_use" if reply.tool_calls else "end_turn")


def _tool_use_id(call: ToolCall, n: int) -> str:
    return call.id or f"toolu_mock{n:02d}"


def _signature(thinking: str) -> str:
    return "sig-" + str(len(thinking))


def message(reply: Reply, model: str) -> dict[str, Any]:
    """The non-streamed `message` object for a reply."""
    content: list[dict[str, Any]] = []
    if reply.thinking is not None:
        content.append(
            {
                "type": "thinking",
                "thinking": reply.thinking,
                "signature": _signature(reply.thinking),
            }
        )
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for n, call in enumerate(reply.tool_calls):
        content.append(
            {
                "type": "tool_use",
                "id": _tool_use_id(call, n),
                "name": call.name,
                "input": call.arguments,
            }
        )
    return {
        "id": "msg_mock01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(reply),
        "stop_sequence": None,
        "usage": usage(reply),
    }


def usage(reply: Reply) -> dict[str, Any]:
    return {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": reply.cache_write_tokens,
        "cache_read_input_tokens": reply.cached_tokens,
        "output_tokens": reply.output_tokens,
    }


def _content_block(index: int, block: dict[str, Any], deltas: list[dict[str, Any]]) -> list[bytes]:
    """A content block's events: its start, one `content_block_delta` per delta, its stop."""
    return [
        sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        ),
        *(
            sse_event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
            for delta in deltas
        ),
        sse_event("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def stream_events(reply: Reply, model: str) -> list[bytes]:
    """The exact SSE events the real API sends for this reply."""
    start = message(reply, model)
    start["content"] = []
    start["stop_reason"] = None
    start["usage"] = {**usage(reply), "output_tokens": 1}
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if reply.thinking is not None:
        deltas = [
            {"type": "thinking_delta", "thinking": piece}
            for piece in split_text(reply.thinking, reply.pieces)
        ]
        deltas.append({"type": "signature_delta", "signature": _signature(reply.thinking)})
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
    if reply.text:
        deltas = [
            {"type": "text_delta", "text": piece} for piece in split_text(reply.text, reply.pieces)
        ]
        blocks.append(({"type": "text", "text": ""}, deltas))
    for n, call in enumerate(reply.tool_calls):
        block = {"type": "tool_use", "id": _tool_use_id(call, n), "name": call.name, "input": {}}
        arguments = orjson.dumps(call.arguments).decode()
        deltas = [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in split_text(arguments, reply.pieces)
        ]
        blocks.append((block, deltas))
    events = [
        sse_event("message_start", {"type": "message_start", "message": start}),
        sse_event("ping", {"type": "ping"}),
    ]
    for index, (block, deltas) in enumerate(blocks):
        events += _content_block(index, block, deltas)
    events.append(
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
                "usage": {"output_tokens": reply.output_tokens},
            },
        )
    )
    events.append(sse_event("message_stop", {"type": "message_stop"}))
    if reply.stream_error:
        overloaded = {"type": "overloaded_error", "message": "Overloaded"}
        events[3:] = [sse_event("error", {"type": "error", "error": overloaded})]
    return events


def _injected_error(reply: Reply) -> web.Response:
    return error(reply.status, reply.error_text, reply.error_type, reply.retry_headers)


async def answer(
    request: web.Request, reply: Reply, body: dict[str, Any], model: str
) -> web.StreamResponse:
    """Answer a validated request with `reply` (errors, faults, plain or streamed)."""
    faulted = await injected_fault(request, reply, _injected_error)
    if faulted is not None:
        return faulted
    if not body.get("stream"):
        return json_response(200, message(reply, model), {"request-id": "req_mock"})
    headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
    return await send_stream(request, reply, stream_events(reply, model), headers)


async def handle(
    server: MockServer, request: web.Request, recorded: RecordedRequest
) -> web.StreamResponse:
    if recorded.method != "POST" or recorded.path != "/v1/messages":
        return error(404, f"Not found: {recorded.method} {recorded.path}", "not_found_error")
    refused = check_auth(recorded)
    if refused is not None:
        return refused
    body = checked_body(recorded)
    if isinstance(body, web.Response):
        return body
    return await answer(request, server.next_reply(), body, body["model"])


@asynccontextmanager
async def start_anthropic_mock() -> AsyncIterator[MockServer]:
    """A running Anthropic mock; its `url` is the provider's `base_url`, its key `API_KEY`."""
    async with running(MockServer(handle)) as server:
        yield server
