"""Context-window fallback and prompt enrichment through the gateway."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.llm.harness import LlmStack
from tests.mocks.base import Reply

LONG = "word " * 400  # ~2000 characters: about 500 tokens


def oai(stack: LlmStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key="x", max_retries=0)


def test_prompt_that_fits_stays_on_the_model(stack: LlmStack) -> None:
    oai(stack).chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
    assert [r.json["model"] for r in stack.oc.requests] == ["small"]
    assert stack.ob.requests == []


def test_long_prompt_goes_to_the_fallback_model(stack: LlmStack) -> None:
    stack.ob.default = Reply(text="from the big model")
    resp = oai(stack).chat.completions.create(
        model="small", messages=[{"role": "user", "content": LONG}]
    )
    assert resp.choices[0].message.content == "from the big model"
    assert stack.oc.requests == []
    assert [r.json["model"] for r in stack.ob.requests] == ["big"]


def test_upstream_too_long_error_also_falls_back(stack: LlmStack) -> None:
    stack.oc.script(
        Reply(
            status=400,
            error_type="context_length_exceeded",
            error_message="This model's maximum context length is 300 tokens.",
        )
    )
    stack.ob.default = Reply(text="big again")
    resp = oai(stack).chat.completions.create(
        model="small", messages=[{"role": "user", "content": "short but too long upstream"}]
    )
    assert resp.choices[0].message.content == "big again"
    assert len(stack.oc.requests) == 1 and len(stack.ob.requests) == 1


def test_too_long_without_fallback_is_a_400_in_the_callers_format(stack: LlmStack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai(stack).chat.completions.create(
            model="tiny-only", messages=[{"role": "user", "content": LONG}]
        )
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length is 50 tokens" in info.value.message
    c = anthropic.Anthropic(base_url=stack.gateway.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as ant:
        c.messages.create(
            model="tiny-only", max_tokens=10, messages=[{"role": "user", "content": LONG}]
        )
    assert ant.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "context length" in ant.value.body["error"]["message"]  # type: ignore[index]
    assert stack.oc.requests == []


def test_enrichment_adds_system_messages_defaults_and_overrides(stack: LlmStack) -> None:
    oai(stack).chat.completions.create(
        model="enriched",
        messages=[
            {"role": "system", "content": "Client system."},
            {"role": "user", "content": "hi"},
        ],
        temperature=0.5,
        max_tokens=5000,
    )
    sent = stack.oa.requests[-1].json
    assert [m["content"] for m in sent["messages"]] == [
        "You work for ACME.",
        "Client system.",
        "Answer in French.",
        "hi",
    ]
    assert sent["temperature"] == 0.5  # the client's value beats a default
    assert sent["seed"] == 7  # default filled in
    assert sent["max_tokens"] == 99  # override wins
    assert sent["model"] == "enriched"


def test_enrichment_applies_to_anthropic_clients_too(stack: LlmStack) -> None:
    c = anthropic.Anthropic(base_url=stack.gateway.url, api_key="x", max_retries=0)
    c.messages.create(model="enriched", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    sent = stack.oa.requests[-1].json
    assert sent["messages"][0]["content"] == "You work for ACME."
    assert sent["max_tokens"] == 99
