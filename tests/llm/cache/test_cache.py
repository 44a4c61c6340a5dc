"""The LLM response cache end to end: a real `crossway serve` with the cache on, the official
`openai` and `anthropic` SDKs as callers, mock OpenAI and Anthropic upstreams that count calls.

Exact hits (JSON and streamed, across client APIs), semantic hits on paraphrases with the
similarity header, the safe-by-default rules (tools, temperature, multi-turn), Cache-Control,
TTL, broken streams and errors never stored, and the bad inputs: an embedding model that fails
to load, an unreachable Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from crossway.config.llm_cache import DEFAULT_SEMANTIC_THRESHOLD
from tests.helpers import Gateway, free_port, start_gateway, wait_for
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks import anthropic as anthropic_mock
from tests.mocks.base import MockServer, Reply, ToolCall

GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-20241022"

CONFIG = """
routes:
  - name: rules
    match: {{path: {{prefix: /rules/v1}}}}
    backend: rules
  - name: short
    match: {{path: {{prefix: /short/v1}}}}
    backend: short
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    routing: {{retry: {{retries: 0}}}}
    cache: {{semantic: {{}}}}
    providers: &providers
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
      ant: {{type: anthropic, base_url: "{ant}", api_key: {akey}}}
    models: &models
      - {{name: {gpt}, targets: [{{provider: oa}}]}}
      - {{name: {claude}, targets: [{{provider: ant}}]}}
  rules:
    type: llm
    cache: {{allow_tools: true, max_temperature: 1.0, max_user_turns: 3}}
    providers: *providers
    models: *models
  short:
    type: llm
    cache: {{ttl: 0.5}}
    providers: *providers
    models: *models
"""


@dataclass
class Stack:
    gateway: Gateway
    oa: MockServer
    ant: MockServer

    def openai(self, prefix: str = "") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + prefix + "/v1", api_key="x", max_retries=0)

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.gateway.url, api_key="x", max_retries=0)

    def calls(self, mock: MockServer | None = None) -> int:
        return len((mock or self.oa).requests)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    mocks = MockLoop()
    oa = mocks.start(openai_mock())
    ant = mocks.start(MockServer(anthropic_mock.handle))
    config = CONFIG.format(
        oa=oa.url, ant=ant.url, okey=API_KEY, akey=anthropic_mock.API_KEY, gpt=GPT, claude=CLAUDE
    )
    try:
        with start_gateway(config) as gw:
            yield Stack(gw, oa, ant)
            log = gw.log()
            assert "Traceback" not in log and "unexpected error" not in log, log
    finally:
        mocks.close()


@pytest.fixture(autouse=True)
def _reset(stack: Stack) -> None:
    for mock in (stack.oa, stack.ant):
        mock.replies.clear()
        mock.requests.clear()
        mock.default = Reply()


def unique(text: str) -> str:
    """A prompt no other test asks (entries outlive tests in the module's gateway)."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def ask(
    stack: Stack, content: str | list[Any], prefix: str = "", **kw: Any
) -> tuple[httpx.Headers, Any]:
    messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
    raw = stack.openai(prefix).chat.completions.with_raw_response.create(
        model=kw.pop("model", GPT), messages=messages, **kw
    )
    return raw.headers, raw.parse()


def sse_events(body: bytes) -> list[bytes]:
    return [e[6:] for e in body.split(b"\n\n") if e.startswith(b"data: ")]


# --- exact ------------------------------------------------------------------------------------


def test_exact_hit_is_served_without_the_upstream(stack: Stack) -> None:
    prompt = unique("Name three primes")
    stack.oa.default = Reply(text="2, 3 and 5", input_tokens=20, output_tokens=5)
    headers, first = ask(stack, prompt)
    assert headers["x-crossway-cache"] == "miss"
    assert first.choices[0].message.content == "2, 3 and 5"
    stack.oa.default = Reply(text="a different answer")
    headers, second = ask(stack, prompt)
    assert headers["x-crossway-cache"] == "hit"
    assert "x-crossway-cache-similarity" not in headers
    assert second.choices[0].message.content == "2, 3 and 5"
    assert second.choices[0].finish_reason == "stop"
    assert second.model == GPT
    assert second.usage is not None and second.usage.total_tokens == 25
    assert stack.calls() == 1  # the upstream was asked once


