"""Prometheus metrics for the data plane.

Workers are separate processes: `crossway serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh
directory before they start, and the admin plane aggregates their files.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_left
from typing import Any, Final

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


# --- the hot path's writes ------------------------------------------------------------------
# prometheus_client's `inc`/`observe` take a lock, ask the OS for the pid (to notice a fork)
# and validate on every call: about 1.1 µs per value in multiprocess mode, and a passthrough
# request writes about 14 values. The label children the request path uses are bound once to
# `FastCounter`/`FastHistogram`, which write the same values (the same mmap files) directly:
# about 0.1 µs each. The event loop is the only writer in a worker; a fork (a child process
# inherits the caches) clears the bound children, and binding asks prometheus_client once, so
# its own pid check still moves a forked child's values to its own file.


_pack_value: Final = struct.Struct(b"dd").pack_into


class FastCounter:
    """One prometheus_client value (a counter's label child, or a histogram's bucket or sum),
    incremented without prometheus_client's per-call overhead."""

    __slots__ = ("_file", "_pos", "_value")

    def __init__(self, value: Any) -> None:
        value.get()  # prometheus_client's own fork check, once (multiprocess mode)
        self._value = value
        self._file: Any = getattr(value, "_file", None)  # the worker's MmapedDict, or None
        self._pos = 0
        if self._file is not None:
            key = value._key
            if key not in self._file._positions:
                self._file.write_value(key, value._value, 0.0)
            # A value's slot never moves (the file only grows; its mmap is re-read per write).
            self._pos = self._file._positions[key]

    @classmethod
    def of(cls, counter: Counter) -> FastCounter:
        """The fast form of a counter's label child."""
        return cls(counter._value)

    def inc(self, amount: float = 1.0) -> None:
        value = self._value
        value._value += amount
        if self._file is not None:  # the (value, timestamp) doubles MmapedDict.write_value packs
            _pack_value(self._file._m, self._pos, value._value, 0.0)


class FastHistogram:
    """A histogram's label child, observed without prometheus_client's per-call overhead."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._bounds: tuple[float, ...] = tuple(child._upper_bounds)
        self._buckets = [FastCounter(bucket) for bucket in child._buckets]
        self._sum = FastCounter(child._sum)

    def observe(self, amount: float) -> None:
        # The first bucket whose upper bound holds `amount`, as prometheus_client counts it.
        self._buckets[bisect_left(self._bounds, amount)].inc(1.0)
        self._sum.inc(amount)


_request_children: dict[tuple[str, int], tuple[FastCounter, FastHistogram]] = {}
_upstream_children: dict[tuple[str, int], FastHistogram] = {}


def observe_request(route: str, status: int, seconds: float) -> None:
    """Count one finished request (label children cached: no lookup per request)."""
    key = (route, status)
    children = _request_children.get(key)
    if children is None:
        label = str(status)
        children = (
            FastCounter.of(REQUESTS.labels(route, label)),
            FastHistogram(REQUEST_DURATION.labels(route, label)),
        )
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def observe_upstream(backend: str, status: int, seconds: float) -> None:
    """Record how long an upstream took to answer."""
    key = (backend, status)
    child = _upstream_children.get(key)
    if child is None:
        child = _upstream_children[key] = FastHistogram(
            UPSTREAM_DURATION.labels(backend, str(status))
        )
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
    tuple[str, str, str], tuple[FastCounter, FastCounter, FastCounter, FastCounter, FastCounter]
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
            FastCounter.of(LLM_TOKENS.labels(backend, model, provider, "input")),
            FastCounter.of(LLM_TOKENS.labels(backend, model, provider, "output")),
            FastCounter.of(LLM_TOKENS.labels(backend, model, provider, "cached")),
            FastCounter.of(LLM_TOKENS.labels(backend, model, provider, "reasoning")),
            FastCounter.of(LLM_COST.labels(backend, model, provider)),
        )
        _llm_usage_children[key] = children
    input_tokens, output_tokens, cached, reasoning = tokens
    if input_tokens:
        children[0].inc(input_tokens)
    if output_tokens:
        children[1].inc(output_tokens)
    if cached:
        children[2].inc(cached)
    if reasoning:
        children[3].inc(reasoning)
    if cost:
        children[4].inc(cost)


_llm_attempt_children: dict[tuple[str, str, str], FastCounter] = {}


def observe_llm_attempt(backend: str, deployment: str, result: str) -> None:
    """Count one upstream attempt of an LLM request."""
    key = (backend, deployment, result)
    child = _llm_attempt_children.get(key)
    if child is None:
        child = _llm_attempt_children[key] = FastCounter.of(
            LLM_ATTEMPTS.labels(backend, deployment, result)
        )
    child.inc()


# --- GenAI client metrics (OpenTelemetry GenAI semantic conventions) -------------------------

TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""The GenAI conventions' advised buckets for `gen_ai.client.token.usage`."""
TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TPOT_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
KEY_LABELS_MAX: Final = 1000
"""Distinct (key name, team) label pairs kept; later ones are counted as `_other`."""
NO_LABEL: Final = "-"
OTHER_LABEL: Final = "_other"
TOKEN_TYPES: Final = ("input", "output", "cached", "reasoning")

