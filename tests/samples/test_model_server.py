"""The model-server simulator (`python -m crossway.samples.model_server`), run as real processes
on loopback free ports and driven with the official `openai` SDK and httpx."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crossway.samples.model_server import count_tokens
from crossway.samples.model_server.server import render_chat
from tests.helpers import wait_for

START_TIMEOUT = 20.0


@dataclass
class Sim:
    """A running simulator process."""

    proc: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:PORT

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def client(self, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.api, api_key="sim", max_retries=0, **kwargs)

    def aclient(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.api, api_key="sim", max_retries=0)

    def metrics(self, path: str = "/metrics") -> dict[str, Any]:
        """Metric families by name (`vllm:x_total` counters under `vllm:x`)."""
        text = httpx.get(self.url + path, timeout=5).text
        return {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, name: str, **labels: str) -> float:
        """The value of the sample named `name` (or of family `name`) with these labels."""
        for family in self.metrics().values():
            for sample in family.samples:
                named = sample.name == name or (
                    family.name == name and sample.name in (name, name + "_total")
                )
                if named and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        raise KeyError((name, labels))

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(self.url + "/sim/stats", timeout=5).json()
        return result

    def fault(self, **faults: str) -> httpx.Response:
        return httpx.post(self.url + "/sim/fault", json=faults, timeout=5)


def _spawn(args: list[str]) -> tuple[subprocess.Popen[bytes], Any]:
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossway.samples.model_server", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    return proc, log


def _ready(proc: subprocess.Popen[bytes], log: Any) -> Sim:
    """Wait for the `model_server listening on URL` line."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    while not line.endswith(b"\n"):
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            log.seek(0)
            raise TimeoutError(f"simulator did not start: {log.read().decode()}")
        chunk = proc.stdout.read1(4096)  # type: ignore[attr-defined]
        if not chunk:
            log.seek(0)
            raise RuntimeError(f"simulator exited: {log.read().decode()}")
        line += chunk
    sel.close()
    prefix = "model_server listening on "
    text = line.decode().strip()
    assert text.startswith(prefix), text
    return Sim(proc, text.removeprefix(prefix))


@contextlib.contextmanager
def sims(*arg_lists: list[str]) -> Iterator[list[Sim]]:
    """Start simulators in parallel; stop them (and check they logged no traceback) after."""
    started = [_spawn(args) for args in arg_lists]
    try:
        yield [_ready(proc, log) for proc, log in started]
    finally:
        for proc, log in started:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.seek(0)
            err = log.read().decode()
            log.close()
            assert "Traceback" not in err, err


FAST = ["--time-factor", "0.05"]


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    """A fast simulator shared by the stateless tests (unique prompts keep them independent)."""
    args = [*FAST, "--lora", "adapter-x,adapter-y", "--output-tokens", "12"]
    with sims([*args, "--max-output-tokens", "50"]) as (s,):
        yield s


