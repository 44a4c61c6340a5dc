"""The inference bench's machinery at toy size (bench/inference/): real simulators, a real
`crossway serve` with an inference pool per policy, the bench's own Poisson client, one short
rate step each, so the real run's pieces are known to work before anyone spends half an hour
on it. No figure is checked, only that every piece reports."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from bench.inference import report, run, stats
from bench.inference.load import poisson_arrivals, run_open_loop
from bench.inference.workloads import Workload, zipf_shares

from tests.helpers import free_port


def test_workloads_are_deterministic_and_share_what_they_should() -> None:
    w = Workload("prefix", "p", system_tokens=200, question_tokens=10, groups=5, seed=3)
    a, b = w.batch(20, 0), w.batch(20, 0)
    assert a.bodies == b.bodies and a.tags == b.tags
    assert w.batch(20, 1).bodies != a.bodies
    assert len(w.system_prompt(0)) == 200 * 4
    assert w.system_prompt(0) != w.system_prompt(1)
    lora = Workload("lora", "l", adapters=30, seed=3)
    tags = lora.batch(400, 0).tags
    assert set(tags) <= set(lora.adapter_names())
    assert tags.count(lora.adapter_names()[0]) > tags.count(lora.adapter_names()[-1])
    assert abs(sum(zipf_shares(30, 1.1)) - 1) < 1e-9
    arrivals = poisson_arrivals(50, 10, random.Random(1))
    assert 400 < len(arrivals) < 600 and arrivals == sorted(arrivals)


async def test_client_records_ttft_usage_and_the_endpoint_header() -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"x-gateway-destination-endpoint": "10.0.0.1:8000"})
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n')
        await resp.write(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n')
        usage = b'{"prompt_tokens":10,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":8}}'
        await resp.write(b'data: {"choices":[],"usage":' + usage + b"}\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        result = await run_open_loop(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            [b"{}"] * 3,
            [0.0, 0.01, 0.02],
            rate=100,
            duration_s=0.03,
            drain_s=5,
        )
    finally:
        await runner.cleanup()
    for record in result.records:
        assert record.finished and record.status == 200
        assert record.ttft is not None and record.ttft >= 0
        assert (record.prompt_tokens, record.output_tokens, record.cached_tokens) == (10, 3, 8)
        assert record.endpoint == "10.0.0.1:8000"


def test_knee_is_the_last_step_before_the_first_failure() -> None:
    def row(rate: float, answered: int, p90: float) -> stats.StepRow:
        r = stats.StepRow("w", "p", rate, sent=100, window_sent=100, window_finished=answered)
        r.ttft_p90 = p90
        return r

    # 12/s answered too few of its requests; 16/s would pass but comes after a failure
    rows = [row(4, 100, 0.5), row(8, 95, 1.0), row(12, 80, 1.5), row(16, 100, 0.5)]
    knee = stats.knee(rows, ttft_bound_s=2.0)
    assert knee is not None and knee.rate == 8
    assert stats.knee([row(4, 4, 3.0)], ttft_bound_s=2.0) is None


@pytest.mark.timeout(150)
def test_tiny_run_through_the_gateway_reports_every_row(tmp_path: Path) -> None:
    settings = run.Settings(
        sims=2,
        duration_s=1.5,
        drain_s=3.0,
        policies=["round-robin", "default"],
        workloads=["prefix", "lora"],
        rates=[6.0],
        quick=True,
        warmup_s=0.5,  # the warm-up path, briefly
    )
    results: dict[str, Any] = run.run(settings, tmp_path)
    for workload in ("prefix", "lora"):
        for policy in ("round-robin", "default"):
            (step,) = results["workloads"][workload]["policies"][policy]
            assert step["sent"] > 0 and step["finished"] > 0, step
            assert step["errors"] == 0, step["first_error"]
            # the gateway named a simulator for every answer
            assert set(step["shares"]) <= {"sim-0", "sim-1"}, step["shares"]
    lora_rr = results["workloads"]["lora"]["policies"]["round-robin"][0]
    assert lora_rr["adapter_loads"] > 0
    text = report.render(results)
    assert "| 6 | round-robin |" in text and "| 6 | default |" in text
    assert "## Goals" in text and "LoRA-skewed" in text and "routing decision" in text
    assert results["decision"].get("p50_us") is not None, results["decision"]
