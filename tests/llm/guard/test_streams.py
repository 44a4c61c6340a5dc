"""Answers masked end to end, for every provider kind: the official `openai` and `anthropic` SDKs
talk to `crossway serve`, which talks to each provider's mock. An e-mail address split across two
SSE events (and, from the `chunky` mock, across network chunks) reaches the client as `<EMAIL>`
with no fragment of it anywhere on the wire; phone numbers and tool-call arguments alike; the
first text is released while the upstream is still sending."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from tests.llm.guard.conftest import PROVIDERS, GatedMock, GuardStack, Tee
from tests.mocks.base import Reply, ToolCall, split_text

EMAIL = "zq.kowalczyk@mailbox-corp.io"
PHONE = "+1 415 555 2671"
TEXT = f"Hi! For the invoice, reach {EMAIL} before Friday; we answer fast."
MASKED = TEXT.replace(EMAIL, "<EMAIL>")
WINDOW = 128
"""The guard's stream window (the default)."""


def pieces_splitting(text: str, entity: str) -> int:
    """A `Reply.pieces` for which the mocks' `split_text` cuts `entity` exactly once, so it
    spans two consecutive events."""
    start = text.index(entity)
    end = start + len(entity)
    for pieces in range(2, len(text)):
        cuts, at = [], 0
        for part in split_text(text, pieces)[:-1]:
            at += len(part)
            cuts.append(at)
        if sum(start < c < end for c in cuts) == 1:
            return pieces
    raise AssertionError("no split cuts the entity once")


SPLIT = pieces_splitting(TEXT, EMAIL)


def no_fragment(raw: bytes, secret: str) -> None:
    """No 5-character piece of `secret` is anywhere in `raw` (the texts around it share none)."""
    assert raw, "nothing was read"
    wire = raw.decode()
    for i in range(len(secret) - 4):
        assert secret[i : i + 5] not in wire, f"{secret[i : i + 5]!r} leaked"


def oai(stack: GuardStack, tee: Tee | None = None, prefix: str = "/v1") -> openai.OpenAI:
    client = tee.client(httpx) if tee is not None else None
    return openai.OpenAI(
        base_url=stack.url + prefix, api_key="unused", max_retries=0, http_client=client
    )


def ant(stack: GuardStack, tee: Tee | None = None, prefix: str = "") -> anthropic.Anthropic:
    client = tee.client(httpx2) if tee is not None else None
    return anthropic.Anthropic(
        base_url=stack.url + prefix, api_key="unused", max_retries=0, http_client=client
    )


USER = [{"role": "user", "content": "Who do I write to?"}]


def test_the_split_is_real() -> None:
    parts = split_text(TEXT, SPLIT)
    assert not any(EMAIL in p for p in parts)
    assert any(EMAIL in a + b for a, b in itertools.pairwise(parts))


@pytest.mark.parametrize("usage", [False, True], ids=["plain", "include_usage"])
@pytest.mark.parametrize("model", PROVIDERS)
def test_openai_sdk_stream_masks_an_email_split_across_events(
    stack: GuardStack, model: str, usage: bool
) -> None:
    stack.mock(model).script(Reply(text=TEXT, pieces=SPLIT))
    tee = Tee()
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if usage else {}
    stream = oai(stack, tee).chat.completions.create(
        model=model, messages=USER, stream=True, **extra
    )
    text, finish, seen_usage = "", None, None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        seen_usage = chunk.usage or seen_usage
    assert text == MASKED
    assert finish == "stop"
    assert (seen_usage is not None) == usage
    no_fragment(bytes(tee.raw), EMAIL)
    assert b"<EMAIL>" in tee.raw
    assert len(stack.upstream_requests(model)) == 1


