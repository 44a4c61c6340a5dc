"""`GET /stats`: live numbers for a person (or a script) rather than Prometheus.

    GET /stats   {"version", "started_at", "uptime_seconds", "workers", "requests",
                  "routes": [...], "upstreams": [...], "llm": {...}}

Everything comes from the same metrics registry `/metrics` serves (every worker's, with
`--workers N`), summed over the label sets Prometheus keeps apart: per route the request count
by status, errors (5xx), and a latency summary (mean and p50/p90/p99 estimated from the
histogram buckets, the way PromQL's `histogram_quantile` does); per backend the same for
upstream calls; LLM tokens and cost per model. Requests in flight are the workers' own count,
sampled into `crossway_requests_in_flight` about once a second.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crossway import __version__

QUANTILES: Final = (0.5, 0.9, 0.99)
"""Latency quantiles each summary reports (as `p50`, `p90`, `p99`)."""

RegistrySource = Callable[[], CollectorRegistry]


def samples(registry: CollectorRegistry) -> list[Sample]:
    """Every sample of the registry, flat."""
    return [s for family in registry.collect() for s in family.samples]


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The `q` quantile of a histogram from its cumulative `(le, count)` buckets, interpolated
    linearly inside the bucket it falls in (None without observations). In the `+Inf` bucket it
    is the largest finite bound, as `histogram_quantile` answers."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


class _Histogram:
    """Buckets, sum and count of one histogram summed over some of its labels."""

    def __init__(self) -> None:
        self.buckets: dict[float, float] = defaultdict(float)
        self.sum = 0.0
        self.count = 0.0

    def add(self, sample: Sample, suffix: str) -> None:
        if suffix == "_bucket":
            self.buckets[float(sample.labels["le"])] += sample.value
        elif suffix == "_sum":
            self.sum += sample.value
        elif suffix == "_count":
            self.count += sample.value

    def summary(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "count": int(self.count),
            "mean_seconds": self.sum / self.count if self.count else None,
        }
        for q in QUANTILES:
            value = quantile(q, self.buckets.items())
            out[f"p{round(q * 100)}_seconds"] = value
        return out


def _histograms(found: list[Sample], name: str, label: str) -> dict[str, _Histogram]:
    """`name`'s histogram per value of `label` (the other labels summed)."""
    out: dict[str, _Histogram] = defaultdict(_Histogram)
    for sample in found:
        if not sample.name.startswith(name):
            continue
        suffix = sample.name[len(name) :]
        if suffix in ("_bucket", "_sum", "_count"):
            out[sample.labels.get(label, "")].add(sample, suffix)
    return out


def _sum(found: list[Sample], name: str) -> float:
    return sum(s.value for s in found if s.name == name)


def build_stats(registry: CollectorRegistry, started: float, workers_mode: str) -> dict[str, Any]:
    """The `/stats` body from `registry`; `started` is the Unix time the gateway started."""
    found = samples(registry)
    by_route: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for sample in found:
        if sample.name == "crossway_requests_total":
            route = sample.labels.get("route", "")
            by_route[route][sample.labels.get("status", "")] += sample.value
    durations = _histograms(found, "crossway_request_duration_seconds", "route")
    routes: list[dict[str, Any]] = []
    for route in sorted(set(by_route) | set(durations)):
        statuses = by_route.get(route, {})
        routes.append(
            {
                "route": route,
                "requests": int(sum(statuses.values())),
                "errors": int(sum(v for k, v in statuses.items() if k.startswith("5"))),
                "by_status": {k: int(v) for k, v in sorted(statuses.items())},
                "latency": durations[route].summary(),
            }
        )
    upstream_status: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for sample in found:
        if sample.name == "crossway_upstream_duration_seconds_count":
            backend = sample.labels.get("backend", "")
            upstream_status[backend][sample.labels.get("status", "")] += sample.value
    upstream_durations = _histograms(found, "crossway_upstream_duration_seconds", "backend")
    upstreams = [
        {
            "backend": backend,
            "calls": int(sum(upstream_status[backend].values())),
            "by_status": {k: int(v) for k, v in sorted(upstream_status[backend].items())},
            "latency": upstream_durations[backend].summary(),
        }
        for backend in sorted(upstream_durations)
    ]
    tokens: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    cost: dict[str, float] = defaultdict(float)
    for sample in found:
        if sample.name == "crossway_llm_tokens_total":
            tokens[sample.labels.get("model", "")][sample.labels.get("kind", "")] += sample.value
        elif sample.name == "crossway_llm_cost_usd_total":
            cost[sample.labels.get("model", "")] += sample.value
    models = [
        {
            "model": model,
            "tokens": {kind: int(v) for kind, v in sorted(tokens.get(model, {}).items())},
            "cost_usd": cost.get(model, 0.0),
        }
        for model in sorted(set(tokens) | set(cost))
    ]
    total = sum(r["requests"] for r in routes)
    now = time.time()
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started_at": started,
        "uptime_seconds": max(0.0, now - started),
        "workers": {"ready": int(_sum(found, "crossway_workers_ready")), "mode": workers_mode},
        "requests": {
            "in_flight": int(_sum(found, "crossway_requests_in_flight")),
            "total": total,
            "errors": sum(r["errors"] for r in routes),
        },
        "routes": routes,
        "upstreams": upstreams,
        "llm": {"models": models, "cost_usd": sum(cost.values())},
    }


def stats_route(registry: RegistrySource, started: float, workers_mode: str) -> Route:
    """The admin plane's `GET /stats` route over the registry `registry()` returns."""

    async def stats(request: Request) -> Response:
        body = await asyncio.to_thread(build_stats, registry(), started, workers_mode)
        return JSONResponse(body)

    return Route("/stats", stats, methods=["GET"])


__all__ = ["build_stats", "quantile", "stats_route"]