GEN_AI_TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens per LLM call, by gen_ai_token_type (input, output, cached, reasoning), model route, "
    "provider, key name and team (`-` without a key).",
    ["gen_ai_token_type", "model", "provider", "key", "team"],
    buckets=TOKEN_BUCKETS,
)
GEN_AI_COST = Counter(
    "gen_ai_client_cost",
    "Estimated LLM spend in USD from the price table, by model route, provider, key name, team.",
    ["model", "provider", "key", "team"],
)
GEN_AI_TTFT = Histogram(
    "gen_ai_server_time_to_first_token",
    "Seconds from sending a streamed LLM request to its first chunk, by model route, provider.",
    ["model", "provider"],
    buckets=TTFT_BUCKETS,
)
GEN_AI_TPOT = Histogram(
    "gen_ai_server_time_per_output_token",
    "Seconds per output token after the first of a streamed answer, by model route, provider.",
    ["model", "provider"],
    buckets=TPOT_BUCKETS,
)

_key_labels: dict[tuple[str, str], tuple[str, str]] = {}
_gen_ai_usage_children: dict[tuple[str, str, str, str], tuple[FastHistogram, ...]] = {}
_gen_ai_cost_children: dict[tuple[str, str, str, str], FastCounter] = {}
_gen_ai_latency_children: dict[tuple[str, str], tuple[FastHistogram, FastHistogram]] = {}


def key_labels(key: dict[str, object] | None) -> tuple[str, str]:
    """The (key name, team) labels of a caller's key (`ctx.key`): `-` without one; past
    `KEY_LABELS_MAX` distinct pairs, `_other` (a key per user must not explode the series)."""
    if not key:
        return (NO_LABEL, NO_LABEL)
    name = key.get("name")
    team = key.get("team")
    pair = (str(name) if name else NO_LABEL, str(team) if team else NO_LABEL)
    labels = _key_labels.get(pair)
    if labels is None:
        if len(_key_labels) >= KEY_LABELS_MAX:
            return (OTHER_LABEL, OTHER_LABEL)  # not remembered: the table stays bounded
        labels = _key_labels[pair] = pair
    return labels


def observe_gen_ai_usage(
    model: str,
    provider: str,
    key: dict[str, object] | None,
    tokens: tuple[int, int, int, int],
    cost: float | None,
) -> None:
    """One LLM call's tokens (input, output, cached, reasoning; cached and reasoning only when
    there were any) and cost, by model route, provider, key name and team."""
    key_name, team = key_labels(key)
    labels = (model, provider, key_name, team)
    children = _gen_ai_usage_children.get(labels)
    if children is None:
        children = tuple(
            FastHistogram(GEN_AI_TOKEN_USAGE.labels(kind, *labels)) for kind in TOKEN_TYPES
        )
        _gen_ai_usage_children[labels] = children
    children[0].observe(tokens[0])
    children[1].observe(tokens[1])
    if tokens[2]:
        children[2].observe(tokens[2])
    if tokens[3]:
        children[3].observe(tokens[3])
    if cost:
        child = _gen_ai_cost_children.get(labels)
        if child is None:
            child = _gen_ai_cost_children[labels] = FastCounter.of(GEN_AI_COST.labels(*labels))
        child.inc(cost)


def _latency_children(model: str, provider: str) -> tuple[FastHistogram, FastHistogram]:
    key = (model, provider)
    children = _gen_ai_latency_children.get(key)
    if children is None:
        children = (
            FastHistogram(GEN_AI_TTFT.labels(model, provider)),
            FastHistogram(GEN_AI_TPOT.labels(model, provider)),
        )
        _gen_ai_latency_children[key] = children
    return children


def observe_time_to_first_token(model: str, provider: str, seconds: float) -> None:
    """A streamed answer's time to its first chunk."""
    _latency_children(model, provider)[0].observe(seconds)


def observe_time_per_output_token(model: str, provider: str, seconds: float) -> None:
    """A streamed answer's mean time per output token after the first."""
    _latency_children(model, provider)[1].observe(seconds)


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


LLM_COOLDOWNS = Counter(
    "crossway_llm_cooldowns_total",
    "LLM deployments ejected into cooldown (failing or rate limited), by deployment "
    "(provider/upstream model).",
    ["deployment"],
)


def observe_llm_cooldown(deployment: str) -> None:
    """Count one deployment entering (or extending) its cooldown."""
    LLM_COOLDOWNS.labels(deployment).inc()


def _forget_bound_children() -> None:
    """In a forked child: bind again (and so let prometheus_client move values to its file)."""
    for cache in (
        _request_children,
        _upstream_children,
        _llm_usage_children,
        _llm_attempt_children,
        _gen_ai_usage_children,
        _gen_ai_cost_children,
        _gen_ai_latency_children,
    ):
        cache.clear()


