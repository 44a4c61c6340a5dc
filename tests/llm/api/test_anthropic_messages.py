"""Anthropic Messages <-> canonical chat translation, with pure inputs."""

from __future__ import annotations

import orjson
import pytest

from crossway.errors import BadRequest, UpstreamError
from crossway.llm.api.anthropic_messages import (
    MessagesStreamWriter,
    chat_to_message,
    messages_to_chat,
)
from tests.llm.sse import parse_sse


def test_request_with_system_tools_images_and_tool_results() -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_k": 5,
        "metadata": {"user_id": "u1"},
        "tools": [
            {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stream": True,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "rain"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
    }
    chat = messages_to_chat(body)
    assert chat["model"] == "claude-x"
    assert chat["max_completion_tokens"] == 64
    assert chat["stop"] == ["END"]
    assert chat["user"] == "u1"
    assert "top_k" not in chat
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object"},
                "description": "Weather",
            },
        }
    ]
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "user"]
    assert chat["messages"][0]["content"] == "Be brief.\nBe kind."
    assert chat["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAA"},
    }
    assistant = chat["messages"][2]
    assert assistant["content"] == "Checking."
    assert [c["id"] for c in assistant["tool_calls"]] == ["toolu_1", "toolu_2"]
    assert orjson.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
    assert chat["messages"][4]["content"] == "Error: rain"
    assert chat["messages"][5] == {"role": "user", "content": "Thanks"}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "hi"}]},
            "messages.0.role",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "video"}]}],
            },
            "messages.0.content.0",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "server tool",
        ),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_requests_say_what_is_wrong(body: object, needle: str) -> None:
    with pytest.raises(BadRequest) as info:
        messages_to_chat(body)
    assert needle in info.value.message


def test_response_with_reasoning_text_and_tool_calls() -> None:
    resp = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "reasoning_content": "think",
                    "content": "Let me look.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 40},
        },
    }
    msg = chat_to_message(resp, "claude-x")
    assert msg["type"] == "message" and msg["model"] == "claude-x" and msg["id"].startswith("msg_")
    assert [b["type"] for b in msg["content"]] == ["thinking", "text", "tool_use"]
    assert msg["content"][2] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {
        "input_tokens": 60,
        "output_tokens": 20,
        "cache_read_input_tokens": 40,
        "cache_creation_input_tokens": 0,
    }


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = (
        []
        if delta is None and finish is None
        else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    )
    return {"object": "chat.completion.chunk", "choices": choices, "usage": usage}


def test_stream_text_then_parallel_tool_calls() -> None:
    writer = MessagesStreamWriter("claude-x")
    out = b"".join(
        [
            writer.feed(chunk({"role": "assistant", "content": ""})),
            writer.feed(chunk({"content": "Hel"})),
            writer.feed(chunk({"content": "lo"})),
            writer.feed(
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}
                        ]
                    }
                )
            ),
            writer.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]})),
            writer.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})),
            writer.feed(
                chunk(
                    {
                        "tool_calls": [
                            {"index": 1, "id": "c2", "function": {"name": "g", "arguments": "{}"}}
                        ]
                    }
                )
            ),
            writer.feed(chunk({}, "tool_calls")),
            writer.feed(chunk(usage={"prompt_tokens": 7, "completion_tokens": 3})),
            writer.finish(),
        ]
    )
    events = parse_sse(out)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert events[6][1]["content_block"] == {
        "type": "tool_use",
        "id": "c1",
        "name": "f",
        "input": {},
    }
    assert events[6][1]["index"] == 1
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["index"] == 1
    )
    assert orjson.loads(partial) == {"a": 1}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert (
        events[-2][1]["usage"]["input_tokens"] == 7 and events[-2][1]["usage"]["output_tokens"] == 3
    )


def test_stream_that_never_finished_ends_with_error_event() -> None:
    writer = MessagesStreamWriter("m")
    out = writer.feed(chunk({"content": "partial"})) + writer.finish()
    events = parse_sse(out)
    assert events[-1][0] == "error"
    assert events[-1][1]["type"] == "error" and events[-1][1]["error"]["type"] == "api_error"


def test_stream_error_event_keeps_upstream_status_class() -> None:
    writer = MessagesStreamWriter("m")
    event = parse_sse(writer.error(UpstreamError("boom", status=529)))[0]
    assert event == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "boom"}},
    )