def test_the_key_holds_the_model_system_prompt_and_parameters(stack: Stack) -> None:
    prompt = unique("Say hi")
    ask(stack, prompt)
    system = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": prompt}]
    assert ask(stack, system)[0]["x-crossway-cache"] == "miss"
    assert ask(stack, prompt, max_tokens=5)[0]["x-crossway-cache"] == "miss"
    assert ask(stack, prompt, seed=7)[0]["x-crossway-cache"] == "miss"
    assert ask(stack, prompt, temperature=0)[0]["x-crossway-cache"] == "miss"
    assert ask(stack, system)[0]["x-crossway-cache"] == "hit"
    assert ask(stack, prompt)[0]["x-crossway-cache"] == "hit"
    assert stack.calls() == 5


def test_a_stream_is_replayed_as_a_well_formed_stream(stack: Stack) -> None:
    prompt = unique("Count to three")
    stack.oa.default = Reply(text="one, two, three", pieces=3)
    body = {"model": GPT, "messages": [{"role": "user", "content": prompt}], "stream": True}
    with httpx.Client(base_url=stack.gateway.url) as client:
        first = client.post("/v1/chat/completions", json=body)
        assert first.headers["x-crossway-cache"] == "miss"
        stack.oa.default = Reply(text="something else")
        second = client.post("/v1/chat/completions", json=body)
    assert second.headers["x-crossway-cache"] == "hit"
    assert second.headers["content-type"].startswith("text/event-stream")
    events = sse_events(second.content)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == GPT for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in chunks[-1]  # the client did not ask for usage
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "one, two, three"
    assert stack.calls() == 1

    # The openai SDK reads the replayed stream, usage chunk included when it asks.
    stream = stack.openai().chat.completions.create(
        model=GPT,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts = list(stream)
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == text
    assert parts[-1].usage is not None and parts[-1].usage.total_tokens == 19
    assert stack.calls() == 1


def test_a_stream_entry_answers_json_and_a_json_entry_answers_a_stream(stack: Stack) -> None:
    streamed = unique("Streamed first")
    stack.oa.default = Reply(text="from a stream")
    client = stack.openai()
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": streamed}], stream=True
        )
        if c.choices
    )
    assert text == "from a stream"
    headers, answer = ask(stack, streamed)
    assert headers["x-crossway-cache"] == "hit"
    assert answer.choices[0].message.content == "from a stream"
    assert answer.usage is not None and answer.usage.prompt_tokens == 12  # the relay's count

    whole = unique("JSON first")
    stack.oa.default = Reply(text="from JSON")
    ask(stack, whole)
    raw = client.chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": whole}], stream=True
    )
    assert raw.headers["x-crossway-cache"] == "hit"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == (
        "from JSON"
    )
    assert stack.calls() == 2


