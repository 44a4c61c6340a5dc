"""What one routing decision costs in Crossway's process: the default scheduler over 16
endpoints with fresh metrics, for prefix-heavy chat bodies (the prompt's text extracted,
hashed block by block and matched against a warm index, scores, the pick, and the index
update after it), timed in a loop: `python -m bench.inference.decision`."""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any, Final

from bench.inference.workloads import Workload

ENDPOINTS: Final = 16
WARM_REQUESTS: Final = 3000
TIMED_REQUESTS: Final = 3000


def measure(endpoints: int = ENDPOINTS, timed: int = TIMED_REQUESTS) -> dict[str, Any]:
    """p50 / p99 / mean microseconds of one decision; `error` when the scheduler is missing."""
    try:
        from crossway.config.inference import InferencePoolConfig
        from crossway.inference.scheduler import PickRequest, Scheduler, prompt_text
        from crossway.inference.state import Endpoint, ServerMetrics
    except ImportError as exc:
        return {"error": f"crossway.inference.scheduler not importable: {exc}"}
    try:
        config = InferencePoolConfig.model_validate(
            {"endpoints": [f"http://10.0.0.{i}:8000/v1" for i in range(endpoints)]}
        )
        scheduler = Scheduler(
            config.scheduler,
            config.metrics,
            endpoint_cooldown=config.scheduler.endpoint_cooldown,
            rng=random.Random(1),
        )
        now = time.monotonic()
        pool = []
        rng = random.Random(2)
        for e in config.endpoints:
            endpoint = Endpoint(e.url, e.metrics_url)
            endpoint.server = ServerMetrics(
                waiting=float(rng.randint(0, 6)),
                running=float(rng.randint(0, 8)),
                kv_cache=rng.random(),
                max_lora=2,
                models=frozenset({"sim-model"}),
                recognised=10,
            )
            endpoint.server_at = now + 3600  # stays fresh for the whole measurement
            pool.append(endpoint)
        workload = Workload("prefix", "prefix", system_tokens=1500, question_tokens=40, groups=150)
        limit = config.scheduler.prefix.block_chars * config.scheduler.prefix.max_blocks
        bodies = [json.loads(b) for b in workload.batch(WARM_REQUESTS + timed, 0).bodies]
        samples: list[float] = []
        for i, body in enumerate(bodies):
            t0 = time.perf_counter()
            request = PickRequest(body["model"], prompt_text(body, limit), 1600)
            decision = scheduler.decide(pool, request)
            scheduler.sent(decision.ranked[0], request, decision)
            elapsed = time.perf_counter() - t0
            if i >= WARM_REQUESTS:
                samples.append(elapsed * 1e6)
    except (AttributeError, TypeError, ValueError) as exc:
        return {"error": f"the scheduler's interface changed: {type(exc).__name__}: {exc}"}
    samples.sort()
    return {
        "endpoints": endpoints,
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[int(len(samples) * 0.99)],
        "mean_us": sum(samples) / len(samples),
        "what": f"default scheduler, {endpoints} endpoints, prefix-heavy bodies "
        f"(~{workload.system_tokens * 4} chars), warm index",
    }


if __name__ == "__main__":
    json.dump(measure(), sys.stdout, indent=1)
    print()