@pytest.mark.parametrize("model", PROVIDERS)
def test_anthropic_sdk_stream_masks_an_email_split_across_events(
    stack: GuardStack, model: str
) -> None:
    stack.mock(model).script(Reply(text=TEXT, pieces=SPLIT))
    tee = Tee()
    with ant(stack, tee).messages.stream(model=model, max_tokens=100, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == MASKED
    assert [b.text for b in final.content if b.type == "text"] == [MASKED]
    assert final.stop_reason == "end_turn"
    no_fragment(bytes(tee.raw), EMAIL)


@pytest.mark.parametrize("model", PROVIDERS)
def test_responses_stream_masks_an_email_split_across_events(stack: GuardStack, model: str) -> None:
    stack.mock(model).script(Reply(text=TEXT, pieces=SPLIT))
    tee = Tee()
    stream = oai(stack, tee).responses.create(model=model, input="Who?", stream=True)
    deltas, done, completed = "", None, None
    for event in stream:
        if event.type == "response.output_text.delta":
            deltas += event.delta
        elif event.type == "response.output_text.done":
            done = event.text
        elif event.type == "response.completed":
            completed = event.response
    assert deltas == MASKED
    assert done == MASKED
    assert completed is not None and completed.output_text == MASKED
    no_fragment(bytes(tee.raw), EMAIL)


@pytest.mark.parametrize("model", ["openai", "anthropic", "gemini"])
def test_responses_stream_helper_accumulates_the_masked_text(stack: GuardStack, model: str) -> None:
    stack.mock(model).script(Reply(text=TEXT, pieces=SPLIT))
    with oai(stack).responses.stream(model=model, input="Who?") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == MASKED


@pytest.mark.parametrize("model", PROVIDERS)
def test_plain_answers_are_masked(stack: GuardStack, model: str) -> None:
    text = f"Mail {EMAIL} or call {PHONE}."
    masked = "Mail <EMAIL> or call <PHONE>."
    mock = stack.mock(model)
    mock.script(Reply(text=text), Reply(text=text), Reply(text=text))
    tee = Tee()
    chat = oai(stack, tee).chat.completions.create(model=model, messages=USER)
    assert chat.choices[0].message.content == masked
    message = ant(stack, tee).messages.create(model=model, max_tokens=50, messages=USER)
    assert [b.text for b in message.content if b.type == "text"] == [masked]
    response = oai(stack, tee).responses.create(model=model, input="Who?")
    assert response.output_text == masked
    no_fragment(bytes(tee.raw), EMAIL)
    assert b"415 555" not in tee.raw and b"555 2671" not in tee.raw
    assert len(stack.upstream_requests(model)) == 3


@pytest.mark.parametrize("model", ["openai", "anthropic", "bedrock", "gemini"])
def test_a_phone_number_split_across_events_is_masked(stack: GuardStack, model: str) -> None:
    text = f"Our desk: {PHONE}, weekdays only."
    stack.mock(model).script(Reply(text=text, pieces=pieces_splitting(text, PHONE)))
    tee = Tee()
    stream = oai(stack, tee).chat.completions.create(model=model, messages=USER, stream=True)
    out = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert out == "Our desk: <PHONE>, weekdays only."
    assert b"415 555" not in tee.raw and b"555 2671" not in tee.raw


def _tool_reply(arguments: dict[str, Any]) -> Reply:
    encoded = orjson.dumps(arguments).decode()
    return Reply(
        text="",
        tool_calls=[ToolCall("send_mail", arguments, id="call_mail")],
        pieces=pieces_splitting(encoded, EMAIL),
    )


TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "send_mail",
            "parameters": {
                "type": "object",
                "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
            },
        },
    }
]
ARGUMENTS = {"to": EMAIL, "body": "The report is attached."}
MASKED_ARGUMENTS = {"to": "<EMAIL>", "body": "The report is attached."}