os.register_at_fork(after_in_child=_forget_bound_children)


INFERENCE_PICKS = Counter(
    "crossway_inference_picks_total",
    "Requests an inference pool sent to each endpoint, by who picked it (`scheduler`, "
    "`endpoint_picker`, `fallback`) and outcome (`ok`, or `failover` when the pick failed before "
    "the first byte and the next endpoint was tried).",
    ["pool", "endpoint", "picked_by", "outcome"],
)
INFERENCE_ENDPOINT_READY = Gauge(
    "crossway_inference_endpoint_ready",
    "Whether an inference pool's endpoint is ready (its metrics answer), per worker.",
    ["pool", "endpoint"],
    multiprocess_mode="livemax",
)


def observe_inference_pick(pool: str, endpoint: str, picked_by: str, outcome: str) -> None:
    """Count one request an inference pool sent to an endpoint."""
    INFERENCE_PICKS.labels(pool, endpoint, picked_by, outcome).inc()


def set_inference_endpoint_ready(pool: str, endpoint: str, ready: bool) -> None:
    """An endpoint entered or left its pool."""
    INFERENCE_ENDPOINT_READY.labels(pool, endpoint).set(1 if ready else 0)


GUARD_DECISIONS = Counter(
    "crossway_guard_decisions_total",
    "Guardrail findings, by guard, detector, action (`block`, `mask`, `log`, or `error_open` / "
    "`error_closed` when an external check failed) and direction (`request`, `response`).",
    ["guard", "detector", "action", "direction"],
)


def observe_guard_decision(guard: str, detector: str, action: str, direction: str, n: int) -> None:
    """Count `n` findings of one guard's detector."""
    GUARD_DECISIONS.labels(guard, detector, action, direction).inc(n)


# --- LLM response cache ---------------------------------------------------------------------

LLM_CACHE_REQUESTS = Counter(
    "crossway_llm_cache_requests_total",
    "LLM cache lookups, by backend, kind (`exact`, `semantic`) and result (`hit`, `miss`).",
    ["backend", "kind", "result"],
)
LLM_CACHE_BYPASSED = Counter(
    "crossway_llm_cache_bypassed_total",
    "LLM requests the cache did not consider, by backend and reason (`tools`, `temperature`, "
    "`turns`, `n`, `no_store`, `untranslatable`).",
    ["backend", "reason"],
)
LLM_CACHE_STORES = Counter(
    "crossway_llm_cache_stores_total",
    "LLM answers offered to the cache, by backend and result (`stored`, `too_large`, "
    "`incomplete`: an error, a broken stream or an answer the cache cannot replay).",
    ["backend", "result"],
)
LLM_CACHE_SAVED_TOKENS = Counter(
    "crossway_llm_cache_saved_tokens_total",
    "Tokens (input and output) the cached answers served would have cost upstream.",
    ["backend"],
)
LLM_CACHE_SAVED_COST = Counter(
    "crossway_llm_cache_saved_cost_usd_total",
    "USD the cached answers served would have cost upstream (from the price table).",
    ["backend"],
)
LLM_CACHE_ENTRIES = Gauge(
    "crossway_llm_cache_entries",
    "Entries in the LLM cache, by backend (summed over worker processes).",
    ["backend"],
    multiprocess_mode="livesum",
)


class LlmCacheChildren:
    """One backend's cache metric children, bound once."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.requests = {
            (kind, result): FastCounter.of(LLM_CACHE_REQUESTS.labels(backend, kind, result))
            for kind in ("exact", "semantic")
            for result in ("hit", "miss")
        }
        self.stores = {
            result: FastCounter.of(LLM_CACHE_STORES.labels(backend, result))
            for result in ("stored", "too_large", "incomplete")
        }
        self.saved_tokens = FastCounter.of(LLM_CACHE_SAVED_TOKENS.labels(backend))
        self.saved_cost = FastCounter.of(LLM_CACHE_SAVED_COST.labels(backend))
        self.entries = LLM_CACHE_ENTRIES.labels(backend)
        self._bypassed: dict[str, FastCounter] = {}

    def bypassed(self, reason: str) -> None:
        counter = self._bypassed.get(reason)
        if counter is None:
            counter = self._bypassed[reason] = FastCounter.of(
                LLM_CACHE_BYPASSED.labels(self.backend, reason)
            )
        counter.inc()


_llm_cache_children: dict[str, LlmCacheChildren] = {}


def llm_cache_children(backend: str) -> LlmCacheChildren:
    """The cache metrics of `backend` (bound on first use in each process)."""
    children = _llm_cache_children.get(backend)
    if children is None:
        children = _llm_cache_children[backend] = LlmCacheChildren(backend)
    return children


os.register_at_fork(after_in_child=_llm_cache_children.clear)
