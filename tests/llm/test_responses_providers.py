"""The OpenAI Responses API in front of every translated provider (official `openai` SDK as
client), and usage and cost right for plain and streamed answers of every provider."""

from __future__ import annotations

import json

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.llm.harness import LlmStack
from tests.mocks.base import MockServer, Reply, ToolCall

PROVIDERS = {
    "gpt-4o": "oa",
    "claude-3-5-sonnet-20241022": "ant",
    "gemini-2.5-flash": "gem",
    "bedrock-haiku": "bed",
    "azure-gpt": "az",
    "vertex-gemini": "vx",
    "vertex-claude": "vx",
}
TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def oai(stack: LlmStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key="x", max_retries=0)


def mock(stack: LlmStack, model: str) -> MockServer:
    server: MockServer = getattr(stack, PROVIDERS[model])
    return server


def cost(stack: LlmStack, model: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(stack.metrics()):
        for s in family.samples:
            if s.name == "crossway_llm_cost_usd_total" and s.labels.get("model") == model:
                total += s.value
    return total


@pytest.mark.parametrize("model", list(PROVIDERS))
def test_responses_plain_with_usage_and_cost(stack: LlmStack, model: str) -> None:
    mock(stack, model).default = Reply(text="Plain answer", input_tokens=1000, output_tokens=100)
    before = cost(stack, model)
    resp = oai(stack).responses.create(model=model, input="hello", instructions="Be brief.")
    assert resp.output_text == "Plain answer"
    assert resp.usage is not None
    assert resp.usage.input_tokens == 1000 and resp.usage.output_tokens == 100
    assert cost(stack, model) > before  # every model here has a bundled price


@pytest.mark.parametrize("model", list(PROVIDERS))
def test_responses_stream_with_tool_call_usage_and_cost(stack: LlmStack, model: str) -> None:
    mock(stack, model).default = Reply(
        text="Looking",
        tool_calls=[ToolCall("get_weather", {"city": "Lima"})],
        input_tokens=500,
        output_tokens=50,
    )
    before = cost(stack, model)
    with oai(stack).responses.stream(model=model, input="weather?", tools=[TOOL]) as stream:  # type: ignore[list-item]
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "Looking"
    call = next(o for o in final.output if o.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Lima"}  # type: ignore[union-attr]
    assert final.usage is not None
    assert final.usage.input_tokens == 500 and final.usage.output_tokens == 50
    assert cost(stack, model) > before
