"""Failover, retries, cooldown and load balancing through the gateway, with injected faults and
the official `openai` SDK as client. Each test asserts what the client saw and which deployment
(mock) served."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from tests.llm.harness import LlmStack
from tests.mocks.base import Reply

HELLO = [{"role": "user", "content": "hello"}]


def client(stack: LlmStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key="caller", max_retries=0)


def ask(stack: LlmStack, model: str, **kw: object) -> str:
    resp = client(stack).chat.completions.create(model=model, messages=HELLO, **kw)  # type: ignore[call-overload]
    return str(resp.choices[0].message.content)


def test_500_fails_over_to_the_next_priority(stack: LlmStack) -> None:
    stack.oa.script(Reply(status=500))
    stack.ob.default = Reply(text="from ob")
    assert ask(stack, "failover") == "from ob"
    assert [r.json["model"] for r in stack.oa.requests] == ["fo-a"]
    assert [r.json["model"] for r in stack.ob.requests] == ["fo-b"]
    assert 'deployment="oa/fo-a",result="retry"' in stack.metrics()


def test_client_errors_are_not_retried_elsewhere(stack: LlmStack) -> None:
    stack.oa.script(Reply(status=400, error_message="bad temperature"))
    with pytest.raises(openai.BadRequestError) as info:
        ask(stack, "failover")
    assert "bad temperature" in info.value.message
    assert len(stack.oa.requests) == 1 and stack.ob.requests == []


def test_429_retry_after_is_honoured_on_a_single_deployment(stack: LlmStack) -> None:
    stack.oc.script(Reply(status=429, retry_after="0.4"))
    stack.oc.default = Reply(text="after waiting")
    started = time.monotonic()
    assert ask(stack, "retry-one") == "after waiting"
    assert time.monotonic() - started >= 0.4
    assert len(stack.oc.requests) == 2


def test_500s_are_retried_with_backoff_then_reported(stack: LlmStack) -> None:
    stack.oc.script(Reply(status=500), Reply(status=503))
    stack.oc.default = Reply(text="third time lucky")
    assert ask(stack, "retry-one") == "third time lucky"
    assert len(stack.oc.requests) == 3
    stack.oc.requests.clear()
    stack.oc.script(*[Reply(status=500, error_message="still down")] * 3)
    with pytest.raises(openai.InternalServerError) as info:
        ask(stack, "retry-one")
    assert "still down" in info.value.message
    assert len(stack.oc.requests) == 3  # one attempt + two retries


def test_connection_reset_fails_over(stack: LlmStack) -> None:
    stack.oa.script(Reply(reset=True))
    stack.ob.default = Reply(text="from ob after reset")
    assert ask(stack, "cut") == "from ob after reset"
    assert len(stack.oa.requests) == 1 and len(stack.ob.requests) == 1


def test_unreachable_deployment_fails_over(stack: LlmStack) -> None:
    stack.ob.default = Reply(text="live one")
    assert ask(stack, "dead-then-live") == "live one"


def test_slow_first_byte_times_out_and_fails_over(stack: LlmStack) -> None:
    stack.oa.script(Reply(delay=3.0, text="too late"))
    stack.ob.default = Reply(text="fast one")
    started = time.monotonic()
    assert ask(stack, "slow") == "fast one"
    assert time.monotonic() - started < 2.5
    assert [r.json["model"] for r in stack.ob.requests] == ["slow-b"]


def test_failing_deployment_is_ejected_for_the_cooldown(stack: LlmStack) -> None:
    stack.oa.script(Reply(status=502), Reply(status=502))
    stack.ob.default = Reply(text="from ob")
    for _ in range(4):
        assert ask(stack, "cooldown") == "from ob"
    # Two failures eject cd-a (cooldown.failures: 2); later requests skip it.
    assert len(stack.oa.requests) == 2
    assert len(stack.ob.requests) == 4
    assert 'crossway_llm_cooldowns_total{deployment="oa/cd-a"} 1.0' in stack.metrics()


def test_reset_before_the_first_byte_of_a_stream_fails_over(stack: LlmStack) -> None:
    stack.oa.script(Reply(reset=True))
    stack.ob.default = Reply(text="streamed from ob", pieces=3)
    stream = client(stack).chat.completions.create(
        model="stream-reset", messages=HELLO, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "streamed from ob"


def test_stream_cut_midway_ends_with_an_error_and_no_failover(stack: LlmStack) -> None:
    stack.oa.script(Reply(text="one two three four five six", pieces=6, cut_after=3))
    stack.ob.default = Reply(text="should not be used")
    stream = client(stack).chat.completions.create(model="midstream", messages=HELLO, stream=True)
    got = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            if chunk.choices:
                got += chunk.choices[0].delta.content or ""
    assert got and "one two three four five six".startswith(got)
    # What the client reads names the problem, not the HTTP library's internals.
    assert info.value.message.startswith("upstream stream ended unexpectedly"), info.value.message
    assert not any(w in info.value.message for w in ("aiohttp", "Payload", "Transfer", "Errno"))
    assert stack.ob.requests == []  # never after the first byte


def test_weighted_split(stack: LlmStack) -> None:
    async def run() -> None:
        c = openai.AsyncOpenAI(base_url=stack.gateway.url + "/v1", api_key="x", max_retries=0)
        await asyncio.gather(
            *[c.chat.completions.create(model="split", messages=HELLO) for _ in range(120)]  # type: ignore[arg-type]
        )
        await c.close()

    asyncio.run(run())
    a, b = len(stack.oa.requests), len(stack.ob.requests)
    assert a + b == 120
    assert 0.6 <= a / 120 <= 0.9  # weights 3:1


def test_least_in_flight_spreads_concurrent_requests(stack: LlmStack) -> None:
    stack.oa.default = Reply(delay=0.3)
    stack.ob.default = Reply(delay=0.3)

    async def run() -> None:
        c = openai.AsyncOpenAI(base_url=stack.gateway.url + "/v1", api_key="x", max_retries=0)
        await asyncio.gather(
            *[c.chat.completions.create(model="least", messages=HELLO) for _ in range(10)]  # type: ignore[arg-type]
        )
        await c.close()

    asyncio.run(run())
    assert len(stack.oa.requests) == 5 and len(stack.ob.requests) == 5
