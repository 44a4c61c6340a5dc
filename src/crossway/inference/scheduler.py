"""Which endpoint of an inference pool serves one request: filters, weighted scorers, a picker.

    filters    ready (its metrics answer), GPU memory headroom (`min_gpu_free_mb`)
    scorers    each 0-1, weighted (`scheduler.scorers`):
                 prefix           share of the prompt's leading blocks this endpoint served lately
                 queue            fewest waiting requests (min-max over the candidates)
                 kv_cache         1 - KV-cache use
                 lora             adapter loaded 1 > free adapter slot 0.6 > adapter queued 0.4 > none 0
                 inflight_tokens  fewest estimated tokens in flight (min-max)
                 gpu              1 - GPU utilisation (DCGM)
    picker     max_score (ties at random), random, round_robin
    then       the rest in score order: the failover order when a pick fails before the first byte

Scraped values are used only while fresh (`metrics.stale_after`); between two scrapes an
endpoint's queue is its scraped queue plus the requests this worker sent it since; with no
fresh metrics, Crossway's own in-flight count stands in. A value nobody knows scores 0.5.

The prefix index: the prompt's text is cut into `block_chars` blocks; block i's hash chains
block i-1's and starts from the model's name, so equal hashes mean equal prefixes for the same
model. Each endpoint remembers the blocks of the requests sent to it (an LRU of
`lru_blocks_per_endpoint`), and the index maps a block to the endpoints holding it.

Before scoring, endpoints over a saturation threshold are filtered out while others are left,
so prefix affinity never sends a request to an overloaded endpoint when another has room.

The saturation detector: the pool is saturated when every ready endpoint's fresh metrics are
over a threshold (`saturation.queue_depth` waiting, or `saturation.kv_cache` use) -- an
endpoint without fresh metrics counts as saturated, as the reference EPP does. Then requests
with a priority below zero are shed with a 429; no ready endpoint at all is a 503.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from crossway.config.inference import PoolMetricsConfig, SchedulerConfig
from crossway.errors import RateLimited, ServiceUnavailable
from crossway.inference.state import Endpoint, ServerMetrics

UNKNOWN_SCORE: Final = 0.5
"""What a scorer gives an endpoint whose value is not known."""
LORA_LOADED: Final = 1.0
LORA_FREE_SLOT: Final = 0.6
LORA_QUEUED: Final = 0.4
LORA_NONE: Final = 0.0
POOL_SATURATED: Final = "pool_saturated"
"""Error code of a sheddable request refused because the pool is saturated (429)."""
NO_READY_ENDPOINT: Final = "no_ready_endpoint"
"""Error code when no endpoint of the pool is ready (503)."""


@dataclass(slots=True)
class PickRequest:
    """What the scheduler needs to know about one request."""

    model: str  # the upstream model name: the base model or a LoRA adapter
    prompt: str  # the prompt's text (system prompt first), for prefix affinity
    tokens: int = 0  # estimated prompt plus output tokens
    priority: int = 0  # below zero: sheddable


@dataclass(slots=True)
class Decision:
    """The endpoints one request tries, best first, and why."""

    ranked: list[Endpoint]
    scores: dict[str, float] = field(default_factory=dict)  # endpoint name -> weighted score
    prefix_hit: float = 0.0  # the chosen endpoint's prefix score (0-1)
    hashes: list[int] = field(default_factory=list)  # the prompt's block hashes
    picked_by: str = "scheduler"  # or "endpoint_picker", "fallback"

    def header(self) -> str:
        """`name score` of the ranked endpoints, for logs: `10.0.0.5:8000=4.71,...`."""
        return ",".join(f"{e.name}={self.scores.get(e.name, 0.0):.2f}" for e in self.ranked)


class PrefixIndex:
    """Which endpoints recently served which prefix blocks (bounded per endpoint)."""

    __slots__ = ("_blocks", "_holders", "block_chars", "capacity", "max_blocks")

    def __init__(self, block_chars: int, max_blocks: int, capacity: int) -> None:
        self.block_chars = block_chars
        self.max_blocks = max_blocks
        self.capacity = capacity
        self._holders: dict[int, set[str]] = {}  # block hash -> endpoint names
        self._blocks: dict[str, OrderedDict[int, None]] = {}  # endpoint name -> its LRU

    def hashes(self, model: str, prompt: str) -> list[int]:
        """Chained hashes of the prompt's full blocks (at most `max_blocks`), salted by model."""
        size = self.block_chars
        end = min(len(prompt) // size, self.max_blocks) * size
        h = hash(("crossway-prefix", model))
        out = []
        for i in range(0, end, size):
            h = hash((h, prompt[i : i + size]))
            out.append(h)
        return out

    def matches(self, hashes: Sequence[int], names: Sequence[str]) -> dict[str, int]:
        """How many leading blocks each named endpoint holds."""
        result = dict.fromkeys(names, 0)
        alive = set(names)
        holders = self._holders
        for depth, h in enumerate(hashes):
            held = holders.get(h)
            if not held:
                break
            gone = alive - held
            for name in gone:
                result[name] = depth
            alive &= held
            if not alive:
                break
        else:
            for name in alive:
                result[name] = len(hashes)
            return result
        for name in alive:
            result[name] = depth
        return result

    def add(self, name: str, hashes: Sequence[int]) -> None:
        """Record that endpoint `name` now holds these blocks (most recent last)."""
        lru = self._blocks.get(name)
        if lru is None:
            lru = self._blocks[name] = OrderedDict()
        holders = self._holders
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
                continue
            lru[h] = None
            held = holders.get(h)
            if held is None:
                holders[h] = {name}
            else:
                held.add(name)
        while len(lru) > self.capacity:
            old, _ = lru.popitem(last=False)
            held = holders.get(old)
            if held is not None:
                held.discard(name)
                if not held:
                    del holders[old]

    def forget(self, name: str) -> None:
        """Drop everything an endpoint held (it left the pool)."""
        lru = self._blocks.pop(name, None)
        if lru is None:
            return
        for h in lru:
            held = self._holders.get(h)
            if held is not None:
                held.discard(name)
                if not held:
                    del self._holders[h]

    def size(self, name: str) -> int:
        lru = self._blocks.get(name)
        return len(lru) if lru is not None else 0


class Scheduler:
    """One pool's scheduler (per worker process)."""

    def __init__(
        self,
        config: SchedulerConfig,
        metrics: PoolMetricsConfig,
        *,
        endpoint_cooldown: float,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.stale_after = metrics.stale_after
        self.endpoint_cooldown = endpoint_cooldown
        self.rng = rng or random.Random()
        self.weights = {k: w for k, w in config.scorers.items() if w > 0}
        prefix = config.prefix
        self.index = PrefixIndex(
            prefix.block_chars, prefix.max_blocks, prefix.lru_blocks_per_endpoint
        )
        self._rr = 0

    # -- the decision --------------------------------------------------------------------------

    def decide(self, endpoints: Sequence[Endpoint], request: PickRequest) -> Decision:
        """Rank the pool's endpoints for `request`, or raise 429 (shed) / 503 (none ready)."""
        now = time.monotonic()
        ready = [e for e in endpoints if e.ready]
        if not ready:
            raise ServiceUnavailable(
                "no endpoint of the inference pool is ready (their metrics do not answer)",
                code=NO_READY_ENDPOINT,
                status=503,
            )
        fresh = {e.name: e.fresh_server(self.stale_after, now) for e in ready}
        if request.priority < 0 and self._saturated(ready, fresh):
            raise RateLimited(
                "the inference pool is saturated and this request is sheddable (priority "
                f"{request.priority}); try again later",
                code=POOL_SATURATED,
            )
        candidates = self._filter(ready, fresh, now)
        weights = self.weights
        hashes: list[int] = []
        prefix_scores: dict[str, float] = {}
        if "prefix" in weights and request.prompt:
            hashes = self.index.hashes(request.model, request.prompt)
            if hashes:
                matched = self.index.matches(hashes, [e.name for e in candidates])
                total = len(hashes)
                prefix_scores = {name: n / total for name, n in matched.items()}
        scores = self._score(candidates, request, fresh, prefix_scores, now) if weights else {}
        ranked = self._pick(candidates, scores)
        cooling = [e for e in ranked if e.cooldown_until > now]
        if cooling and len(cooling) < len(ranked):
            ranked = [e for e in ranked if e.cooldown_until <= now] + cooling
        decision = Decision(ranked, scores, prefix_scores.get(ranked[0].name, 0.0), hashes)
        return decision

    def _filter(
        self, ready: list[Endpoint], fresh: dict[str, ServerMetrics | None], now: float
    ) -> list[Endpoint]:
        """Drop endpoints over the saturation thresholds, and those short of GPU memory, while
        others are left (a filter never empties the list)."""
        candidates = ready
        if len(candidates) > 1:
            roomy = [e for e in candidates if not self._over(e, fresh[e.name])]
            if roomy:
                candidates = roomy
        floor = self.config.min_gpu_free_mb
        if floor is None or len(candidates) == 1:
            return candidates
        with_memory = []
        for e in candidates:
            gpu = e.fresh_gpu(self.stale_after, now)
            if gpu is None or gpu.gpu_fb_free_mb is None or gpu.gpu_fb_free_mb >= floor:
                with_memory.append(e)
        return with_memory or candidates

    def _over(self, e: Endpoint, m: ServerMetrics | None) -> bool:
        """Whether fresh metrics put the endpoint over a saturation threshold."""
        if m is None:
            return False
        limits = self.config.saturation
        return self._queue(e, m) >= limits.queue_depth or (
            m.kv_cache is not None and m.kv_cache >= limits.kv_cache
        )

    def _saturated(self, ready: list[Endpoint], fresh: dict[str, ServerMetrics | None]) -> bool:
        # An endpoint without fresh metrics counts as saturated (for shedding only).
        return all(fresh[e.name] is None or self._over(e, fresh[e.name]) for e in ready)

    def _queue(self, e: Endpoint, m: ServerMetrics | None) -> float:
        """Waiting requests: scraped, plus what this worker sent since that scrape."""
        if m is None or m.waiting is None:
            return float(e.in_flight)
        if e.seen_server_at != e.server_at:
            e.seen_server_at = e.server_at
            e.in_flight_at_scrape = e.in_flight
        return m.waiting + max(0, e.in_flight - e.in_flight_at_scrape)

    def _score(
        self,
        candidates: list[Endpoint],
        request: PickRequest,
        fresh: dict[str, ServerMetrics | None],
        prefix_scores: dict[str, float],
        now: float,
    ) -> dict[str, float]:
        weights = self.weights
        totals = dict.fromkeys((e.name for e in candidates), 0.0)
        w = weights.get("prefix")
        if w and prefix_scores:
            for name, s in prefix_scores.items():
                totals[name] += w * s
        w = weights.get("queue")
        if w:
            queues = [self._queue(e, fresh[e.name]) for e in candidates]
            _add_min_max(totals, candidates, queues, w)
        w = weights.get("kv_cache")
        if w:
            for e in candidates:
                m = fresh[e.name]
                kv = m.kv_cache if m is not None else None
                totals[e.name] += w * (
                    UNKNOWN_SCORE if kv is None else 1.0 - min(max(kv, 0.0), 1.0)
                )
        w = weights.get("lora")
        if w:
            for e in candidates:
                totals[e.name] += w * self._lora(e, fresh[e.name], request.model, now)
        w = weights.get("inflight_tokens")
        if w:
            _add_min_max(totals, candidates, [float(e.in_flight_tokens) for e in candidates], w)
        w = weights.get("gpu")
        if w:
            for e in candidates:
                gpu = e.fresh_gpu(self.stale_after, now)
                util = gpu.gpu_util if gpu is not None else None
                totals[e.name] += w * (
                    UNKNOWN_SCORE if util is None else 1.0 - min(max(util, 0.0), 1.0)
                )
        return totals

    def _lora(self, e: Endpoint, m: ServerMetrics | None, model: str, now: float) -> float:
        if m is not None and model in m.models:
            return LORA_LOADED  # the base model: every endpoint serving it is as good
        sent = e.recent_adapters.get(model)
        if m is None:
            if sent is not None and now - sent <= self.stale_after:
                return LORA_LOADED
            return UNKNOWN_SCORE
        if m.max_lora is None and not m.running_adapters and not m.waiting_adapters:
            return UNKNOWN_SCORE  # no LoRA information on this page: no preference
        if model in m.running_adapters:
            return LORA_LOADED
        if sent is not None and _likely_loaded(e, sent, m.max_lora, now, self.stale_after):
            return LORA_LOADED
        if m.max_lora is not None and _slots_used(e, m, now, self.stale_after) < m.max_lora:
            return LORA_FREE_SLOT
        if model in m.waiting_adapters:
            return LORA_QUEUED
        return LORA_NONE

    def _pick(self, candidates: list[Endpoint], scores: dict[str, float]) -> list[Endpoint]:
        picker = self.config.picker
        if picker == "round_robin":
            self._rr = (self._rr + 1) % len(candidates)
            return candidates[self._rr :] + candidates[: self._rr]
        rnd = self.rng.random
        if picker == "random" or not scores:
            return sorted(candidates, key=lambda _: rnd())
        return sorted(candidates, key=lambda e: (scores[e.name], rnd()), reverse=True)

    # -- after the decision --------------------------------------------------------------------

    def sent(self, endpoint: Endpoint, request: PickRequest, decision: Decision) -> None:
        """The request went to `endpoint`: remember its blocks and adapter there."""
        if decision.hashes:
            self.index.add(endpoint.name, decision.hashes)
        server = endpoint.server
        if server is None or request.model not in server.models:  # an adapter, not the base
            endpoint.recent_adapters[request.model] = time.monotonic()
        if len(endpoint.recent_adapters) > RECENT_ADAPTERS_MAX:
            oldest = min(endpoint.recent_adapters, key=endpoint.recent_adapters.__getitem__)
            del endpoint.recent_adapters[oldest]

    def failed(self, endpoint: Endpoint, unreachable: bool, failures_to_cool: int) -> None:
        """An attempt on `endpoint` failed before the first byte."""
        endpoint.failures += 1
        if unreachable or endpoint.failures >= failures_to_cool:
            endpoint.cooldown_until = time.monotonic() + self.endpoint_cooldown

    def succeeded(self, endpoint: Endpoint) -> None:
        endpoint.failures = 0
        endpoint.cooldown_until = 0.0
        endpoint.served += 1


RECENT_ADAPTERS_MAX: Final = 64
"""Adapters remembered per endpoint as recently sent there."""


def _likely_loaded(
    e: Endpoint, sent: float, max_lora: int | None, now: float, stale_after: float
) -> bool:
    """Whether an adapter sent to `e` at `sent` is probably still loaded there. vLLM lists only
    the adapters of running requests, not the idle ones still in their slots: an adapter counts
    as loaded when it was sent there since the last scrape, or is among the `max_lora` adapters
    sent there most recently (a server evicts the least recently used)."""
    if now - sent <= stale_after:
        return True
    if not max_lora:
        return False
    newer = sum(1 for when in e.recent_adapters.values() if when > sent)
    return newer < max_lora


def _slots_used(e: Endpoint, m: ServerMetrics, now: float, stale_after: float) -> int:
    """Adapter slots probably taken on `e`: its running adapters and the idle ones it likely
    still holds (`_likely_loaded`)."""
    used = set(m.running_adapters)
    for adapter, sent in e.recent_adapters.items():
        if adapter not in used and _likely_loaded(e, sent, m.max_lora, now, stale_after):
            used.add(adapter)
    return len(used)


def _add_min_max(
    totals: dict[str, float], candidates: list[Endpoint], values: list[float], weight: float
) -> None:
    """Add `weight` x (1 for the lowest value ... 0 for the highest) to each endpoint's total."""
    low = min(values)
    span = max(values) - low
    if span <= 0:
        for e in candidates:
            totals[e.name] += weight
        return
    for e, v in zip(candidates, values, strict=True):
        totals[e.name] += weight * (1.0 - (v - low) / span)


def prompt_text(body: dict[str, object], limit: int) -> str:
    """The prompt's text as the prefix index sees it (roles and contents in order, tools'
    schemas first), at most `limit` characters."""
    parts: list[str] = []
    size = 0
    tools = body.get("tools")
    if tools:
        text = repr(tools)
        parts.append(text)
        size += len(text)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if size >= limit:
                break
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                text = content
            elif isinstance(content, list):
                text = "".join(
                    str(p.get("text", "")) if isinstance(p, dict) else "" for p in content
                )
            else:
                text = ""
            parts.append(f"<{message.get('role', '')}>")
            parts.append(text)
            size += len(text) + 8
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    out = "".join(parts)
    return out[:limit]
