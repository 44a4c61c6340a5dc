"""The Anthropic Messages API through the gateway, with the official `anthropic` SDK as client:
translated to OpenAI-style providers, and passed through to Anthropic."""

from __future__ import annotations

import anthropic
import pytest

from tests.llm.harness import LlmStack
from tests.llm.openai_mock import API_KEY as OPENAI_KEY
from tests.mocks.base import Reply, ToolCall

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def client(stack: LlmStack, **kw: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.gateway.url, api_key="caller-key", max_retries=0, **kw
    )


def test_messages_to_openai_provider(stack: LlmStack) -> None:
    stack.oa.default = Reply(text="Bonjour!", input_tokens=30, output_tokens=4, cached_tokens=10)
    msg = client(stack).messages.create(
        model="gpt-4o",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hi in French"}],
    )
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "gpt-4o"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Bonjour!"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 20 and msg.usage.cache_read_input_tokens == 10
    assert msg.usage.output_tokens == 4
    sent = stack.oa.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert (
        sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    )  # Crossway's key, not the caller's
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.json["max_completion_tokens"] == 100


def test_messages_tools_round_trip_to_openai_provider(stack: LlmStack) -> None:
    stack.oa.script(
        Reply(
            text="",
            tool_calls=[
                ToolCall("get_weather", {"city": "Paris"}, id="call_p"),
                ToolCall("get_weather", {"city": "Rome"}, id="call_r"),
            ],
        ),
        Reply(text="Sunny in Paris, rain in Rome."),
    )
    c = client(stack)
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    first = c.messages.create(
        model="gpt-4o",
        max_tokens=200,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "auto"},
        messages=messages,  # type: ignore[arg-type]
    )
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [  # type: ignore[union-attr]
        ("call_p", "get_weather", {"city": "Paris"}),
        ("call_r", "get_weather", {"city": "Rome"}),
    ]
    messages.append({"role": "assistant", "content": [b.model_dump() for b in first.content]})
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_p", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "call_r", "content": "rain"},
            ],
        }
    )
    second = c.messages.create(
        model="gpt-4o",
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=messages,  # type: ignore[list-item, arg-type]
    )
    assert second.content[0].text == "Sunny in Paris, rain in Rome."  # type: ignore[union-attr]
    upstream = stack.oa.requests[-1].json
    assert upstream["tools"][0]["function"]["name"] == "get_weather"
    roles = [m["role"] for m in upstream["messages"]]
    assert roles == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in upstream["messages"][2:]] == ["call_p", "call_r"]


def test_messages_stream_to_openai_provider(stack: LlmStack) -> None:
    stack.oa.default = Reply(
        text="Let me check.",
        tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, id="call_o")],
        input_tokens=50,
        output_tokens=9,
        pieces=4,
    )
    with client(stack).messages.stream(
        model="gpt-4o",
        max_tokens=100,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert "text" in events and "input_json" in events
    assert final.content[0].text == "Let me check."  # type: ignore[union-attr]
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.input == {"city": "Oslo"} and tool.id == "call_o"
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 50 and final.usage.output_tokens == 9
    # Crossway asked the OpenAI upstream for stream usage itself.
    assert stack.oa.requests[-1].json["stream_options"] == {"include_usage": True}


def test_messages_passthrough_to_anthropic(stack: LlmStack) -> None:
    stack.ant.default = Reply(text="Hi from Claude", thinking="Thinking hard", input_tokens=21)
    msg = client(stack).messages.create(
        model="claude-3-5-sonnet-20241022",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Thinking hard"  # type: ignore[union-attr]
    assert msg.usage.input_tokens == 21
    sent = stack.ant.requests[-1]
    assert sent.json["thinking"] == {"type": "enabled", "budget_tokens": 1024}  # untouched
    assert sent.headers["x-api-key"] != "caller-key"
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"


def test_messages_stream_passthrough_to_anthropic_with_wildcard(stack: LlmStack) -> None:
    stack.ant.default = Reply(text="streamed claude", thinking="hmm", pieces=3)
    with client(stack).messages.stream(
        model="anthropic/claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "streamed claude"
    assert final.content[0].type == "thinking"
    assert stack.ant.requests[-1].json["model"] == "claude-sonnet-4-5"


def test_errors_come_back_in_anthropic_shape(stack: LlmStack) -> None:
    c = client(stack)
    with pytest.raises(anthropic.NotFoundError) as nf:
        c.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert nf.value.body["type"] == "error"  # type: ignore[index]
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        c.messages.create(
            model="gpt-4o",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],  # type: ignore[list-item]
        )
    assert "server tool" in bad.value.message
    stack.oa.script(Reply(status=429, retry_after="100"))
    with pytest.raises(anthropic.RateLimitError) as limited:
        c.messages.create(model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert limited.value.response.headers["retry-after"] == "100"


def test_count_tokens(stack: LlmStack) -> None:
    count = client(stack).messages.count_tokens(
        model="gpt-4o", messages=[{"role": "user", "content": "x" * 400}]
    )
    assert 100 <= count.input_tokens <= 120
