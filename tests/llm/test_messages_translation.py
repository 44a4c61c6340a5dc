"""Anthropic Messages details that need translating for other providers, with the official
`anthropic` SDK through the gateway: `stop_sequence` and `thinking`."""

from __future__ import annotations

import anthropic
import pytest

from tests.llm.harness import LlmStack
from tests.mocks.base import Reply

HELLO = [{"role": "user", "content": "count to ten"}]


def client(stack: LlmStack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.gateway.url, api_key="x", max_retries=0)


@pytest.mark.parametrize("model", ["bedrock-haiku", "vertex-claude"])
def test_stop_sequence_is_reported(stack: LlmStack, model: str) -> None:
    for mock in (stack.bed, stack.vx):
        mock.default = Reply(text="1 2 3", stop="stop_sequence")
    msg = client(stack).messages.create(
        model=model, max_tokens=50, messages=HELLO, stop_sequences=["4"]
    )
    assert msg.stop_reason == "stop_sequence"
    with client(stack).messages.stream(
        model=model, max_tokens=50, messages=HELLO, stop_sequences=["4"]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence"
    assert "".join(b.text for b in final.content if b.type == "text") == "1 2 3"


def test_end_turn_stays_end_turn(stack: LlmStack) -> None:
    stack.bed.default = Reply(text="done")
    msg = client(stack).messages.create(model="bedrock-haiku", max_tokens=50, messages=HELLO)
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None


@pytest.mark.parametrize(
    ("budget", "effort", "gemini_budget"),
    [(1024, "low", 1024), (8000, "medium", 8192), (16384, "high", 24576)],
)
def test_thinking_becomes_the_providers_reasoning_setting(
    stack: LlmStack, budget: int, effort: str, gemini_budget: int
) -> None:
    thinking = {"type": "enabled", "budget_tokens": budget}
    client(stack).messages.create(
        model="gpt-4o",
        max_tokens=budget + 100,
        messages=HELLO,
        thinking=thinking,  # type: ignore[arg-type]
    )
    assert stack.oa.requests[-1].json["reasoning_effort"] == effort
    assert "thinking" not in stack.oa.requests[-1].json
    client(stack).messages.create(
        model="gemini-2.5-flash",
        max_tokens=budget + 100,
        messages=HELLO,
        thinking=thinking,  # type: ignore[arg-type]
    )
    config = stack.gem.requests[-1].json["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": gemini_budget, "includeThoughts": True}


def test_thinking_disabled_or_absent_sends_nothing(stack: LlmStack) -> None:
    client(stack).messages.create(
        model="gpt-4o",
        max_tokens=100,
        messages=HELLO,
        thinking={"type": "disabled"},
    )
    assert "reasoning_effort" not in stack.oa.requests[-1].json


def test_thinking_with_a_bad_budget_is_a_400(stack: LlmStack) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client(stack).messages.create(
            model="gpt-4o",
            max_tokens=100,
            messages=HELLO,
            thinking={"type": "enabled", "budget_tokens": "lots"},  # type: ignore[typeddict-item]
        )
    assert "thinking.budget_tokens" in info.value.message


def test_a_cut_stream_ends_with_a_plain_error_event(stack: LlmStack) -> None:
    stack.oa.script(Reply(text="one two three four five six", pieces=6, cut_after=3))
    with pytest.raises(anthropic.APIStatusError) as info:
        with client(stack).messages.stream(
            model="midstream", max_tokens=50, messages=HELLO
        ) as stream:
            for _ in stream:
                pass
    message = str(info.value.body)
    assert "upstream stream ended unexpectedly" in message, message
    assert not any(w in message for w in ("aiohttp", "Payload", "Transfer", "Errno"))
    assert stack.ob.requests == []