def test_chat_and_completions_answer_with_usage(sim: Sim) -> None:
    client = sim.client()
    messages: list[Any] = [{"role": "user", "content": "usage test: hello there"}]
    answer = client.chat.completions.create(model="sim-model", messages=messages, max_tokens=7)
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 7
    assert answer.usage.prompt_tokens == count_tokens(render_chat(messages))
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 0
    assert answer.choices[0].finish_reason == "length"
    assert count_tokens(answer.choices[0].message.content or "") == 7

    default = client.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "usage test: default length"}]
    )
    assert default.usage is not None and default.usage.completion_tokens == 12
    assert default.choices[0].finish_reason == "stop"
    capped = client.chat.completions.create(
        model="adapter-x",
        messages=[{"role": "user", "content": "usage test: capped"}],
        max_completion_tokens=100_000,
    )
    assert capped.usage is not None and capped.usage.completion_tokens == 50
    assert capped.model == "adapter-x"

    chunks = list(
        client.chat.completions.create(
            model="sim-model",
            messages=[{"role": "user", "content": "usage test: streamed"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert count_tokens(text) == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])

    completion = client.completions.create(
        model="sim-model", prompt="usage test: a completion prompt", max_tokens=3
    )
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_tokens("usage test: a completion prompt")
    assert completion.usage.completion_tokens == 3
    assert count_tokens(completion.choices[0].text) == 3
    streamed = list(
        client.completions.create(
            model="sim-model",
            prompt=[1, 2, 3, 4, 5],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert streamed[-1].usage is not None and streamed[-1].usage.prompt_tokens == 5
    assert count_tokens("".join(c.choices[0].text for c in streamed if c.choices)) == 4

    models = [m.id for m in client.models.list()]
    assert models == ["sim-model", "adapter-x", "adapter-y"]
    assert httpx.get(sim.url + "/health").status_code == 200


def test_bad_input_gets_openai_errors(sim: Sim) -> None:
    chat = sim.api + "/chat/completions"

    def post(url: str, body: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else None
        return httpx.post(url, content=content, json=None if content else body, timeout=5)

    cases: list[tuple[str, Any, int, str | None]] = [
        (chat, b"{not json", 400, None),
        (chat, b"[1, 2]", 400, None),
        (chat, {"model": "sim-model"}, 400, "messages"),
        (chat, {"model": "sim-model", "messages": []}, 400, "messages"),
        (chat, {"model": "sim-model", "messages": [{"role": "robot"}]}, 400, "messages[0].role"),
        (chat, {"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        (
            chat,
            {"model": "sim-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            400,
            "max_tokens",
        ),
        (
            chat,
            {"model": "sim-model", "messages": [{"role": "user", "content": "x"}], "n": 2},
            400,
            "n",
        ),
        (
            chat,
            {"model": "sim-model", "messages": [{"role": "user", "content": "x" * 140_000}]},
            400,
            "messages",
        ),
        (sim.api + "/completions", {"model": "sim-model"}, 400, "prompt"),
        (sim.api + "/completions", {"model": "sim-model", "prompt": [[1], [2]]}, 400, "prompt"),
        (
            sim.api + "/completions",
            {"model": "no-such-model", "prompt": "x"},
            404,
            None,
        ),
        (sim.url + "/v1/nothing-here", {}, 404, None),
    ]
    for url, body, status, param in cases:
        resp = post(url, body)
        assert resp.status_code == status, (body, resp.text)
        error = resp.json()["error"]
        assert error["message"] and error["type"], resp.text
        assert error["param"] == param, (body, error)
    assert httpx.get(chat).status_code == 405
    assert "error" in httpx.get(chat).json()
    with pytest.raises(openai.NotFoundError):
        sim.client().chat.completions.create(
            model="unknown-model", messages=[{"role": "user", "content": "x"}]
        )


def _ttft(client: openai.OpenAI, model: str, messages: list[Any]) -> tuple[float, int]:
    """Time to the first content token, and the cached tokens the usage reports."""
    start = time.perf_counter()
    first: float | None = None
    cached = -1
    for chunk in client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage is not None and chunk.usage.prompt_tokens_details is not None:
            cached = chunk.usage.prompt_tokens_details.cached_tokens or 0
    assert first is not None
    return first, cached


def test_prefix_cache_hit_skips_prefill_and_is_salted_by_model() -> None:
    # 8,000 characters = 2,000 tokens: 0.6 s of simulated prefill, 0.12 s real at 0.2.
    system = "".join(f"rule {i:04d}: be helpful. " for i in range(400))[:8000]
    with sims(["--time-factor", "0.2", "--lora-any"]) as (s,):
        client = s.client()

        def ask(question: str, model: str = "sim-model") -> tuple[float, int]:
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ]
            return _ttft(client, model, messages)

        cold, cached_cold = ask("first question")
        warm, cached_warm = ask("second question")
        assert cached_cold == 0
        assert cached_warm >= 1984  # the system prompt's full blocks
        assert warm < cold / 2, (warm, cold)
        # the same prompt for an adapter: another salt, so no hit
        _, cached_adapter = ask("second question", model="tuned")
        assert cached_adapter == 0
        assert s.value("vllm:prefix_cache_hits") == cached_warm
        assert s.value("vllm:prefix_cache_queries") >= 3 * 2000
        assert s.value("vllm:time_to_first_token_seconds_count") == 3


async def test_requests_beyond_max_num_seqs_wait_in_the_queue() -> None:
    with sims([*FAST, "--max-num-seqs", "2"]) as (s,):
        client = s.aclient()

        async def one(i: int) -> int:
            answer = await client.chat.completions.create(
                model="sim-model",
                messages=[{"role": "user", "content": f"queue {i}"}],
                max_tokens=300,
            )
            assert answer.usage is not None
            return answer.usage.completion_tokens

        tasks = [asyncio.create_task(one(i)) for i in range(6)]
        seen_waiting = 0.0
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 10
            while seen_waiting < 1 and time.monotonic() < deadline:
                text = (await http.get(s.url + "/metrics")).text
                families = {f.name: f for f in text_string_to_metric_families(text)}
                running = families["vllm:num_requests_running"].samples[0].value
                assert running <= 2
                seen_waiting = families["vllm:num_requests_waiting"].samples[0].value
                await asyncio.sleep(0.005)  # poll interval, not a wait for an outcome
        assert seen_waiting >= 1
        assert await asyncio.gather(*tasks) == [300] * 6
        await client.close()
        assert s.value("vllm:num_requests_waiting") == 0
        assert s.value("vllm:request_success", finished_reason="length") == 6
        # queued requests waited: their queue time shows
        assert s.value("vllm:request_queue_time_seconds_sum") > 0


def test_kv_cache_evicts_least_recently_used_blocks() -> None:
    # 641 characters = 161 tokens = 10 full blocks (+ a partial one); 25 blocks in all
    prompts = {name: name * 641 for name in "ABC"}
    with sims([*FAST, "--kv-blocks", "25"]) as (s,):
        client = s.client()

        def cached(name: str) -> int:
            answer = client.completions.create(
                model="sim-model", prompt=prompts[name], max_tokens=1
            )
            assert answer.usage is not None and answer.usage.prompt_tokens == 161
            details = answer.usage.prompt_tokens_details
            return details.cached_tokens or 0 if details is not None else -1

        assert cached("A") == 0
        assert cached("B") == 0
        assert cached("A") == 160  # both fit; A is now the most recently used
        assert s.value("vllm:kv_block_evictions") == 0
        assert cached("C") == 0  # needs 11 blocks: evicts B's, the least recently used
        assert s.value("vllm:kv_block_evictions") == 6
        assert cached("A") == 160  # kept
        assert cached("B") == 64  # B's tail went first: its first 4 blocks are left
        assert s.stats()["kv_used_blocks"] == 0
        too_big = httpx.post(
            s.api + "/completions",
            json={"model": "sim-model", "prompt": "x" * 4000, "max_tokens": 1},
        )
        assert too_big.status_code == 400 and "KV-cache" in too_big.json()["error"]["message"]


async def test_a_full_kv_cache_preempts_the_youngest_sequence() -> None:
    # each sequence grows to ceil((16 + 150) / 16) = 11 blocks; two need 22 of 20
    with sims([*FAST, "--kv-blocks", "20"]) as (s,):
        client = s.aclient()

        async def one(i: int) -> int:
            stream = await client.completions.create(
                model="sim-model", prompt=f"{i}" * 64, max_tokens=150, stream=True
            )
            return sum([count_tokens(c.choices[0].text) async for c in stream if c.choices])

        assert await asyncio.gather(one(1), one(2)) == [150, 150]
        await client.close()
        assert s.value("vllm:num_preemptions") >= 1
        assert s.stats()["kv_used_blocks"] == 0


def _lora_info(s: Sim) -> tuple[dict[str, str], int]:
    """The newest `vllm:lora_requests_info` series' labels, and how many series there are."""
    samples = s.metrics()["vllm:lora_requests_info"].samples
    newest = max(samples, key=lambda x: x.value)
    return newest.labels, len(samples)


async def test_lora_adapters_load_into_slots() -> None:
    with sims([*FAST, "--lora", "a,b,c", "--max-loras", "2", "--lora-load-ms", "200"]) as (s,):
        client = s.client()

        def ask(model: str) -> None:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "lora"}], max_tokens=2
            )

        ask("a")
        ask("a")
        assert s.value("vllm:lora_loads") == 1
        ask("b")
        ask("c")  # both slots taken: evicts a, the least recently used idle adapter
        assert s.value("vllm:lora_loads") == 3
        assert s.stats()["lora_loaded"] == ["b", "c"]
        ask("sim-model")  # the base model needs no slot
        assert s.value("vllm:lora_loads") == 3
        info, _ = _lora_info(s)
        assert info == {"max_lora": "2", "running_lora_adapters": "", "waiting_lora_adapters": ""}

        # Slots busy with running sequences: a request for a third adapter waits.
        aclient = s.aclient()
        streams = [
            await aclient.chat.completions.create(
                model=m,
                messages=[{"role": "user", "content": "long"}],
                max_tokens=4000,
                stream=True,
            )
            for m in ("b", "c")
        ]
        for stream in streams:
            await stream.__anext__()  # both running
        waiter = asyncio.create_task(
            aclient.chat.completions.create(
                model="a", messages=[{"role": "user", "content": "short"}], max_tokens=2
            )
        )
        deadline = time.monotonic() + 10
        while _lora_info(s)[0]["waiting_lora_adapters"] != "a":
            assert time.monotonic() < deadline, _lora_info(s)
            await asyncio.sleep(0.01)  # poll interval
        info, series = _lora_info(s)
        assert info["running_lora_adapters"] == "b,c"
        assert series == 2  # the older series is still on the page, with an older timestamp
        assert s.value("vllm:num_requests_waiting") == 1
        assert not waiter.done()
        for stream in streams:
            await stream.close()  # the client goes away: the sequences are aborted
        answer = await waiter
        assert answer.model == "a"
        assert s.value("vllm:lora_loads") == 4
        assert s.value("vllm:request_success", finished_reason="abort") == 2
        await aclient.close()


def test_lora_any_accepts_any_adapter_name() -> None:
    with sims([*FAST, "--lora-any", "--max-loras", "1"]) as (s,):
        client = s.client()
        for name in ("tenant-1", "tenant-2", "tenant-1"):
            client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "x"}], max_tokens=1
            )
        assert s.value("vllm:lora_loads") == 3
        assert {m.id for m in client.models.list()} == {"sim-model", "tenant-1", "tenant-2"}


