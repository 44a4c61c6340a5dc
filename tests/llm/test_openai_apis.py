"""OpenAI Chat Completions, Responses, Embeddings and Models through the gateway, with the
official `openai` SDK as client, against OpenAI-style and Anthropic providers."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import openai
import pytest

from tests.llm.harness import LlmStack
from tests.mocks.base import Reply, ToolCall

HELLO = [{"role": "user", "content": "hello"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def oai(stack: LlmStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key="x", max_retries=0)


def post(stack: LlmStack, path: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(
        stack.gateway.url + path, data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- Chat Completions -------------------------------------------------------------------------


def test_chat_passthrough_forwards_the_exact_bytes(stack: LlmStack) -> None:
    body = json.dumps(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "developer", "content": "be terse"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                        },
                    ],
                },
            ],
            "n": 2,
            "stop": ["\n\n"],
            "seed": 42,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": {"type": "object"}},
            },
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": True,
            "some_future_field": {"x": 1},
        },
        indent=1,
    ).encode()
    status, answer = post(stack, "/v1/chat/completions", body)
    assert status == 200
    assert stack.oa.requests[-1].body == body  # not re-encoded
    assert len(json.loads(answer)["choices"]) == 2


def test_chat_alias_rewrites_only_the_model(stack: LlmStack) -> None:
    resp = oai(stack).chat.completions.create(model="gpt-alias", messages=HELLO, seed=3)  # type: ignore[arg-type]
    assert resp.choices[0].message.content
    sent = stack.oa.requests[-1].json
    assert sent["model"] == "gpt-4o-mini" and sent["seed"] == 3


def test_chat_async_and_tools_streaming(stack: LlmStack) -> None:
    stack.oa.default = Reply(
        text="",
        tool_calls=[ToolCall("get_weather", {"city": "A"}), ToolCall("get_weather", {"city": "B"})],
    )

    async def run() -> list[tuple[str, str]]:
        c = openai.AsyncOpenAI(base_url=stack.gateway.url + "/v1", api_key="x", max_retries=0)
        stream = await c.chat.completions.create(
            model="openai/gpt-4.1",
            messages=HELLO,
            tools=[WEATHER],
            stream=True,  # type: ignore[arg-type, list-item]
        )
        calls: dict[int, list[str]] = {}
        async for chunk in stream:
            for choice in chunk.choices:
                for tc in choice.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, ["", ""])
                    entry[0] += (tc.function.name or "") if tc.function else ""
                    entry[1] += (tc.function.arguments or "") if tc.function else ""
        await c.close()
        return [(n, a) for n, a in calls.values()]

    calls = asyncio.run(run())
    assert [(n, json.loads(a)) for n, a in calls] == [
        ("get_weather", {"city": "A"}),
        ("get_weather", {"city": "B"}),
    ]
    assert stack.oa.requests[-1].json["model"] == "gpt-4.1"


def test_chat_to_anthropic_provider(stack: LlmStack) -> None:
    stack.ant.default = Reply(
        text="Checking", tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, id="toolu_1")]
    )
    resp = oai(stack).chat.completions.create(
        model="claude-3-5-sonnet-20241022",
        messages=HELLO,
        tools=[WEATHER],
        max_tokens=50,  # type: ignore[arg-type, list-item]
    )
    msg = resp.choices[0].message
    assert msg.content == "Checking" and resp.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls and msg.tool_calls[0].id == "toolu_1"  # type: ignore[union-attr]
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Oslo"}  # type: ignore[union-attr]
    assert resp.model == "claude-3-5-sonnet-20241022"
    stream = oai(stack).chat.completions.create(
        model="claude-3-5-sonnet-20241022",
        messages=HELLO,
        stream=True,  # type: ignore[arg-type]
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Checking"
    assert all(c.choices for c in chunks)  # usage chunk hidden: the client did not ask


def test_chat_bad_input_is_a_4xx_in_openai_shape(stack: LlmStack) -> None:
    status, body = post(stack, "/v1/chat/completions", b'{"messages": []}')
    assert status == 400 and json.loads(body)["error"]["param"] == "model"
    status, body = post(stack, "/v1/chat/completions", b'{"model": "nope", "messages": []}')
    assert status == 404 and json.loads(body)["error"]["code"] == "model_not_found"
    status, body = post(stack, "/v1/chat/completions", b'{"model": 5}')
    assert status == 400
    status, body = post(stack, "/v1/chat/completions", b"[1, 2]")
    assert status == 400
    # invalid messages for a translating provider
    status, body = post(
        stack,
        "/v1/chat/completions",
        b'{"model": "claude-3-5-sonnet-20241022", "messages": [{"role": "wizard", "content": 1}]}',
    )
    assert status == 400 and "error" in json.loads(body)


# --- Responses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o", "claude-3-5-sonnet-20241022"])
def test_responses_text(stack: LlmStack, model: str) -> None:
    stack.oa.default = stack.ant.default = Reply(
        text="Hello there", input_tokens=11, output_tokens=2
    )
    resp = oai(stack).responses.create(model=model, input="hi", instructions="Be brief.")
    assert resp.output_text == "Hello there"
    assert resp.status == "completed"
    assert (
        resp.usage is not None and resp.usage.input_tokens == 11 and resp.usage.output_tokens == 2
    )


@pytest.mark.parametrize("model", ["gpt-4o", "claude-3-5-sonnet-20241022"])
def test_responses_function_call_round_trip(stack: LlmStack, model: str) -> None:
    upstream = stack.oa if model == "gpt-4o" else stack.ant
    upstream.script(
        Reply(text="", tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="call_9")]),
        Reply(text="It is sunny."),
    )
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": WEATHER["function"]["parameters"],
    }  # type: ignore[index]
    c = oai(stack)
    first = c.responses.create(model=model, input="weather in Paris?", tools=[tool])  # type: ignore[list-item]
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].call_id == "call_9" and calls[0].name == "get_weather"  # type: ignore[union-attr]
    second = c.responses.create(
        model=model,
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_9",
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },  # type: ignore[union-attr]
            {"type": "function_call_output", "call_id": "call_9", "output": "sunny"},
        ],
        tools=[tool],  # type: ignore[list-item]
    )
    assert second.output_text == "It is sunny."
    sent = upstream.requests[-1].json
    if model == "gpt-4o":  # passed through as Responses input
        assert [i.get("type", "message") for i in sent["input"]] == [
            "message",
            "function_call",
            "function_call_output",
        ]
    else:  # translated: tool_use answered by tool_result
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
        assert sent["messages"][2]["content"][0]["tool_use_id"] == "call_9"


@pytest.mark.parametrize("model", ["gpt-4o", "claude-3-5-sonnet-20241022"])
def test_responses_streaming(stack: LlmStack, model: str) -> None:
    reply = Reply(
        text="Streaming works", tool_calls=[ToolCall("get_weather", {"city": "X"})], pieces=3
    )
    stack.oa.default = stack.ant.default = reply
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    with oai(stack).responses.stream(model=model, input="go", tools=[tool]) as stream:  # type: ignore[list-item]
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert (
        "response.output_text.delta" in kinds and "response.function_call_arguments.delta" in kinds
    )
    assert final.output_text == "Streaming works"
    call = next(o for o in final.output if o.type == "function_call")
    assert json.loads(call.arguments) == {"city": "X"}  # type: ignore[union-attr]


def test_responses_stream_cut_ends_with_error_event(stack: LlmStack) -> None:
    stack.oa.script(Reply(text="a b c d e f", pieces=6, cut_after=4))  # passed through
    events = list(oai(stack).responses.create(model="midstream-responses", input="go", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "error"
    stack.ant.script(Reply(text="a b c d e f", pieces=6, cut_after=4))  # translated
    events = list(
        oai(stack).responses.create(model="claude-3-5-sonnet-20241022", input="go", stream=True)
    )
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert stack.ob.requests == []  # no failover after the first byte


def test_responses_pass_through_to_openai_untouched(stack: LlmStack) -> None:
    """OpenAI itself keeps what only it can do: stored responses, hosted tools."""
    resp = oai(stack).responses.create(
        model="gpt-4o",
        input="and then?",
        previous_response_id="resp_earlier",
        tools=[{"type": "web_search"}],
    )
    assert resp.output_text == "Hello from the mock!"
    sent = stack.oa.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.json["previous_response_id"] == "resp_earlier"
    assert sent.json["tools"] == [{"type": "web_search"}]


def test_responses_bad_input(stack: LlmStack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai(stack).responses.create(
            model="claude-3-5-sonnet-20241022", input="x", previous_response_id="resp_1"
        )
    assert "previous_response_id" in info.value.message
    with pytest.raises(openai.BadRequestError) as hosted:
        oai(stack).responses.create(
            model="gemini-2.5-flash", input="x", tools=[{"type": "web_search"}]
        )
    assert "hosted tool" in hosted.value.message
    with pytest.raises(openai.NotFoundError):
        oai(stack).responses.create(model="nope", input="x")


# --- Embeddings and Models ---------------------------------------------------------------------


def test_embeddings(stack: LlmStack) -> None:
    stack.oa.default = Reply(input_tokens=3)
    resp = oai(stack).embeddings.create(model="embed", input=["a", "b"])
    assert [d.index for d in resp.data] == [0, 1] and len(resp.data[0].embedding) == 4
    assert stack.oa.requests[-1].json["model"] == "text-embedding-3-small"
    assert stack.oa.requests[-1].path == "/v1/embeddings"
    with pytest.raises(openai.BadRequestError) as info:
        oai(stack).embeddings.create(model="claude-embed", input="a")
    assert "embeddings" in info.value.message


def test_models(stack: LlmStack) -> None:
    ids = [m.id for m in oai(stack).models.list()]
    assert "gpt-4o" in ids and "failover" in ids and not any("*" in i for i in ids)
    assert oai(stack).models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        oai(stack).models.retrieve("nope")
