"""Anthropic provider: canonical chat <-> Messages API, unit-level and against the mock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from crossway.config.llm import ProviderConfig
from crossway.errors import BadRequest, GatewayError, RateLimited, UpstreamError
from crossway.llm.providers import build_provider
from crossway.llm.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicProvider,
    AnthropicStreamTranslator,
    translate_request,
    translate_response,
)
from tests.mocks import anthropic as mock
from tests.mocks.base import MockServer, Reply, ToolCall
from tests.mocks.client import call, joined

FIXTURES = Path(__file__).resolve().parents[2] / "mocks" / "fixtures"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture
async def anthropic_mock() -> AsyncIterator[MockServer]:
    async with mock.start_anthropic_mock() as server:
        yield server


def provider(server: MockServer, **extra: object) -> AnthropicProvider:
    cfg = ProviderConfig.model_validate(
        {"type": "anthropic", "base_url": server.url, "api_key": mock.API_KEY, **extra}
    )
    p = build_provider("claude", cfg)
    assert isinstance(p, AnthropicProvider)
    return p


# --- request translation ----------------------------------------------------------------------


def test_request_system_merge_tools_and_parallel_results() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    }
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "rainy"}],
            },
            {"role": "user", "content": "Thanks"},
        ],
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stop": "END",
        "temperature": 0.3,
        "user": "u-1",
        "top_k": 7,
        "seed": 1,
    }
    out = translate_request(body, "claude-sonnet-4-5", True, 4096)
    assert out["model"] == "claude-sonnet-4-5"
    assert out["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Use tools."},
    ]
    assert out["max_tokens"] == 4096
    assert out["stream"] is True
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["top_k"] == 7 and "seed" not in out and "user" not in out
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["tools"] == [
        {
            "name": "get_weather",
            "input_schema": TOOLS[0]["function"]["parameters"],
            "description": "Weather in a city",
        }
    ]
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["user", "assistant", "user"]
    first = out["messages"][0]["content"]
    assert first[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assistant = out["messages"][1]["content"]
    assert assistant[0] == {"type": "text", "text": "Checking."}
    assert assistant[1] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    last = out["messages"][2]["content"]
    assert last[0] == {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}
    assert last[1]["tool_use_id"] == "call_2" and last[1]["content"] == [
        {"type": "text", "text": "rainy"}
    ]
    assert last[2] == {"type": "text", "text": "Thanks"}
    assert mock.validate(out) is None


def test_request_defaults_and_url_images() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                ],
            }
        ],
        "max_completion_tokens": 10,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "tools": TOOLS,
    }
    out = translate_request(body, "m", False, DEFAULT_MAX_TOKENS)
    assert out["max_tokens"] == 10 and "stream" not in out
    assert out["messages"][0]["content"][1]["source"] == {
        "type": "url",
        "url": "https://x.test/a.png",
    }
    assert out["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert (
        translate_request({"messages": [{"role": "user", "content": "x"}]}, "m", False, 4096)[
            "max_tokens"
        ]
        == 4096
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": []}, "messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "input_audio",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{bad"}}],
                    }
                ]
            },
            "not valid JSON",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n > 1"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search"}]},
            "only function tools",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png,abc"}}
                        ],
                    }
                ]
            },
            "base64",
        ),
    ],
)
def test_bad_requests_are_400(body: dict[str, object], needle: str) -> None:
    with pytest.raises(BadRequest) as info:
        translate_request(body, "m", False, 4096)
    assert needle in info.value.message


# --- response translation ---------------------------------------------------------------------


def test_response_text_tools_thinking_usage() -> None:
    data = {
        "id": "msg_1",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "Let me see.", "signature": "abc"},
            {"type": "text", "text": "Sure."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 5,
            "output_tokens": 20,
        },
    }
    out = translate_response(data, "claude-x")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Sure."
    assert choice["message"]["reasoning_content"] == "Let me see."
    assert choice["message"]["thinking_blocks"][0]["signature"] == "abc"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert out["usage"]["prompt_tokens"] == 115
    assert out["usage"]["completion_tokens"] == 20
    assert out["usage"]["total_tokens"] == 135
    assert out["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 100,
        "cache_creation_tokens": 5,
    }


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    out = translate_response(
        {"content": [{"type": "text", "text": "x"}], "stop_reason": reason, "usage": {}}, "m"
    )
    assert out["choices"][0]["finish_reason"] == finish


# --- stream translation -----------------------------------------------------------------------


def feed_bytewise(data: bytes) -> list[dict[str, object]]:
    translator = AnthropicStreamTranslator("alias")
    chunks = []
    for i in range(len(data)):
        chunks.extend(translator.feed(data[i : i + 1]))
    chunks.extend(translator.close())
    return chunks


def test_golden_text_stream_from_docs() -> None:
    chunks = feed_bytewise((FIXTURES / "anthropic_stream_text.sse").read_bytes())
    result = joined(chunks)
    assert result["text"] == "Hello!"
    assert result["finish_reason"] == "stop"
    assert result["usage"]["prompt_tokens"] == 25 and result["usage"]["completion_tokens"] == 15
    assert all(c["model"] == "alias" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_golden_tool_stream_from_docs() -> None:
    result = joined(feed_bytewise((FIXTURES / "anthropic_stream_tool_use.sse").read_bytes()))
    assert result["text"].startswith("Okay, let's check the weather")
    assert len(result["tool_calls"]) == 1
    tool = result["tool_calls"][0]
    assert tool["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and tool["name"] == "get_weather"
    assert orjson.loads(tool["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "fahrenheit",
    }
    assert result["finish_reason"] == "tool_calls"
    assert result["usage"]["completion_tokens"] == 89


def test_stream_error_event_raises() -> None:
    data = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":{"input_tokens":1}}}\n\n'
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    translator = AnthropicStreamTranslator("m")
    with pytest.raises(GatewayError) as info:
        translator.feed(data)
    assert info.value.status_code == 529 and info.value.message == "Overloaded"


def test_stream_cut_before_message_stop_raises() -> None:
    translator = AnthropicStreamTranslator("m")
    translator.feed(
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":{}}}\n\n'
    )
    with pytest.raises(UpstreamError):
        translator.close()


# --- against the mock -------------------------------------------------------------------------


async def test_plain_against_mock(anthropic_mock: MockServer) -> None:
    anthropic_mock.script(Reply(text="Bonjour", input_tokens=9, output_tokens=2, cached_tokens=3))
    out = await call(
        provider(anthropic_mock),
        {"messages": [{"role": "system", "content": "fr"}, {"role": "user", "content": "hi"}]},
        "claude-haiku",
    )
    assert out["choices"][0]["message"]["content"] == "Bonjour"
    assert (
        out["usage"]["prompt_tokens"] == 12
        and out["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
    )
    sent = anthropic_mock.requests[0]
    assert (
        sent.headers["x-api-key"] == mock.API_KEY
        and sent.headers["anthropic-version"] == "2023-06-01"
    )
    assert (
        sent.json["system"] == [{"type": "text", "text": "fr"}]
        and sent.json["max_tokens"] == DEFAULT_MAX_TOKENS
    )


async def test_stream_with_tools_and_thinking_against_mock(anthropic_mock: MockServer) -> None:
    anthropic_mock.script(
        Reply(
            text="Let me check.",
            thinking="Need weather.",
            tool_calls=[
                ToolCall("get_weather", {"city": "Paris"}),
                ToolCall("get_weather", {"city": "Rome"}),
            ],
            pieces=4,
        )
    )
    chunks = await call(
        provider(anthropic_mock, default_max_tokens=100),
        {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "stream": True},
        "c",
    )
    result = joined(chunks)
    assert result["text"] == "Let me check." and result["reasoning"] == "Need weather."
    assert [orjson.loads(t["arguments"]) for t in result["tool_calls"]] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    assert [t["id"] for t in result["tool_calls"]] == ["toolu_mock00", "toolu_mock01"]
    assert result["finish_reason"] == "tool_calls"
    assert result["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    # Argument fragments arrive as separate deltas (never buffered into one).
    fragments = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert len(fragments) > 4
    assert anthropic_mock.requests[0].json["max_tokens"] == 100


async def test_tool_round_trip_is_accepted_by_mock(anthropic_mock: MockServer) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "toolu_b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_b", "content": "rain"},
        ],
        "tools": TOOLS,
    }
    out = await call(provider(anthropic_mock), body, "c")
    assert out["choices"][0]["finish_reason"] == "stop"
    assert [m["role"] for m in anthropic_mock.requests[0].json["messages"]] == [
        "user",
        "assistant",
        "user",
    ]


async def test_errors_keep_status_message_and_retry_after(anthropic_mock: MockServer) -> None:
    anthropic_mock.script(
        Reply(
            status=429,
            error_message="Number of requests has exceeded your rate limit",
            retry_after="7",
        )
    )
    with pytest.raises(RateLimited) as info:
        await call(provider(anthropic_mock), {"messages": [{"role": "user", "content": "x"}]}, "c")
    assert info.value.status_code == 429 and info.value.headers == {"retry-after": "7"}
    assert "rate limit" in info.value.message

    anthropic_mock.script(
        Reply(status=529, error_type="overloaded_error", error_message="Overloaded")
    )
    with pytest.raises(GatewayError) as info2:
        await call(provider(anthropic_mock), {"messages": [{"role": "user", "content": "x"}]}, "c")
    assert info2.value.status_code == 529

    bad = ProviderConfig(type="anthropic", base_url=anthropic_mock.url, api_key="wrong")  # type: ignore[arg-type]
    with pytest.raises(GatewayError) as info3:
        await call(build_provider("x", bad), {"messages": [{"role": "user", "content": "x"}]}, "c")
    assert info3.value.status_code == 401 and info3.value.message == "invalid x-api-key"


async def test_prompt_too_long_is_marked_for_context_fallback(anthropic_mock: MockServer) -> None:
    anthropic_mock.script(
        Reply(status=400, error_message="prompt is too long: 250000 tokens > 200000 maximum")
    )
    with pytest.raises(BadRequest) as info:
        await call(provider(anthropic_mock), {"messages": [{"role": "user", "content": "x"}]}, "c")
    assert info.value.code == "context_length_exceeded"


async def test_stream_cut_and_in_stream_error(anthropic_mock: MockServer) -> None:
    anthropic_mock.script(Reply(cut_after=4, pieces=5), Reply(stream_error=True))
    body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
    with pytest.raises(GatewayError):
        await call(provider(anthropic_mock), body, "c")
    with pytest.raises(GatewayError) as info:
        await call(provider(anthropic_mock), body, "c")
    assert info.value.status_code == 529


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
    "required": ["city"],
}


def test_json_schema_becomes_a_forced_tool() -> None:
    body = {
        "messages": [{"role": "user", "content": "Weather as JSON"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}},
    }
    out = translate_request(body, "m", False, 4096)
    assert out["tools"] == [
        {
            "name": "crossway_json_response",
            "description": "Give the answer as JSON.",
            "input_schema": SCHEMA,
        }
    ]
    assert out["tool_choice"] == {"type": "tool", "name": "crossway_json_response"}
    assert "system" not in out and mock.validate(out) is None
    # With tools of its own (or thinking), the request gets an instruction instead.
    with_tools = translate_request({**body, "tools": TOOLS}, "m", False, 4096)
    assert [t["name"] for t in with_tools["tools"]] == ["get_weather"]
    assert "JSON schema" in with_tools["system"][-1]["text"]
    thinking = translate_request(
        {**body, "thinking": {"type": "enabled", "budget_tokens": 1024}}, "m", False, 4096
    )
    assert "tools" not in thinking and "JSON" in thinking["system"][-1]["text"]


async def test_forced_json_tool_comes_back_as_text(anthropic_mock: MockServer) -> None:
    answer = {"city": "Paris", "temp": 21.5}
    anthropic_mock.script(
        Reply(text="", tool_calls=[ToolCall("crossway_json_response", answer)]),
        Reply(text="", tool_calls=[ToolCall("crossway_json_response", answer)], pieces=4),
    )
    body = {
        "messages": [{"role": "user", "content": "Weather as JSON"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}},
    }
    out = await call(provider(anthropic_mock), body, "c")
    message = out["choices"][0]["message"]
    assert orjson.loads(message["content"]) == answer and "tool_calls" not in message
    assert out["choices"][0]["finish_reason"] == "stop"
    result = joined(await call(provider(anthropic_mock), {**body, "stream": True}, "c"))
    assert orjson.loads(result["text"]) == answer
    assert result["tool_calls"] == [] and result["finish_reason"] == "stop"


def test_reasoning_effort_enables_thinking() -> None:
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": "medium",
        "temperature": 0.2,
        "max_tokens": 1000,
    }
    out = translate_request(body, "m", False, 4096)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert out["max_tokens"] == 4096 + 4096 and "temperature" not in out
    # A client's own thinking config wins; tool_choice none without tools is not sent.
    own = translate_request(
        {**body, "thinking": {"type": "enabled", "budget_tokens": 2000}, "tool_choice": "none"},
        "m",
        False,
        4096,
    )
    assert own["thinking"]["budget_tokens"] == 2000 and "tool_choice" not in own
    assert own["temperature"] == 0.2 and own["max_tokens"] == 1000
