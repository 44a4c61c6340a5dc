"""Inference pools through a real `crossway serve`, with the official openai and anthropic SDKs,
in front of simulated model servers: the example config, prefix and LoRA affinity, failover
before the first byte, an endpoint that dies and comes back, garbage metrics, load shedding,
nothing ready, and an external endpoint picker over ext_proc."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import anthropic
import openai
import pytest

from tests.helpers import ROOT, Gateway, http_status, start_gateway, wait_for
from tests.inference.epp_server import Behaviour, EppServer
from tests.inference.sims import Sim, sims

FAST: tuple[str, ...] = ("--time-factor", "0.05")
SYSTEM = "You are the billing assistant of Example Corp. Answer briefly and politely. " * 30
DESTINATION = "x-gateway-destination-endpoint"


def _pool_config(endpoints: list[Sim], pool_extra: str = "", models: str | None = None) -> str:
    urls = ",".join(s.url for s in endpoints)
    models = models or "      - name: sim-model\n        targets: [{provider: pool}]\n"
    return f"""
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: models
backends:
  models:
    type: llm
    routing:
      retry: {{retries: 0}}
    providers:
      pool:
        type: inference_pool
        timeouts: {{connect: 1, first_byte: 10, idle: 10}}
        pool:
          endpoints: "{urls}"
          metrics: {{interval: 0.05, stale_after: 1.0, unready_after: 2}}
{pool_extra}
    models:
{models}"""


@contextmanager
def _gateway(config: str, **env: str) -> Iterator[tuple[Gateway, openai.OpenAI]]:
    with start_gateway(config, env=env) as gw:
        yield gw, openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def _ask(client: openai.OpenAI, system: str, question: str, **extra: object) -> tuple[str, object]:
    raw = client.chat.completions.with_raw_response.create(
        model="sim-model",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=4,
        **extra,  # type: ignore[arg-type]
    )
    return raw.headers[DESTINATION], raw.parse()


def test_example_config_serves_streams_and_names_the_endpoint() -> None:
    with sims(2, *FAST) as pool:
        text = (ROOT / "examples" / "inference.yaml").read_text()
        endpoints = ",".join(s.url for s in pool)
        with start_gateway(text, env={"CROSSWAY_POOL_ENDPOINTS": endpoints}) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
            names = {s.name for s in pool}
            first, answer = _ask(client, SYSTEM, "What is my balance?")
            assert first in names
            assert answer.usage is not None and answer.usage.prompt_tokens > 100  # type: ignore[attr-defined]
            # the same system prompt goes to the same endpoint, which now has it cached
            for i in range(4):
                again, answer = _ask(client, SYSTEM, f"Question {i}?")
                assert again == first
                details = answer.usage.prompt_tokens_details  # type: ignore[attr-defined]
                assert details is not None and details.cached_tokens and details.cached_tokens > 100
            # streamed: the header is on the stream's response too, usage at the end
            with client.chat.completions.with_streaming_response.create(
                model="sim-model",
                messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "s"}],
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            ) as resp:
                assert resp.headers[DESTINATION] == first
                chunks = list(resp.parse())
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
            text_out = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text_out
            # the Anthropic API reaches the pool too (translated), with the same header
            claude = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
            raw = claude.messages.with_raw_response.create(
                model="sim-model",
                max_tokens=4,
                system=SYSTEM,
                messages=[{"role": "user", "content": "hello"}],
            )
            assert raw.headers[DESTINATION] == first
            assert raw.parse().usage.output_tokens == 4


def test_different_prefixes_spread_over_the_pool() -> None:
    with sims(2, *FAST) as pool, _gateway(_pool_config(pool)) as (_gw, client):
        used = Counter(_ask(client, f"Tenant {i}: " + SYSTEM, "hi")[0] for i in range(12))
        assert set(used) == {s.name for s in pool}


def test_failover_to_the_next_endpoint_before_the_first_byte() -> None:
    extra = "          scheduler: {scorers: {}, picker: round_robin}\n"
    with sims(2, *FAST) as pool, _gateway(_pool_config(pool, extra)) as (gw, client):
        broken, healthy = pool
        broken.fault(chat="500")
        for i in range(6):
            served, _ = _ask(client, SYSTEM, f"q{i}")
            assert served == healthy.name
        # streams too: the failed pick is retried before anything reached the client
        with client.chat.completions.with_streaming_response.create(
            model="sim-model",
            messages=[{"role": "user", "content": "stream"}],
            max_tokens=3,
            stream=True,
        ) as resp:
            assert resp.headers[DESTINATION] == healthy.name
            assert list(resp.parse())
        assert "trying the next" in gw.log()


def test_an_endpoint_that_dies_mid_run_and_comes_back() -> None:
    extra = "          scheduler: {scorers: {}, picker: round_robin, endpoint_cooldown: 0.2}\n"
    with sims(2, *FAST) as pool, _gateway(_pool_config(pool, extra)) as (_gw, client):
        dying, staying = pool
        assert {_ask(client, SYSTEM, f"q{i}")[0] for i in range(4)} == {dying.name, staying.name}
        dying.kill()
        # every request still succeeds: a refused connection goes to the next endpoint
        for i in range(8):
            assert _ask(client, SYSTEM, f"after {i}")[0] == staying.name
        # back on the same port: the next successful scrape brings it back into the pool
        back = Sim(*FAST, port=dying.port).start()
        try:
            wait_for(
                lambda: _ask(client, SYSTEM, "back?")[0] == dying.name,
                timeout=10,
                what="the restarted endpoint to get traffic again",
            )
        finally:
            back.stop()


def test_garbage_metrics_keep_the_endpoint_serving() -> None:
    with sims(1, *FAST, "--metrics-garbage") as bad, sims(1, *FAST) as good:
        pool = [*bad, *good]
        extra = "          scheduler: {scorers: {}, picker: round_robin}\n"
        with _gateway(_pool_config(pool, extra)) as (gw, client):
            served = Counter(_ask(client, SYSTEM, f"q{i}")[0] for i in range(6))
            assert served[bad[0].name] == 3 and served[good[0].name] == 3
            wait_for(lambda: "no known metric names" in gw.log(), timeout=5, what="the warning")
            assert gw.log().count("no known metric names") == 1  # once, not per scrape


def test_sheddable_requests_get_429_when_the_pool_is_saturated() -> None:
    # queue_depth 0: any endpoint with fresh metrics counts as saturated
    extra = "          scheduler: {saturation: {queue_depth: 0}}\n"
    with sims(2, *FAST) as pool, _gateway(_pool_config(pool, extra)) as (_gw, client):
        wait_for(lambda: _shed(client), timeout=5, what="fresh metrics and shedding")
        with pytest.raises(openai.RateLimitError) as info:
            _ask(client, SYSTEM, "q", extra_headers={"x-crossway-priority": "-1"})
        assert info.value.code == "pool_saturated"
        # critical requests are still served; a client cannot raise its priority
        assert _ask(client, SYSTEM, "q")[0] in {s.name for s in pool}
        assert _ask(client, SYSTEM, "q", extra_headers={"x-crossway-priority": "5"})[0]
        with pytest.raises(openai.BadRequestError) as bad:
            _ask(client, SYSTEM, "q", extra_headers={"x-crossway-priority": "high"})
        assert bad.value.code == "invalid_priority"


def _shed(client: openai.OpenAI) -> bool:
    try:
        _ask(client, SYSTEM, "probe", extra_headers={"x-crossway-priority": "-1"})
    except openai.RateLimitError:
        return True
    return False


def test_a_pool_whose_priority_is_below_zero_is_sheddable() -> None:
    extra = "          priority: -1\n          scheduler: {saturation: {queue_depth: 0}}\n"
    with sims(1, *FAST) as pool, _gateway(_pool_config(pool, extra)) as (_gw, client):
        wait_for(lambda: _saturated_plain(client), timeout=5, what="shedding")


def _saturated_plain(client: openai.OpenAI) -> bool:
    try:
        _ask(client, SYSTEM, "probe")
    except openai.RateLimitError as exc:
        return exc.code == "pool_saturated"
    return False


def test_nothing_ready_is_a_503_in_each_callers_format() -> None:
    dead = [Sim(), Sim()]  # ports nobody listens on
    with _gateway(_pool_config(dead)) as (gw, client):
        wait_for(
            lambda: _status_of(client) == 503, timeout=10, what="the pool to have no ready endpoint"
        )
        with pytest.raises(openai.InternalServerError) as info:
            _ask(client, SYSTEM, "q")
        assert info.value.status_code == 503 and info.value.code == "no_ready_endpoint"
        claude = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as ant:
            claude.messages.create(
                model="sim-model", max_tokens=4, messages=[{"role": "user", "content": "x"}]
            )
        assert ant.value.status_code == 503
        assert ant.value.body["type"] == "error"  # type: ignore[index]
        assert "Traceback" not in gw.log()


def _status_of(client: openai.OpenAI) -> int:
    try:
        _ask(client, SYSTEM, "probe")
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


def test_lora_requests_stick_to_the_endpoint_with_the_adapter() -> None:
    models = "      - name: sql-lora\n        targets: [{provider: pool}]\n"
    with sims(3, *FAST, "--lora-any", "--max-loras", "1") as pool:
        with _gateway(_pool_config(pool, models=models)) as (_gw, client):
            served = set()
            for i in range(8):
                raw = client.chat.completions.with_raw_response.create(
                    model="sql-lora",
                    messages=[{"role": "user", "content": f"select {i}"}],
                    max_tokens=2,
                )
                served.add(raw.headers[DESTINATION])
                time.sleep(0.06)  # let a scrape see the adapter loaded
            assert len(served) == 1
            loads = sum(int(s.stats()["lora_loads"]) for s in pool)  # type: ignore[call-overload]
            assert loads == 1


async def test_external_endpoint_picker_decides_with_fallbacks() -> None:
    with sims(2, *FAST) as pool:
        first, second = pool
        async with EppServer(Behaviour(endpoints=[second.name])) as epp:
            extra = (
                f"          endpoint_picker: {{address: '{epp.address}', failure_mode: closed}}\n"
            )
            with start_gateway(_pool_config(pool, extra)) as gw:
                client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
                for _ in range(3):
                    raw = await client.chat.completions.with_raw_response.create(
                        model="sim-model",
                        messages=[{"role": "user", "content": "hi"}],
                        max_tokens=2,
                    )
                    assert raw.headers[DESTINATION] == second.name
                # the picker saw the upstream request, the pool as candidates, no credentials
                assert b'"model":"sim-model"' in epp.body().replace(b" ", b"")
                assert sorted(epp.candidates()) == sorted(s.name for s in pool)
                assert "authorization" not in epp.headers()
                # primary down: its fallback serves
                second.kill()
                epp.behaviour = Behaviour(endpoints=[second.name, first.name])
                raw = await client.chat.completions.with_raw_response.create(
                    model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2
                )
                assert raw.headers[DESTINATION] == first.name
                # the picker sheds: its status reaches the client
                epp.behaviour = Behaviour(immediate=(429, b"too busy"))
                with pytest.raises(openai.RateLimitError):
                    await client.chat.completions.create(
                        model="sim-model", messages=[{"role": "user", "content": "hi"}]
                    )


async def test_external_endpoint_picker_down_fails_closed_or_open() -> None:
    with sims(1, *FAST) as pool:
        dead = Sim()  # a port nobody listens on
        closed = f"          endpoint_picker: {{address: '127.0.0.1:{dead.port}', timeout: 0.5}}\n"
        with start_gateway(_pool_config(pool, closed)) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
            with pytest.raises(openai.InternalServerError) as info:
                await client.chat.completions.create(
                    model="sim-model", messages=[{"role": "user", "content": "hi"}]
                )
            assert info.value.status_code == 503 and info.value.code == "endpoint_picker_failed"
        opened = closed.replace("timeout: 0.5", "timeout: 0.5, failure_mode: open")
        with start_gateway(_pool_config(pool, opened)) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
            raw = await client.chat.completions.with_raw_response.create(
                model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            assert raw.headers[DESTINATION] == pool[0].name
            assert "using the built-in scheduler" in gw.log()


def test_a_pool_fails_over_to_another_target_like_any_provider() -> None:
    dead = [Sim(), Sim()]  # a pool whose endpoints are all down
    fallback = Sim()  # a port for the sample OpenAI-compatible server
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossway.samples.openai_server", "--port", str(fallback.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: http_status(fallback.url + "/models") == 200, what="the sample server")
        models = (
            "      - name: sim-model\n"
            "        targets:\n"
            "          - {provider: pool}\n"
            "          - {provider: cloud, model: sample-model, priority: 1}\n"
        )
        config = _pool_config(dead, models=models).replace(
            "    providers:\n",
            f"    providers:\n      cloud: {{type: openai_compatible, base_url: '{fallback.url}'}}\n",
        )
        with _gateway(config) as (_gw, client):
            for _ in range(2):
                raw = client.chat.completions.with_raw_response.create(
                    model="sim-model", messages=[{"role": "user", "content": "hi"}]
                )
                assert DESTINATION not in raw.headers  # not served by the pool
                assert raw.parse().choices[0].message.content == "You said: hi"
    finally:
        proc.terminate()
        proc.wait(10)
