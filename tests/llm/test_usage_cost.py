"""Usage and cost for plain and streamed answers: on the request context, in the metrics, and
the stream usage chunk Crossway asks for itself but hides from clients that did not ask."""

from __future__ import annotations

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crossway.config.llm import LlmBackendConfig
from crossway.llm.backend import LlmBackend
from crossway.llm.pricing import PriceTable
from crossway.llm.usage import StreamTail, Usage, usage_from_body
from crossway.proxy import client
from crossway.server.context import RequestContext
from tests.llm.harness import LlmStack
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks.base import Reply, running

HELLO = [{"role": "user", "content": "hello"}]


def sample(stack: LlmStack, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(stack.metrics()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def oai(stack: LlmStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key="x", max_retries=0)


def test_plain_answer_usage_and_cost_in_metrics(stack: LlmStack) -> None:
    stack.oa.default = Reply(input_tokens=1000, output_tokens=500, cached_tokens=200)
    before = sample(stack, "crossway_llm_cost_usd_total", model="priced")
    resp = oai(stack).chat.completions.create(model="priced", messages=HELLO)  # type: ignore[arg-type]
    assert resp.usage is not None and resp.usage.prompt_tokens == 1000
    # price override: input 1.0, cached 0.5, output 2.0 per 1M tokens
    expected = (800 * 1.0 + 200 * 0.5 + 500 * 2.0) / 1e6
    assert sample(stack, "crossway_llm_cost_usd_total", model="priced") - before == pytest.approx(
        expected
    )
    assert sample(stack, "crossway_llm_tokens_total", model="priced", kind="cached") >= 200


def test_stream_usage_is_hidden_from_clients_that_did_not_ask(stack: LlmStack) -> None:
    stack.oa.default = Reply(text="a b c", input_tokens=40, output_tokens=3)
    before = sample(stack, "crossway_llm_tokens_total", model="priced", kind="input")
    with oai(stack).chat.completions.with_streaming_response.create(
        model="priced",
        messages=HELLO,  # type: ignore[arg-type]
        stream=True,
    ) as raw:
        wire = b"".join(raw.iter_bytes())
    assert b'"usage"' not in wire  # not even the `"usage": null` include_usage adds
    assert wire.count(b"data: ") == 6 and wire.endswith(b"data: [DONE]\n\n")
    chunks = list(
        oai(stack).chat.completions.create(model="priced", messages=HELLO, stream=True)  # type: ignore[arg-type]
    )
    assert all(c.choices for c in chunks)  # no usage-only chunk
    assert all(getattr(c, "usage", None) is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "a b c"
    assert stack.oa.requests[-1].json["stream_options"] == {"include_usage": True}
    after = sample(stack, "crossway_llm_tokens_total", model="priced", kind="input")
    assert after - before == 80  # yet counted (two requests)


def test_stream_usage_is_kept_for_clients_that_asked(stack: LlmStack) -> None:
    stack.oa.default = Reply(text="a b c", input_tokens=41, output_tokens=3)
    before = sample(stack, "crossway_llm_tokens_total", model="priced", kind="input")
    chunks = list(
        oai(stack).chat.completions.create(
            model="priced",
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == 1 and usage_chunks[0].usage.prompt_tokens == 41  # type: ignore[union-attr]
    after = sample(stack, "crossway_llm_tokens_total", model="priced", kind="input")
    assert after - before == 41


def test_anthropic_passthrough_stream_usage_counted(stack: LlmStack) -> None:
    stack.ant.default = Reply(text="hi", input_tokens=70, output_tokens=5, cached_tokens=30)
    labels = {"model": "claude-3-5-sonnet-20241022", "provider": "ant"}
    before = sample(stack, "crossway_llm_tokens_total", kind="input", **labels)
    before_out = sample(stack, "crossway_llm_tokens_total", kind="output", **labels)
    c = anthropic.Anthropic(base_url=stack.gateway.url, api_key="x", max_retries=0)
    with c.messages.stream(
        model="claude-3-5-sonnet-20241022",
        max_tokens=20,
        messages=HELLO,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == 5
    # normalized input counts cache reads too (Anthropic's input_tokens does not)
    assert sample(stack, "crossway_llm_tokens_total", kind="input", **labels) - before == 100
    assert sample(stack, "crossway_llm_tokens_total", kind="output", **labels) - before_out == 5
    assert sample(stack, "crossway_llm_cost_usd_total", **labels) > 0


class Sink:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def __call__(self, message: dict) -> None:
        self.messages.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )


def receiver(body: bytes):  # type: ignore[no-untyped-def]
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        import asyncio

        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_and_cost_on_the_request_context(stream: bool) -> None:
    """In process: the backend itself, checking `ctx.attrs` that policies and logs read."""
    async with running(openai_mock()) as mock:
        mock.default = Reply(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=0)
        config = LlmBackendConfig.model_validate(
            {
                "type": "llm",
                "providers": {
                    "p": {"type": "openai", "base_url": mock.url + "/v1", "api_key": API_KEY}
                },
                "models": [{"name": "m", "targets": [{"provider": "p", "model": "gpt-4o-mini"}]}],
            }
        )
        backend = LlmBackend("llm", config, 1 << 20)
        await backend.start()
        ctx = RequestContext("r", "llm", "1", "/v1/chat/completions")
        body = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":%s}' % (
            b"true" if stream else b"false"
        )
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
        sink = Sink()
        try:
            await backend(scope, receiver(body), sink, ctx)
        finally:
            await backend.close()
            await client.close_session()  # the pool belongs to this test's event loop
    assert sink.messages[0]["status"] == 200
    assert ctx.attrs["llm.model"] == "m"
    assert ctx.attrs["llm.upstream_model"] == "gpt-4o-mini"
    assert ctx.attrs["llm.usage"]["input_tokens"] == 1_000_000
    assert ctx.attrs["llm.cost"] == pytest.approx(0.15 + 0.60)  # bundled gpt-4o-mini price
    if stream:
        assert b'"usage":{' not in sink.body  # the client did not ask for it


def test_stream_tail_finds_the_last_usage() -> None:
    tail = StreamTail()
    for i in range(500):
        tail.add(b'data: {"choices":[{"delta":{"content":"%d"}}],"usage":null}\n\n' % i)
    tail.add(b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}\n\n')
    tail.add(b"data: [DONE]\n\n")
    assert tail.usage() == Usage(input_tokens=9, output_tokens=2)
    assert usage_from_body(b'{"id":"x","usage":null}') is None


def test_price_lookup() -> None:
    table = PriceTable()
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=500_000)
    assert table.cost(usage, "gpt-4o-2024-08-06") == pytest.approx(0.5 * 2.5 + 0.5 * 1.25 + 10)
    assert table.lookup("us.anthropic.claude-3-5-haiku-20241022-v1:0") == table.lookup(
        "claude-3-5-haiku"
    )
    assert table.lookup("gpt-4o-mini-2024-07-18") != table.lookup("gpt-4o")
    assert table.cost(usage, "unknown-model") is None


def test_reasoning_tokens_at_their_own_price() -> None:
    from crossway.llm.pricing import Price

    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, reasoning_tokens=400_000)
    assert Price(input=1, output=4).cost(usage) == pytest.approx(5)  # reasoning at output
    assert Price(input=1, output=4, reasoning=2).cost(usage) == pytest.approx(1 + 0.6 * 4 + 0.4 * 2)
    custom = PriceTable({"my-model": Price(input=1, output=4, reasoning=2)})
    assert custom.cost(usage, "my-model") == pytest.approx(4.2)
