"""From one rate step's records to its row: throughput in a steady window, TTFT percentiles,
cache-hit rate, endpoint shares; and the knee of a sweep.

The window: the first `WARMUP_SHARE` of a step's arrival period is left out (queues and caches
settle), the window ends with the arrivals. Throughput counts the requests that *finished* in
the window; in a steady state that equals the arrivals in it, past the knee it is the pool's
capacity. TTFT is over the requests *sent* in the window; one that had no first token when the
drain deadline passed counts with the time it had waited (a lower bound: the row says so).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from bench.inference.load import LoadResult, Record

WARMUP_SHARE: Final = 0.2
"""Share of a step's arrival period left out of its figures."""
KNEE_THROUGHPUT_SHARE: Final = 0.9
"""A step is below the knee while at least this share of its window's requests were answered
(200, stream ended) by the drain deadline."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q` quantile (0-1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


@dataclass
class StepRow:
    """One (workload, policy, rate) step."""

    workload: str
    policy: str
    rate: float
    sent: int = 0
    finished: int = 0
    errors: int = 0
    arrived_rps: float = 0.0
    """Arrivals per second in the window (what was offered)."""
    completed_rps: float = 0.0
    """Requests that finished per second in the window."""
    output_tps: float = 0.0
    """Output tokens per second of the requests that finished in the window."""
    ttft_p50: float | None = None
    ttft_p90: float | None = None
    ttft_censored: int = 0
    """Requests of the window still without a first token at the drain deadline."""
    cache_hit: float | None = None
    """Cached prompt tokens / prompt tokens, over the finished requests."""
    adapter_loads: float = 0.0
    """Adapter loads the simulators counted during the step."""
    shares: dict[str, float] = field(default_factory=dict)
    """Share of the step's answered requests per endpoint, largest first."""
    client_cpu: float = 0.0
    """Share of one core the load generator used."""
    lateness_p99_ms: float = 0.0
    gateway_cpu: float = 0.0
    """Share of one core `crossway serve` used."""
    sims_cpu: float = 0.0
    """Share of one core all simulators used together."""
    first_error: str = ""
    window_sent: int = 0
    """Requests sent in the window."""
    window_finished: int = 0
    """Of those, answered in full by the drain deadline."""

    @property
    def completion_share(self) -> float:
        """Share of the window's requests answered in full by the drain deadline."""
        return self.window_finished / self.window_sent if self.window_sent else 0.0

    @property
    def max_share(self) -> float:
        return max(self.shares.values(), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def step_row(
    workload: str,
    policy: str,
    result: LoadResult,
    *,
    drain_deadline: float,
    endpoint_names: dict[str, str] | None = None,
) -> StepRow:
    """The row of one step. `drain_deadline`: seconds from the start when open requests were
    cancelled; `endpoint_names` renames endpoints (host:port -> sim-N) in the shares."""
    records = result.records
    lo = result.duration_s * WARMUP_SHARE
    hi = result.duration_s
    span = hi - lo
    row = StepRow(workload, policy, result.rate, sent=len(records))
    window = [r for r in records if lo <= r.scheduled < hi]
    done_in_window = [r for r in records if r.finished and r.end is not None and lo <= r.end < hi]
    row.finished = sum(r.finished for r in records)
    failed = [r for r in records if r.error or (r.status and r.status != 200)]
    row.errors = len(failed)
    row.first_error = failed[0].error if failed else ""
    row.window_sent = len(window)
    row.window_finished = sum(r.finished for r in window)
    row.arrived_rps = len(window) / span if span > 0 else 0.0
    row.completed_rps = len(done_in_window) / span if span > 0 else 0.0
    row.output_tps = sum(r.output_tokens for r in done_in_window) / span if span > 0 else 0.0
    ttfts: list[float] = []
    for r in window:
        if r.first_token is not None:
            ttfts.append(r.first_token - r.sent)
        elif not r.error and not (r.status and r.status != 200):
            ttfts.append(drain_deadline - r.sent)
            row.ttft_censored += 1
    row.ttft_p50 = percentile(ttfts, 0.5)
    row.ttft_p90 = percentile(ttfts, 0.9)
    prompt = sum(r.prompt_tokens for r in records if r.finished)
    cached = sum(r.cached_tokens for r in records if r.finished)
    row.cache_hit = cached / prompt if prompt else None
    answered = Counter(_name(r, endpoint_names) for r in records if r.status == 200)
    total = sum(answered.values())
    row.shares = {k: v / total for k, v in answered.most_common()} if total else {}
    row.client_cpu = result.client_cpu_share
    row.lateness_p99_ms = result.lateness_p99_s * 1000
    return row


def _name(record: Record, names: dict[str, str] | None) -> str:
    if names is None:
        return record.endpoint
    return names.get(record.endpoint, record.endpoint or "?")


def knee(rows: Sequence[StepRow], ttft_bound_s: float) -> StepRow | None:
    """The highest-rate step of a sweep before the first whose p90 TTFT passes
    `ttft_bound_s` or that answered less than KNEE_THROUGHPUT_SHARE of its window's requests
    by the drain deadline (or had errors); None when even the first step fails. (Open loop:
    a pool that cannot keep up queues, so its TTFT grows past any bound.)"""
    best: StepRow | None = None
    for row in sorted(rows, key=lambda r: r.rate):
        if not below_knee(row, ttft_bound_s):
            break
        best = row
    return best


def below_knee(row: StepRow, ttft_bound_s: float) -> bool:
    return (
        row.completion_share >= KNEE_THROUGHPUT_SHARE
        and row.ttft_p90 is not None
        and row.ttft_p90 <= ttft_bound_s
        and row.errors <= max(1, row.sent // 100)
    )


def peak(rows: Sequence[StepRow]) -> StepRow | None:
    """The step with the most output tokens per second."""
    return max(rows, key=lambda r: r.output_tps, default=None)
