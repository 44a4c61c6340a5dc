"""Requests guarded before any upstream sees them: a payment card number in a user message, a
system prompt, a tool result or tool-call arguments sent back is refused with a 400 in the
caller's error format (OpenAI JSON to the openai SDK, Anthropic JSON to the anthropic SDK) that
names the guard and never the number, and no mock received anything; a masking guard's request
reaches the upstream masked, through the native passthroughs and the translations alike."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import orjson
import pytest

from tests.llm.guard.conftest import PROVIDERS, GuardStack
from tests.llm.guard.test_streams import EMAIL, ant, oai
from tests.mocks.base import Reply

CARD = "4111 1111 1111 1111"
CARD_BITS = ("4111", "1111 1111")


def nothing_sent(stack: GuardStack) -> None:
    for model in stack.mocks:
        assert stack.upstream_requests(model) == [], f"{model}'s upstream got the request"


def refused(exc: openai.APIStatusError | anthropic.APIStatusError) -> str:
    assert exc.status_code == 400
    text = exc.response.text
    for bit in CARD_BITS:
        assert bit not in text
    assert "'pii'" in text and "credit_card" in text
    return text


ASSISTANT_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "pay", "arguments": "{}"}}
    ],
}
CHAT_CASES: dict[str, list[Any]] = {
    "user": [{"role": "user", "content": f"My card is {CARD}, book it."}],
    "user_parts": [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Card:"}, {"type": "text", "text": CARD}],
        }
    ],
    "system": [
        {"role": "system", "content": f"The company card is {CARD}."},
        {"role": "user", "content": "Book the hotel."},
    ],
    "tool_result": [
        {"role": "user", "content": "Pay the bill."},
        ASSISTANT_CALL,
        {"role": "tool", "tool_call_id": "call_1", "content": f'{{"card": "{CARD}"}}'},
    ],
    "tool_arguments": [
        {"role": "user", "content": "Pay the bill."},
        {
            **ASSISTANT_CALL,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "pay", "arguments": orjson.dumps({"card": CARD}).decode()},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "paid"},
    ],
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("case", list(CHAT_CASES))
def test_openai_sdk_gets_a_400_and_the_upstream_nothing(
    stack: GuardStack, case: str, stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai(stack).chat.completions.create(model="openai", messages=CHAT_CASES[case], stream=stream)
    refused(caught.value)
    assert caught.value.code == "guardrail_blocked"
    assert caught.value.type == "invalid_request_error"
    nothing_sent(stack)


@pytest.mark.parametrize("model", PROVIDERS)
def test_every_provider_is_protected(stack: GuardStack, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai(stack).chat.completions.create(model=model, messages=CHAT_CASES["user"])
    refused(caught.value)
    with pytest.raises(anthropic.BadRequestError):
        ant(stack).messages.create(
            model=model, max_tokens=10, messages=[{"role": "user", "content": CARD}]
        )
    nothing_sent(stack)


MESSAGES_CASES: dict[str, dict[str, Any]] = {
    "user": {"messages": [{"role": "user", "content": f"Card {CARD}"}]},
    "user_blocks": {
        "messages": [{"role": "user", "content": [{"type": "text", "text": f"Card {CARD}"}]}]
    },
    "system": {
        "system": f"The company card is {CARD}.",
        "messages": [{"role": "user", "content": "Book it"}],
    },
    "system_blocks": {
        "system": [{"type": "text", "text": f"Card: {CARD}"}],
        "messages": [{"role": "user", "content": "Book it"}],
    },
    "tool_result": {
        "messages": [
            {"role": "user", "content": "Pay"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "pay", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": f"card {CARD}"}],
                    }
                ],
            },
        ]
    },
    "tool_use_input": {
        "messages": [
            {"role": "user", "content": "Pay"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "pay", "input": {"card": CARD}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
            },
        ]
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("case", list(MESSAGES_CASES))
def test_anthropic_sdk_gets_an_anthropic_400(stack: GuardStack, case: str, stream: bool) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        ant(stack).messages.create(
            model="anthropic", max_tokens=10, stream=stream, **MESSAGES_CASES[case]
        )
    refused(caught.value)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    nothing_sent(stack)


RESPONSES_CASES: dict[str, dict[str, Any]] = {
    "input": {"input": f"Card {CARD}"},
    "instructions": {"instructions": f"Card {CARD}", "input": "Book it"},
    "message_parts": {
        "input": [{"role": "user", "content": [{"type": "input_text", "text": f"Card {CARD}"}]}]
    },
    "function_output": {
        "input": [
            {"type": "function_call", "call_id": "c1", "name": "pay", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": f"card {CARD}"},
        ]
    },
}


@pytest.mark.parametrize("model", ["openai", "anthropic"])
@pytest.mark.parametrize("case", list(RESPONSES_CASES))
def test_responses_gets_a_400(stack: GuardStack, case: str, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai(stack).responses.create(model=model, **RESPONSES_CASES[case])
    refused(caught.value)
    assert caught.value.code == "guardrail_blocked"
    nothing_sent(stack)


def test_an_untranslatable_responses_request_is_guarded_too(stack: GuardStack) -> None:
    """Hosted tools only OpenAI serves: the request has no canonical form, still guarded."""
    with pytest.raises(openai.BadRequestError) as caught:
        oai(stack).responses.create(
            model="openai", input=f"Card {CARD}", tools=[{"type": "web_search_preview"}]
        )
    refused(caught.value)
    nothing_sent(stack)


def test_clean_requests_pass_unchanged(stack: GuardStack) -> None:
    stack.mock("openai").script(Reply(text="ok"))
    messages = [{"role": "user", "content": "Hi there, my order is 4111."}]
    chat = oai(stack).chat.completions.create(model="openai", messages=messages)  # type: ignore[arg-type]
    assert chat.choices[0].message.content == "ok"
    assert orjson.loads(_sent(stack, "openai"))["messages"] == messages


# -- masking in requests ------------------------------------------------------------------------


def _sent(stack: GuardStack, model: str) -> bytes:
    [request] = stack.upstream_requests(model)
    return request.body


def _masked(body: bytes) -> None:
    assert EMAIL.encode() not in body and b"kowalczyk" not in body
    assert b"<EMAIL>" in body


MASKED_CHAT: list[Any] = [
    {"role": "system", "content": f"Escalate to {EMAIL}."},
    {"role": "user", "content": f"I am {EMAIL}"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": orjson.dumps({"who": EMAIL}).decode()},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": f"found {EMAIL}"},
]


@pytest.mark.parametrize("model", ["openai", "openai-compatible", "anthropic", "gemini"])
def test_chat_requests_are_forwarded_masked(stack: GuardStack, model: str) -> None:
    stack.mock(model).script(Reply(text=f"Hello {EMAIL}"))
    chat = oai(stack, prefix="/masked/v1").chat.completions.create(
        model=model, messages=MASKED_CHAT
    )
    assert chat.choices[0].message.content == "Hello <EMAIL>"
    body = _sent(stack, model)
    _masked(body)
    if model == "openai":  # OpenAI's own body, re-encoded masked
        sent = orjson.loads(body)["messages"]
        assert sent[0]["content"] == "Escalate to <EMAIL>."
        assert orjson.loads(sent[2]["tool_calls"][0]["function"]["arguments"]) == {"who": "<EMAIL>"}
        assert sent[3]["content"] == "found <EMAIL>"


MASKED_MESSAGES: dict[str, Any] = {
    "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
    "system": [{"type": "text", "text": f"Escalate to {EMAIL}."}],
    "messages": [
        {"role": "user", "content": f"I am {EMAIL}"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"who": EMAIL}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": EMAIL}],
        },
    ],
}


@pytest.mark.parametrize("model", ["anthropic", "openai", "bedrock"])
def test_messages_requests_are_forwarded_masked(stack: GuardStack, model: str) -> None:
    stack.mock(model).script(Reply(text=f"Hello {EMAIL}"))
    message = ant(stack, prefix="/masked").messages.create(
        model=model, max_tokens=20, extra_body={"top_k": 5}, **MASKED_MESSAGES
    )
    assert [b.text for b in message.content if b.type == "text"] == ["Hello <EMAIL>"]
    body = _sent(stack, model)
    _masked(body)
    if model == "anthropic":  # the native passthrough: the client's body, masked, top_k kept
        sent = orjson.loads(body)
        assert sent["top_k"] == 5
        assert sent["system"] == [{"type": "text", "text": "Escalate to <EMAIL>."}]
        assert sent["messages"][1]["content"][0]["input"] == {"who": "<EMAIL>"}


@pytest.mark.parametrize("model", ["openai", "anthropic"])
def test_responses_requests_are_forwarded_masked(stack: GuardStack, model: str) -> None:
    stack.mock(model).script(Reply(text=f"Hello {EMAIL}"))
    response = oai(stack, prefix="/masked/v1").responses.create(
        model=model,
        instructions=f"Escalate to {EMAIL}.",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": f"I am {EMAIL}"}]},
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "f",
                "arguments": orjson.dumps({"who": EMAIL}).decode(),
            },
            {"type": "function_call_output", "call_id": "c1", "output": EMAIL},
        ],
    )
    assert response.output_text == "Hello <EMAIL>"
    body = _sent(stack, model)
    _masked(body)
    if model == "openai":  # the native passthrough
        sent = orjson.loads(body)
        assert sent["instructions"] == "Escalate to <EMAIL>."
        assert orjson.loads(sent["input"][1]["arguments"]) == {"who": "<EMAIL>"}


def test_an_untranslatable_responses_request_is_forwarded_masked(stack: GuardStack) -> None:
    stack.mock("openai").script(Reply(text="ok"))
    oai(stack, prefix="/masked/v1").responses.create(
        model="openai", input=f"I am {EMAIL}", tools=[{"type": "web_search_preview"}]
    )
    sent = orjson.loads(_sent(stack, "openai"))
    assert sent["input"] == "I am <EMAIL>"
    assert sent["tools"] == [{"type": "web_search_preview"}]


def test_a_streamed_masked_request_is_forwarded_masked(stack: GuardStack) -> None:
    stack.mock("openai").script(Reply(text="ok"))
    stream = oai(stack, prefix="/masked/v1").chat.completions.create(
        model="openai", messages=[{"role": "user", "content": f"I am {EMAIL}"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "ok"
    sent = orjson.loads(_sent(stack, "openai"))
    assert sent["messages"][0]["content"] == "I am <EMAIL>"
    assert sent["stream_options"] == {"include_usage": True}


def test_an_embeddings_input_is_guarded_too(stack: GuardStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai(stack).embeddings.create(model="openai", input=["fine", f"card {CARD}"])
    refused(caught.value)
    nothing_sent(stack)
    with pytest.raises(openai.BadRequestError):
        oai(stack).embeddings.create(model="openai", input=f"card {CARD}")
    nothing_sent(stack)
