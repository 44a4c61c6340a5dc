"""examples/guardrails.yaml runs as its header says, with the official SDKs as callers: answers
are masked (streamed and not), card numbers are refused on the LLM and the MCP route, and
answers come from the exact and the semantic cache with the headers the issue names."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import anthropic
import openai
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcp import Client
from tests.helpers import ROOT, free_port, http_status, start_gateway, wait_for
from tests.mcp.conftest import spawn, stop

CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def gateway(sample_openai_module: str) -> Iterator[str]:
    mcp_port = free_port()
    mcp = spawn(
        [sys.executable, "-m", "crossway.samples.mcp_server", "--port", str(mcp_port)], mcp_port
    )
    env = {"OPENAI_BASE_URL": sample_openai_module, "MCP_URL": f"http://127.0.0.1:{mcp_port}/mcp"}
    text = (ROOT / "examples" / "guardrails.yaml").read_text()
    try:
        with start_gateway(text, env=env) as gw:
            wait_for(lambda: http_status(gw.url + "/v1/models") == 200, what="gateway")
            yield gw.url
    finally:
        stop(mcp)


def _openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def _unique() -> str:
    return uuid.uuid4().hex[:8]  # every test asks its own question: no cache hit from another


def test_a_streamed_answer_is_masked_with_the_phone_split_across_events(gateway: str) -> None:
    prompt = f"[{_unique()}] call +1 415 555 2671 or write to jane.doe@example.com"
    stream = _openai(gateway).chat.completions.create(
        model="sample-model", messages=[{"role": "user", "content": prompt}], stream=True
    )
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    text = "".join(deltas)
    assert "<PHONE>" in text and "<EMAIL>" in text
    assert "2671" not in text and "jane" not in text and "example.com" not in text


def test_a_plain_answer_is_masked(gateway: str) -> None:
    answer = _openai(gateway).chat.completions.create(
        model="sample-model",
        messages=[{"role": "user", "content": f"[{_unique()}] mail ops@example.org"}],
    )
    assert answer.choices[0].message.content is not None
    assert answer.choices[0].message.content.endswith("mail <EMAIL>")


def test_a_card_number_is_refused_in_the_callers_format(gateway: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _openai(gateway).chat.completions.create(
            model="sample-model", messages=[{"role": "user", "content": f"card {CARD}"}]
        )
    assert err.value.code == "guardrail_blocked"
    assert "pii" in err.value.message and "4111" not in err.value.message
    client = anthropic.Anthropic(base_url=gateway, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as aerr:
        client.messages.create(
            model="sample-model",
            max_tokens=64,
            messages=[{"role": "user", "content": f"card {CARD}"}],
        )
    assert aerr.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "4111" not in str(aerr.value.body)


async def test_mcp_tool_calls_are_guarded_both_ways(gateway: str) -> None:
    async with Client(streamable_http_client(gateway + "/mcp"), mode="legacy") as client:
        echoed = await client.call_tool("echo", {"text": "reach me at jane@example.com"})
        assert echoed.content[0].text == "reach me at <EMAIL>"  # type: ignore[union-attr]
        with pytest.raises(MCPError) as err:
            await client.call_tool("echo", {"text": f"card {CARD}"})
        assert "guardrail" in str(err.value) and "4111" not in str(err.value)


def test_the_same_request_again_is_an_exact_hit(gateway: str) -> None:
    messages = [{"role": "user", "content": f"[{_unique()}] what is a gateway?"}]
    client = _openai(gateway)
    first = client.chat.completions.with_raw_response.create(
        model="sample-model", messages=messages
    )
    assert first.headers["x-crossway-cache"] == "miss"
    again = client.chat.completions.with_raw_response.create(
        model="sample-model", messages=messages
    )
    assert again.headers["x-crossway-cache"] == "hit"
    assert "x-crossway-cache-similarity" not in again.headers
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content


def test_a_cached_answer_replays_as_a_stream(gateway: str) -> None:
    messages = [{"role": "user", "content": f"[{_unique()}] tell me about streams"}]
    client = _openai(gateway)
    with client.chat.completions.with_streaming_response.create(
        model="sample-model", messages=messages, stream=True
    ) as first:
        assert first.headers["x-crossway-cache"] == "miss"
        text = "".join(c.choices[0].delta.content or "" for c in first.parse() if c.choices)
    with client.chat.completions.with_streaming_response.create(
        model="sample-model", messages=messages, stream=True
    ) as again:
        assert again.headers["x-crossway-cache"] == "hit"
        chunks = list(again.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "stop"


def test_a_paraphrase_is_a_semantic_hit(gateway: str) -> None:
    tag = _unique()
    client = _openai(gateway)
    first = client.chat.completions.with_raw_response.create(
        model="sample-model",
        messages=[{"role": "user", "content": f"{tag}: What is the capital city of France?"}],
    )
    assert first.headers["x-crossway-cache"] == "miss"
    again = client.chat.completions.with_raw_response.create(
        model="sample-model",
        messages=[{"role": "user", "content": f"{tag}: what's the capital of France?"}],
    )
    assert again.headers["x-crossway-cache"] == "hit"
    similarity = float(again.headers["x-crossway-cache-similarity"])
    assert 0.86 <= similarity < 1.0
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content


def test_tool_calls_are_not_cached_by_default(gateway: str) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    messages = [{"role": "user", "content": f"[{_unique()}] use the tool"}]
    client = _openai(gateway)
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="sample-model",
            messages=messages,
            tools=tools,  # type: ignore[arg-type]
        )
        assert raw.headers.get("x-crossway-cache") != "hit"