def test_tool_calls_replay_when_tools_are_allowed(stack: Stack) -> None:
    prompt = unique("Weather in Paris?")
    tools: Any = [
        {
            "type": "function",
            "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    stack.oa.default = Reply(text="", tool_calls=[ToolCall("weather", {"city": "Paris"})])
    assert ask(stack, prompt, tools=tools)[0]["x-crossway-cache"] == "bypass"  # default: off
    assert ask(stack, prompt, tools=tools)[0]["x-crossway-cache"] == "bypass"
    assert stack.calls() == 2

    ask(stack, prompt, prefix="/rules", tools=tools)
    for stream in (False, True):
        raw = stack.openai("/rules").chat.completions.with_raw_response.create(
            model=GPT, messages=[{"role": "user", "content": prompt}], tools=tools, stream=stream
        )
        assert raw.headers["x-crossway-cache"] == "hit"
        if stream:
            chunks = [c for c in raw.parse() if c.choices]
            call = chunks[-2].choices[0].delta.tool_calls[0]  # type: ignore[index]
            assert call.function.name == "weather"  # type: ignore[union-attr]
            assert orjson.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
        else:
            message = raw.parse().choices[0].message
            assert message.tool_calls is not None
            assert message.tool_calls[0].function.name == "weather"
            assert orjson.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert stack.calls() == 3


# --- the rules ----------------------------------------------------------------------------------


def test_temperature_and_multi_turn_are_not_cached_by_default(stack: Stack) -> None:
    prompt = unique("Tell a joke")
    turns = [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": "Why did the chicken..."},
        {"role": "user", "content": "Go on"},
    ]
    for _ in range(2):
        assert ask(stack, prompt, temperature=0.7)[0]["x-crossway-cache"] == "bypass"
        assert ask(stack, turns)[0]["x-crossway-cache"] == "bypass"
    assert stack.calls() == 4
    # With the rules: cached.
    for expected in ("miss", "hit"):
        assert ask(stack, prompt, prefix="/rules", temperature=0.7)[0]["x-crossway-cache"] == (
            expected
        )
        assert ask(stack, turns, prefix="/rules")[0]["x-crossway-cache"] == expected
    assert ask(stack, prompt, prefix="/rules", temperature=1.5)[0]["x-crossway-cache"] == ("bypass")
    assert stack.calls() == 7


def test_cache_control_no_cache_and_no_store(stack: Stack) -> None:
    prompt = unique("Cache control")
    stack.oa.default = Reply(text="first")
    no_store = {"cache-control": "no-store"}
    assert ask(stack, prompt, extra_headers=no_store)[0]["x-crossway-cache"] == "bypass"
    stack.oa.default = Reply(text="second")
    headers, answer = ask(stack, prompt)
    assert headers["x-crossway-cache"] == "miss"  # no-store stored nothing
    stack.oa.default = Reply(text="third")
    headers, answer = ask(stack, prompt, extra_headers={"cache-control": "no-cache"})
    assert headers["x-crossway-cache"] == "miss" and answer.choices[0].message.content == "third"
    headers, answer = ask(stack, prompt)  # no-cache skipped the lookup, and stored its answer
    assert headers["x-crossway-cache"] == "hit" and answer.choices[0].message.content == "third"
    assert stack.calls() == 3


def test_entries_expire_after_the_ttl(stack: Stack) -> None:
    prompt = unique("Short-lived")
    ask(stack, prompt, prefix="/short")
    assert ask(stack, prompt, prefix="/short")[0]["x-crossway-cache"] == "hit"
    assert stack.calls() == 1
    wait_for(
        lambda: ask(stack, prompt, prefix="/short")[0]["x-crossway-cache"] == "miss",
        timeout=10,
        what="the entry to expire",
    )
    assert stack.calls() == 2


def test_errors_and_broken_streams_are_never_stored(stack: Stack) -> None:
    prompt = unique("Fragile")
    stack.oa.script(Reply(status=500, error_message="boom"))
    with pytest.raises(openai.InternalServerError):
        ask(stack, prompt)
    body = {"model": GPT, "messages": [{"role": "user", "content": prompt}], "stream": True}
    with httpx.Client(base_url=stack.gateway.url) as client:
        stack.oa.script(Reply(stream_error=True))
        broken = client.post("/v1/chat/completions", json=body)
        assert b"error" in broken.content
        stack.oa.script(Reply(cut_after=2))
        client.post("/v1/chat/completions", json=body)
    stack.oa.default = Reply(text="whole")
    headers, answer = ask(stack, prompt)
    assert headers["x-crossway-cache"] == "miss" and answer.choices[0].message.content == "whole"
    assert ask(stack, prompt)[0]["x-crossway-cache"] == "hit"
    assert stack.calls() == 4


# --- other client APIs ----------------------------------------------------------------------


def test_anthropic_messages_hits_json_and_stream(stack: Stack) -> None:
    prompt = unique("Describe the sea")
    stack.ant.default = Reply(text="The sea is wide.")
    client = stack.anthropic()
    first = client.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": prompt}]
    )
    assert first.headers["x-crossway-cache"] == "miss"
    stack.ant.default = Reply(text="changed")
    raw = client.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": prompt}]
    )
    assert raw.headers["x-crossway-cache"] == "hit"
    message = raw.parse()
    assert message.type == "message" and message.model == CLAUDE
    assert message.content[0].text == "The sea is wide."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    with client.messages.stream(
        model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        assert "".join(stream.text_stream) == "The sea is wide."
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert stack.calls(stack.ant) == 1


def test_one_entry_serves_every_client_api(stack: Stack) -> None:
    prompt = unique("Why is the sky blue")
    stack.oa.default = Reply(text="Rayleigh scattering.")
    ask(stack, prompt)
    raw = stack.openai().responses.with_raw_response.create(model=GPT, input=prompt)
    assert raw.headers["x-crossway-cache"] == "hit"
    assert raw.parse().output_text == "Rayleigh scattering."
    events = list(stack.openai().responses.create(model=GPT, input=prompt, stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Rayleigh scattering."  # type: ignore[union-attr]
    with httpx.Client(base_url=stack.gateway.url) as client:
        reply = client.post(
            "/v1/messages",
            json={
                "model": GPT,
                "max_tokens": 50,
                "messages": [{"role": "user", "content": prompt}],
            },
        )
    assert reply.headers["x-crossway-cache"] == "miss"  # max_tokens is part of the key
    assert stack.calls() == 2


def test_a_responses_stream_is_stored_and_replayed(stack: Stack) -> None:
    prompt = unique("Responses stream")
    stack.oa.default = Reply(text="streamed response")
    list(stack.openai().responses.create(model=GPT, input=prompt, stream=True))
    stack.oa.default = Reply(text="other")
    raw = stack.openai().responses.with_raw_response.create(model=GPT, input=prompt)
    assert raw.headers["x-crossway-cache"] == "hit"
    assert raw.parse().output_text == "streamed response"
    assert stack.calls() == 1


# --- semantic ---------------------------------------------------------------------------------


def test_a_paraphrase_is_a_semantic_hit(stack: Stack) -> None:
    stack.oa.default = Reply(text="Paris.")
    headers, _ = ask(stack, "What is the capital of France?")
    assert headers["x-crossway-cache"] == "miss"
    stack.oa.default = Reply(text="not from the cache")
    headers, answer = ask(stack, "What's France's capital?")
    assert headers["x-crossway-cache"] == "hit"
    similarity = float(headers["x-crossway-cache-similarity"])
    assert DEFAULT_SEMANTIC_THRESHOLD <= similarity <= 1.0
    assert len(headers["x-crossway-cache-similarity"].split(".")[1]) == 3
    assert answer.choices[0].message.content == "Paris."
    headers, answer = ask(stack, "What is the capital of Germany?")
    assert headers["x-crossway-cache"] == "miss"
    assert answer.choices[0].message.content == "not from the cache"
    # The system prompt is part of the partition: the same question under another is a miss.
    system = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "What's France's capital?"},
    ]
    assert ask(stack, system)[0]["x-crossway-cache"] == "miss"
    assert stack.calls() == 3
    metrics = httpx.get(stack.gateway.admin_url + "/metrics").text
    assert 'crossway_llm_cache_requests_total{backend="llm",kind="semantic",result="hit"}' in (
        metrics
    )
    assert "crossway_llm_cache_saved_tokens_total" in metrics
    assert 'crossway_llm_cache_entries{backend="llm"}' in metrics


# --- bad input ----------------------------------------------------------------------------------

BAD_INPUT = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    cache:
      redis_url: "redis://127.0.0.1:{redis_port}/0"
      redis_timeout: 0.2
      semantic: {{embedding: {{wordllama_dir: "{missing}"}}}}
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
"""


def test_a_broken_embedding_model_and_a_down_redis_leave_the_exact_cache(
    stack: Stack, tmp_path: Any
) -> None:
    config = BAD_INPUT.format(
        redis_port=free_port(), missing=tmp_path / "nowhere", oa=stack.oa.url, okey=API_KEY
    )
    with start_gateway(config) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        prompt = [{"role": "user", "content": unique("Still served")}]
        for expected in ("miss", "hit", "hit"):
            raw = client.chat.completions.with_raw_response.create(model=GPT, messages=prompt)
            assert raw.headers["x-crossway-cache"] == expected
            assert raw.parse().choices[0].message.content == "Hello from the mock!"
        log = gw.log()
    assert log.count("the semantic cache is off: its embedding model failed to load") == 1
    assert log.count("llm cache: Redis") == 1  # unreachable, said once
    assert "Traceback" not in log
    assert stack.calls() == 1


GUARDED = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
      - type: guardrails
        name: pii
        detectors:
          - {{type: pii, entities: [email], request: mask, response: mask}}
backends:
  llm:
    type: llm
    cache: {{}}
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
"""


def test_guarded_routes_key_the_masked_prompt_and_keep_the_masked_answer(stack: Stack) -> None:
    with start_gateway(GUARDED.format(oa=stack.oa.url, okey=API_KEY)) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        stack.oa.default = Reply(text="Write to bob@example.com", pieces=4)
        tag = uuid.uuid4().hex[:8]

        def ask_guarded(email: str, stream: bool = False) -> tuple[str, str]:
            messages: Any = [{"role": "user", "content": f"Who is {email}? [{tag}]"}]
            raw = client.chat.completions.with_raw_response.create(
                model=GPT, messages=messages, stream=stream
            )
            if stream:
                text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
            else:
                text = str(raw.parse().choices[0].message.content)
            return raw.headers["x-crossway-cache"], text

        assert ask_guarded("alice@example.com", stream=True) == ("miss", "Write to <EMAIL>")
        assert b"alice@example.com" not in stack.oa.requests[-1].body
        # Another address masks to the same prompt: the same entry, and the masked answer.
        assert ask_guarded("carol@example.org") == ("hit", "Write to <EMAIL>")
        assert ask_guarded("dave@example.net", stream=True) == ("hit", "Write to <EMAIL>")
        assert stack.calls() == 1
