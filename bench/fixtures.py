"""Fixed upstream answers and request bodies for the benchmark, written to files nginx serves.

Every provider answers the same short completion (the same tokens, the same usage) in its own
wire format, so passthrough and translation rows compare like with like:

- OpenAI Chat Completions: a JSON body and an SSE stream of `chat.completion.chunk`s ending in
  `data: [DONE]`;
- Anthropic Messages: a JSON body and its named SSE events;
- Bedrock Converse / ConverseStream: a JSON body and binary event-stream frames.

The request a client sends is an OpenAI Chat Completions body of about 1 KB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import orjson

from bench.eventstream import encode_event

MODEL: Final = "gpt-4o-mini"
"""Model name the benchmark client asks for."""

TOKENS: Final = (
    "Hello",
    "!",
    " Crossway",
    " is",
    " a",
    " gateway",
    " for",
    " agents",
    ":",
    " one",
    " place",
    " for",
    " keys",
    ",",
    " policies",
    " and",
    " traces",
    ".",
)
"""The completion's text, one streamed delta per token."""

FIRST_TOKEN_MARKER: Final = b"Hello"
"""Bytes that mark the first content token in any client-side stream."""

PROMPT_TOKENS: Final = 212
COMPLETION_TOKENS: Final = len(TOKENS)
REQUEST_BODY_SIZE: Final = 1024
CREATED: Final = 1_735_689_600
COMPLETION_ID: Final = "chatcmpl-bench0000000000000000000001"


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def request_body(*, stream: bool, model: str = MODEL) -> bytes:
    """An OpenAI Chat Completions request padded to exactly `REQUEST_BODY_SIZE` bytes."""

    def build(padding: str) -> bytes:
        body: dict[str, Any] = {
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "Describe Crossway in one sentence. " + padding},
            ],
            "max_tokens": 64,
            "temperature": 0,
        }
        if stream:
            body["stream"] = True
        return _json(body)

    short = len(build(""))
    filler = ("lorem ipsum dolor sit amet " * 64)[: max(0, REQUEST_BODY_SIZE - short)]
    return build(filler)


def openai_completion() -> bytes:
    """A non-streaming OpenAI chat completion."""
    return _json(
        {
            "id": COMPLETION_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(TOKENS), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
        }
    )


def _openai_chunk(delta: dict[str, Any], finish: str | None, usage: Any = None) -> bytes:
    chunk = {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": []
        if usage
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return b"data: " + _json(chunk) + b"\n\n"


def openai_stream() -> bytes:
    """An OpenAI chat completion stream: role chunk, one chunk per token, finish, usage, [DONE]."""
    out = [_openai_chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    out += [_openai_chunk({"content": token}, None) for token in TOKENS]
    out.append(_openai_chunk({}, "stop"))
    out.append(
        _openai_chunk(
            {},
            None,
            usage={
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        )
    )
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


ANTHROPIC_MODEL: Final = "claude-sonnet-4-5"
ANTHROPIC_ID: Final = "msg_bench000000000000000001"


def anthropic_message() -> bytes:
    """A non-streaming Anthropic Messages response."""
    return _json(
        {
            "id": ANTHROPIC_ID,
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [{"type": "text", "text": "".join(TOKENS)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": PROMPT_TOKENS,
                "output_tokens": COMPLETION_TOKENS,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _json(data) + b"\n\n"


def anthropic_stream() -> bytes:
    """An Anthropic Messages SSE stream with the same tokens and usage."""
    out = [
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": ANTHROPIC_ID,
                    "type": "message",
                    "role": "assistant",
                    "model": ANTHROPIC_MODEL,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": PROMPT_TOKENS,
                        "output_tokens": 1,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                },
            },
        ),
        _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _sse("ping", {"type": "ping"}),
    ]
    out += [
        _sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": token},
            },
        )
        for token in TOKENS
    ]
    out += [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": COMPLETION_TOKENS},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(out)


# Bedrock pads each streamed event with a random-length "p" field; a fixed one stands in here.
_BEDROCK_PAD: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"


def bedrock_converse() -> bytes:
    """A non-streaming Bedrock Converse response."""
    return _json(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "".join(TOKENS)}]}},
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": PROMPT_TOKENS,
                "outputTokens": COMPLETION_TOKENS,
                "totalTokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
            "metrics": {"latencyMs": 321},
        }
    )


def bedrock_stream() -> bytes:
    """A Bedrock ConverseStream answer as binary event-stream frames."""
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    events += [
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": token}})
        for token in TOKENS
    ]
    events += [
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "end_turn"}),
        (
            "metadata",
            {
                "usage": {
                    "inputTokens": PROMPT_TOKENS,
                    "outputTokens": COMPLETION_TOKENS,
                    "totalTokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
                "metrics": {"latencyMs": 321},
            },
        ),
    ]
    return b"".join(
        encode_event(name, _json({**payload, "p": _BEDROCK_PAD[: 8 + i % 20]}))
        for i, (name, payload) in enumerate(events)
    )


UPSTREAM_FILES: Final = {
    "openai-chat.json": openai_completion,
    "openai-chat.sse": openai_stream,
    "anthropic-messages.json": anthropic_message,
    "anthropic-messages.sse": anthropic_stream,
    "bedrock-converse.json": bedrock_converse,
    "bedrock-converse-stream.bin": bedrock_stream,
}
"""File name (served by nginx) -> the function that builds its bytes."""


def write_fixtures(directory: Path) -> dict[str, Path]:
    """Write every upstream answer and both request bodies under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, build in UPSTREAM_FILES.items():
        path = directory / name
        path.write_bytes(build())
        paths[name] = path
    for name, stream in (("request.json", False), ("request-stream.json", True)):
        path = directory / name
        path.write_bytes(request_body(stream=stream))
        paths[name] = path
    return paths
