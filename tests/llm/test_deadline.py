"""`routing.deadline` and client disconnects during a retry back-off, through the gateway with
the official SDKs. The `tight` backend has a 1.5 s deadline; `patient` backs off for seconds."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from tests.helpers import wait_for
from tests.llm.harness import LlmStack
from tests.mocks.base import Reply

HELLO = [{"role": "user", "content": "hello"}]
DEADLINE = 1.5


def client(stack: LlmStack, prefix: str, **kw: float) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.gateway.url}/{prefix}/v1", api_key="x", max_retries=0, **kw
    )


def test_deadline_ends_a_slow_attempt_with_504(stack: LlmStack) -> None:
    stack.oa.default = Reply(delay=6.0, text="too late")
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        client(stack, "tight").chat.completions.create(model="tight-one", messages=HELLO)
    elapsed = time.monotonic() - started
    assert DEADLINE <= elapsed < DEADLINE + 2
    assert info.value.status_code == 504
    assert "routing deadline (1.5 s" in info.value.message
    assert info.value.code == "deadline_exceeded"


def test_deadline_applies_to_streams_before_their_first_chunk(stack: LlmStack) -> None:
    stack.oa.default = Reply(delay=6.0, text="too late")
    sdk = anthropic.Anthropic(base_url=stack.gateway.url + "/tight", api_key="x", max_retries=0)
    started = time.monotonic()
    with pytest.raises(anthropic.APIStatusError) as info:
        with sdk.messages.stream(model="tight-one", max_tokens=10, messages=HELLO) as stream:
            stream.get_final_message()
    assert time.monotonic() - started < DEADLINE + 2
    assert info.value.status_code == 504 and "deadline" in info.value.message


def test_retries_stop_at_the_deadline(stack: LlmStack) -> None:
    # 500s are retried with short back-offs until the deadline; no attempt starts after it.
    stack.oa.default = Reply(status=500, error_message="down", delay=0.4)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client(stack, "tight").chat.completions.create(model="tight-one", messages=HELLO)
    assert time.monotonic() - started < DEADLINE + 1
    assert info.value.status_code in (500, 504)
    assert 2 <= len(stack.oa.requests) <= 4


def test_a_retry_after_past_the_deadline_is_not_waited_for(stack: LlmStack) -> None:
    stack.oa.script(Reply(status=429, retry_after="3"))
    stack.oa.default = Reply(text="never reached")
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as info:
        client(stack, "tight").chat.completions.create(model="tight-one", messages=HELLO)
    assert time.monotonic() - started < 1.0
    assert info.value.response.headers["retry-after"] == "3"
    assert len(stack.oa.requests) == 1


def test_a_client_leaving_during_back_off_stops_the_retries(stack: LlmStack) -> None:
    stack.oc.default = Reply(status=500, error_message="down")
    log_before = stack.gateway.log().count("left during a retry back-off")
    with pytest.raises(openai.APITimeoutError):
        client(stack, "patient", timeout=0.5).chat.completions.create(
            model="patient-one", messages=HELLO
        )
    # The back-off is 3-6 s; the gateway notices the disconnect long before it ends.
    wait_for(
        lambda: stack.gateway.log().count("left during a retry back-off") > log_before,
        timeout=2.5,
        what="the gateway to notice the client left",
    )
    assert len(stack.oc.requests) == 1


def test_a_stream_served_after_a_back_off_still_streams(stack: LlmStack) -> None:
    # The back-off's disconnect watcher is gone before the stream's own starts listening.
    stack.oc.script(Reply(status=503))
    stack.oc.default = Reply(text="a b c d", pieces=4)
    stream = openai.OpenAI(
        base_url=stack.gateway.url + "/v1", api_key="x", max_retries=0
    ).chat.completions.create(model="retry-one", messages=HELLO, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "a b c d" and len(stack.oc.requests) == 2
