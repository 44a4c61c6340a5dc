"""Prometheus metrics for the data plane.

Workers are separate processes: `crossway serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh
directory before they start, and the admin plane aggregates their files.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip

REQUESTS = Counter(
    "crossway_requests_total", "Requests served, by route and status.", ["route", "status"]
)
REQUEST_DURATION = Histogram(
    "crossway_request_duration_seconds",
    "Time from request start to the end of the response, by route and status.",
    ["route", "status"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    "crossway_upstream_duration_seconds",
    "Time until an upstream's response headers arrived, by backend and upstream status.",
    ["backend", "status"],
    buckets=LATENCY_BUCKETS,
)
CONFIG_RELOADS = Counter(
    "crossway_config_reloads_total", "Config reload attempts, by result.", ["result"]
)
WORKERS_READY = Gauge(
    "crossway_workers_ready",
    "Workers that have loaded a config and serve.",
    multiprocess_mode="livesum",
)

_request_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
_upstream_children: dict[tuple[str, int], Histogram] = {}


def observe_request(route: str, status: int, seconds: float) -> None:
    """Count one finished request (label children cached: no lookup per request)."""
    key = (route, status)
    children = _request_children.get(key)
    if children is None:
        label = str(status)
        children = (REQUESTS.labels(route, label), REQUEST_DURATION.labels(route, label))
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def observe_upstream(backend: str, status: int, seconds: float) -> None:
    """Record how long an upstream took to answer."""
    key = (backend, status)
    child = _upstream_children.get(key)
    if child is None:
        child = _upstream_children[key] = UPSTREAM_DURATION.labels(backend, str(status))
    child.observe(seconds)