def test_metrics_pages_parse(sim: Sim) -> None:
    sim.client().chat.completions.create(
        model="adapter-y", messages=[{"role": "user", "content": "metrics"}], max_tokens=3
    )
    families = sim.metrics()
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:lora_requests_info",
        "vllm:cache_config_info",
        "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:request_success",
        "vllm:lora_loads",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
    ):
        assert name in families, name
    assert "vllm:gpu_cache_usage_perc" not in families
    assert families["vllm:num_requests_running"].samples[0].labels["model_name"] == "sim-model"
    config = families["vllm:cache_config_info"].samples[0]
    assert config.labels["block_size"] == "16" and config.labels["num_gpu_blocks"] == "8192"
    ttft = families["vllm:time_to_first_token_seconds"]
    assert ttft.type == "histogram"
    buckets = [x for x in ttft.samples if x.name.endswith("_bucket")]
    assert len(buckets) > 20 and buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value >= 1
    assert 0 <= families["vllm:kv_cache_usage_perc"].samples[0].value <= 1
    lines = httpx.get(sim.url + "/metrics").text.count("\n")
    assert lines > 200  # as long as a real vLLM page, mostly histogram lines

    gpu = sim.metrics("/gpu/metrics")
    used = gpu["DCGM_FI_DEV_FB_USED"].samples[0]
    free = gpu["DCGM_FI_DEV_FB_FREE"].samples[0].value
    assert used.labels["gpu"] == "0"
    assert used.value + free == 81559
    assert 0 <= gpu["DCGM_FI_DEV_GPU_UTIL"].samples[0].value <= 100


