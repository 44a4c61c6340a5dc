"""The GenAI client metrics on `/metrics` after real OpenAI SDK calls through a real gateway:
token usage by type, cost, time to first token and per output token, labelled by model route,
provider, key name and team (parsed with prometheus_client's text parser)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Gateway, start_gateway
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks.base import MockServer, Reply

CALLER_KEY = "sk-caller-key-0123456789abcdef"
CONFIG = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
      - type: api_key
        keys: {{agent-one: {caller}}}
backends:
  llm:
    type: llm
    prices:
      priced: {{input: 1.0, output: 2.0}}
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {key}}}
    models:
      - name: priced
        targets: [{{provider: oa, model: upstream-priced}}]
"""


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[Gateway, MockServer]]:
    loop = MockLoop()
    oa = loop.start(openai_mock())
    try:
        config = CONFIG.format(oa=oa.url, key=API_KEY, caller=CALLER_KEY)
        with start_gateway(config) as gw:
            yield gw, oa
    finally:
        loop.close()


def _samples(gw: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(gw.admin_url + "/metrics") as resp:
        text = resp.read().decode()
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_gen_ai_metrics_after_sdk_calls(gateway: tuple[Gateway, MockServer]) -> None:
    gw, oa = gateway
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CALLER_KEY, max_retries=0)
    oa.default = Reply(input_tokens=12, output_tokens=7, cached_tokens=4, pieces=5)
    answer = client.chat.completions.create(
        model="priced", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 7
    stream = client.chat.completions.create(
        model="priced", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    samples = _samples(gw)
    labels = {"model": "priced", "provider": "oa", "key": "agent-one", "team": "-"}
    usage = "gen_ai_client_token_usage"
    assert _value(samples, usage + "_count", gen_ai_token_type="input", **labels) == 2
    assert _value(samples, usage + "_sum", gen_ai_token_type="input", **labels) == 24
    assert _value(samples, usage + "_sum", gen_ai_token_type="output", **labels) == 14
    assert _value(samples, usage + "_sum", gen_ai_token_type="cached", **labels) == 8
    assert _value(samples, usage + "_count", gen_ai_token_type="reasoning", **labels) == 0
    # The histogram's buckets are cumulative: 12 input tokens fall in the 16 bucket.
    assert _value(samples, usage + "_bucket", gen_ai_token_type="input", le="4.0", **labels) == 0
    assert _value(samples, usage + "_bucket", gen_ai_token_type="input", le="16.0", **labels) == 2

    cost = _value(samples, "gen_ai_client_cost_total", **labels)
    legacy = _value(
        samples, "crossway_llm_cost_usd_total", backend="llm", model="priced", provider="oa"
    )
    assert cost == pytest.approx(legacy) and cost > 0
    # input 12 (4 of them cached, at the input price: no cached price set) + output 7, per M
    assert cost == pytest.approx(2 * (12 * 1.0 + 7 * 2.0) / 1_000_000)

    route = {"model": "priced", "provider": "oa"}
    assert _value(samples, "gen_ai_server_time_to_first_token_count", **route) == 1  # streams
    assert _value(samples, "gen_ai_server_time_to_first_token_sum", **route) > 0
    assert _value(samples, "gen_ai_server_time_per_output_token_count", **route) == 1
    assert _value(samples, "gen_ai_server_time_per_output_token_sum", **route) >= 0
    # The existing metrics are still there.
    assert (
        _value(
            samples,
            "crossway_llm_tokens_total",
            backend="llm",
            model="priced",
            provider="oa",
            kind="input",
        )
        == 24
    )
