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
REQUESTS_IN_FLIGHT = Gauge(
    "crossway_requests_in_flight",
    "Requests being served, sampled by each worker about once a second (off the request path).",
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


# --- LLM usage ------------------------------------------------------------------------------

LLM_TOKENS = Counter(
    "crossway_llm_tokens_total",
    "LLM tokens, by backend, model route, provider and kind (input, output, cached, reasoning).",
    ["backend", "model", "provider", "kind"],
)
LLM_COST = Counter(
    "crossway_llm_cost_usd_total",
    "Estimated LLM spend in USD from the price table, by backend, model route and provider.",
    ["backend", "model", "provider"],
)
LLM_ATTEMPTS = Counter(
    "crossway_llm_upstream_attempts_total",
    "Upstream LLM attempts, by backend, deployment (provider/model) and result (ok, retry, error).",
    ["backend", "deployment", "result"],
)

_llm_usage_children: dict[
    tuple[str, str, str], tuple[Counter, Counter, Counter, Counter, Counter]
] = {}


def observe_llm_usage(
    backend: str,
    model: str,
    provider: str,
    tokens: tuple[int, int, int, int],
    cost: float | None,
) -> None:
    """Count one answer's tokens (input, output, cached, reasoning) and cost."""
    key = (backend, model, provider)
    children = _llm_usage_children.get(key)
    if children is None:
        children = (
            LLM_TOKENS.labels(backend, model, provider, "input"),
            LLM_TOKENS.labels(backend, model, provider, "output"),
            LLM_TOKENS.labels(backend, model, provider, "cached"),
            LLM_TOKENS.labels(backend, model, provider, "reasoning"),
            LLM_COST.labels(backend, model, provider),
        )
        _llm_usage_children[key] = children
    for child, value in zip(children[:4], tokens, strict=True):
        if value:
            child.inc(value)
    if cost:
        children[4].inc(cost)


_llm_attempt_children: dict[tuple[str, str, str], Counter] = {}


def observe_llm_attempt(backend: str, deployment: str, result: str) -> None:
    """Count one upstream attempt of an LLM request."""
    key = (backend, deployment, result)
    child = _llm_attempt_children.get(key)
    if child is None:
        child = _llm_attempt_children[key] = LLM_ATTEMPTS.labels(backend, deployment, result)
    child.inc()


# --- A2A tasks ------------------------------------------------------------------------------

TASK_DURATION_BUCKETS: Final = (
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0,
)  # fmt: skip

A2A_TASKS = Counter(
    "crossway_a2a_tasks_total",
    "A2A task state transitions, by agent and the state entered (submitted, working, ...).",
    ["agent", "state"],
)
A2A_TASK_DURATION = Histogram(
    "crossway_a2a_task_duration_seconds",
    "Time from an A2A task's creation to its terminal state, by agent and terminal state.",
    ["agent", "state"],
    buckets=TASK_DURATION_BUCKETS,
)


def observe_a2a_task(agent: str, state: str, duration: float | None = None) -> None:
    """Count a task entering `state`; `duration` (seconds since it was created) when terminal."""
    A2A_TASKS.labels(agent, state).inc()
    if duration is not None:
        A2A_TASK_DURATION.labels(agent, state).observe(max(duration, 0.0))


SPEND_USD = Counter(
    "crossway_spend_usd_total",
    "USD spent on LLM calls, by route, model, team and user (`-` when unknown).",
    ["route", "model", "team", "user"],
)
BUDGET_REFUSALS = Counter(
    "crossway_budget_refusals_total",
    "Calls refused because a budget was spent, by whose budget (key, user, team).",
    ["scope"],
)
RATE_LIMITED = Counter(
    "crossway_rate_limited_total", "Calls refused by a rate limit, by limit name.", ["limit"]
)
STORE_UP = Gauge(
    "crossway_store_up",
    "1 while a shared store (accounting) answers, 0 while it fails.",
    ["store"],
    multiprocess_mode="livemin",
)

_spend_children: dict[tuple[str, str, str, str], Counter] = {}


def observe_spend(
    route: str | None, model: str | None, team: str | None, user: str | None, cost: float
) -> None:
    """Count one call's spend."""
    key = (route or "-", model or "-", team or "-", user or "-")
    child = _spend_children.get(key)
    if child is None:
        if len(_spend_children) > 10_000:  # a label explosion: fold the rest
            key = ("-", "-", "-", "-")
        child = _spend_children[key] = SPEND_USD.labels(*key)
    if cost:
        child.inc(cost)


def observe_budget_refusal(scope: str) -> None:
    """Count one call refused for a spent budget."""
    BUDGET_REFUSALS.labels(scope).inc()


def observe_rate_limited(limit: str) -> None:
    """Count one call refused by a rate limit."""
    RATE_LIMITED.labels(limit).inc()


def set_store_up(store: str, up: bool) -> None:
    """Whether a shared store works (shown by `/readyz` and as a gauge)."""
    STORE_UP.labels(store).set(1 if up else 0)