@pytest.mark.parametrize("model", PROVIDERS)
def test_tool_call_arguments_are_masked_in_streams(stack: GuardStack, model: str) -> None:
    stack.mock(model).script(_tool_reply(ARGUMENTS))
    tee = Tee()
    stream = oai(stack, tee).chat.completions.create(
        model=model, messages=USER, tools=TOOLS, stream=True
    )
    arguments: dict[int, str] = {}
    names: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                if call.function is not None:
                    arguments[call.index] = arguments.get(call.index, "") + (
                        call.function.arguments or ""
                    )
                    if call.function.name:
                        names[call.index] = call.function.name
    assert names == {0: "send_mail"}
    assert orjson.loads(arguments[0]) == MASKED_ARGUMENTS
    no_fragment(bytes(tee.raw), EMAIL)


@pytest.mark.parametrize("model", ["anthropic", "bedrock", "openai"])
def test_tool_use_input_is_masked_in_anthropic_streams(stack: GuardStack, model: str) -> None:
    stack.mock(model).script(_tool_reply(ARGUMENTS))
    tee = Tee()
    tools: Any = [
        {
            "name": "send_mail",
            "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}},
        }
    ]
    with ant(stack, tee).messages.stream(
        model=model, max_tokens=100, messages=USER, tools=tools
    ) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [u.input for u in uses] == [MASKED_ARGUMENTS]
    no_fragment(bytes(tee.raw), EMAIL)


@pytest.mark.parametrize("model", ["openai", "anthropic"])
def test_function_call_arguments_are_masked_in_responses_streams(
    stack: GuardStack, model: str
) -> None:
    stack.mock(model).script(_tool_reply(ARGUMENTS))
    tee = Tee()
    tools: Any = [
        {
            "type": "function",
            "name": "send_mail",
            "parameters": {"type": "object", "properties": {"to": {"type": "string"}}},
        }
    ]
    with oai(stack, tee).responses.stream(model=model, input="Mail it", tools=tools) as stream:
        deltas = "".join(
            e.delta for e in stream if e.type == "response.function_call_arguments.delta"
        )
        final = stream.get_final_response()
    assert orjson.loads(deltas) == MASKED_ARGUMENTS
    calls = [item for item in final.output if item.type == "function_call"]
    assert [orjson.loads(c.arguments) for c in calls] == [MASKED_ARGUMENTS]
    no_fragment(bytes(tee.raw), EMAIL)


@pytest.mark.parametrize("model", ["openai", "anthropic", "gemini"])
def test_plain_tool_calls_are_masked(stack: GuardStack, model: str) -> None:
    stack.mock(model).script(_tool_reply(ARGUMENTS))
    tee = Tee()
    chat = oai(stack, tee).chat.completions.create(model=model, messages=USER, tools=TOOLS)
    calls = chat.choices[0].message.tool_calls or []
    assert [orjson.loads(c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        MASKED_ARGUMENTS
    ]
    no_fragment(bytes(tee.raw), EMAIL)


def test_text_is_released_while_the_upstream_still_sends(stack: GuardStack) -> None:
    """Time to first token grows by at most the window: with the upstream stopped halfway,
    the client already has all but the last `WINDOW` characters of what was sent."""
    mock = stack.mock("gated")
    assert isinstance(mock, GatedMock)
    text = "".join(f"word{i:03d} " for i in range(100))  # 800 characters, no PII
    pieces = split_text(text, 100)
    mock.before = 60
    sent = sum(len(p) for p in pieces[: mock.before])
    mock.gate = gate = asyncio.Event()
    mock.timed_out = mock.finished = False
    mock.script(Reply(text=text, pieces=100))
    stream = oai(stack).chat.completions.create(model="gated", messages=USER, stream=True)
    received = ""
    opened_at = None
    for chunk in stream:
        received += "".join(c.delta.content or "" for c in chunk.choices)
        if opened_at is None and len(received) >= sent - WINDOW:
            opened_at = len(received)
            assert not mock.finished
            stack.loop.loop.call_soon_threadsafe(gate.set)
    assert not mock.timed_out, "the client got too little before the upstream went on"
    assert opened_at is not None and opened_at <= sent
    assert received == text