def test_time_factor_scales_every_duration() -> None:
    # 10 steps of 30 ms: 3 ms each at factor 0.1, above the ~1 ms timer resolution
    args = ["--base-itl-ms", "30", "--itl-alpha", "0", "--output-tokens", "10"]
    with sims([*args, "--time-factor", "1"], [*args, "--time-factor", "0.1"]) as (slow, fast):

        def duration(s: Sim) -> float:
            start = time.perf_counter()
            s.client().chat.completions.create(
                model="sim-model", messages=[{"role": "user", "content": "t"}]
            )
            return time.perf_counter() - start

        slow_s, fast_s = duration(slow), duration(fast)
        assert slow_s >= 0.3  # 10 steps of 30 ms
        assert fast_s < slow_s / 3, (fast_s, slow_s)
        # the metrics report simulated time: 0.3 s, plus whatever late timer wake-ups added
        # (a busy machine only ever makes steps longer)
        simulated = fast.value("vllm:e2e_request_latency_seconds_sum")
        assert 0.29 <= simulated <= 0.45, simulated


def test_faults() -> None:
    with sims([*FAST, "--metrics-garbage", "--legacy-metrics"]) as (s,):
        page = httpx.get(s.url + "/metrics")
        assert page.status_code == 200
        with pytest.raises(ValueError):
            list(text_string_to_metric_families(page.text))
        assert s.fault(metrics="500").status_code == 200
        assert httpx.get(s.url + "/metrics").status_code == 500
        assert s.fault(metrics="hang").json()["metrics"] == "hang"
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(s.url + "/metrics", timeout=0.3)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            hung = pool.submit(httpx.get, s.url + "/metrics", timeout=10)
            with pytest.raises(concurrent.futures.TimeoutError):
                hung.result(timeout=0.2)  # still hanging
            s.fault(metrics="ok")
            released = hung.result(timeout=10)
        assert released.status_code == 200
        families = {f.name for f in text_string_to_metric_families(released.text)}
        assert "vllm:gpu_cache_usage_perc" in families  # --legacy-metrics
        assert "vllm:kv_cache_usage_perc" not in families
        assert "vllm:gpu_prefix_cache_hits" in families

        client = s.client()
        messages: list[Any] = [{"role": "user", "content": "fault"}]
        s.fault(chat="500")
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="sim-model", messages=messages)
        s.fault(chat="close")
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="sim-model", messages=messages)
        s.fault(chat="midstream")
        body = {"model": "sim-model", "messages": messages, "stream": True}
        lines: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", s.api + "/chat/completions", json=body) as resp:
                assert resp.status_code == 200
                lines.extend(resp.iter_lines())
        assert any(line.startswith("data: {") for line in lines)
        s.fault(gpu_metrics="garbage")
        with pytest.raises(ValueError):
            list(text_string_to_metric_families(httpx.get(s.url + "/gpu/metrics").text))

        bad = s.fault(chat="explode")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "chat"
        assert s.fault(nothing="ok").status_code == 400
        assert httpx.post(s.url + "/sim/fault", content=b"{").status_code == 400
        assert s.fault(chat="ok", gpu_metrics="ok").json() == {
            "metrics": "ok",
            "gpu_metrics": "ok",
            "chat": "ok",
        }
        answer = client.chat.completions.create(model="sim-model", messages=messages)
        assert answer.usage is not None and answer.usage.completion_tokens == 64
        wait_for(lambda: s.stats()["running"] == 0, timeout=5, what="idle simulator")
