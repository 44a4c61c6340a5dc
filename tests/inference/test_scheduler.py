"""The scheduler on its own: filters, scorers, picker, prefix index, saturation."""

from __future__ import annotations

import random
import time

import pytest

from crossway.config.inference import PoolMetricsConfig, SchedulerConfig
from crossway.errors import RateLimited, ServiceUnavailable
from crossway.inference.scheduler import (
    NO_READY_ENDPOINT,
    POOL_SATURATED,
    PickRequest,
    PrefixIndex,
    Scheduler,
    prompt_text,
)
from crossway.inference.state import Endpoint, ServerMetrics, endpoint_name


def _endpoint(port: int, **metrics: object) -> Endpoint:
    e = Endpoint(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}/metrics")
    if metrics:
        e.server = ServerMetrics(**metrics)  # type: ignore[arg-type]
        e.server_at = time.monotonic()
    return e


def _scheduler(**config: object) -> Scheduler:
    return Scheduler(
        SchedulerConfig.model_validate(config),
        PoolMetricsConfig(),
        endpoint_cooldown=5.0,
        rng=random.Random(7),
    )


SYSTEM = "You are a careful assistant for the billing team. " * 40  # ~2,000 characters


def test_endpoint_names() -> None:
    assert endpoint_name("http://10.0.0.5:8000/v1") == "10.0.0.5:8000"
    assert endpoint_name("https://vllm.internal/v1") == "vllm.internal:443"
    assert endpoint_name("http://[::1]:9000/v1") == "[::1]:9000"


def test_prefix_hashes_chain_and_salt() -> None:
    index = PrefixIndex(64, 256, 1000)
    a = index.hashes("m", SYSTEM + "question one")
    b = index.hashes("m", SYSTEM + "another question")
    assert len(a) == len(SYSTEM + "question one") // 64
    shared = len(SYSTEM) // 64
    assert a[:shared] == b[:shared]  # same prefix, same chain
    assert index.hashes("other-model", SYSTEM)[0] != a[0]  # salted by the model
    # chained: an equal block after a different one hashes differently
    x = index.hashes("m", "A" * 64 + "B" * 64)
    y = index.hashes("m", "C" * 64 + "B" * 64)
    assert x[1] != y[1]
    assert len(index.hashes("m", "x" * 64 * 1000)) == 256  # at most max_blocks


def test_prefix_index_matches_and_lru_bound() -> None:
    index = PrefixIndex(64, 256, capacity=10)
    h = index.hashes("m", "a" * 64 * 8)
    index.add("e1", h[:8])
    index.add("e2", h[:3])
    assert index.matches(h, ["e1", "e2", "e3"]) == {"e1": 8, "e2": 3, "e3": 0}
    other = index.hashes("m", "z" * 64 * 8)
    index.add("e1", other)  # 16 blocks > capacity 10: the oldest go
    assert index.size("e1") == 10
    assert index.matches(h, ["e1"])["e1"] == 0  # its first blocks were the oldest
    assert index.matches(other, ["e1"])["e1"] == 8
    index.forget("e2")
    assert index.matches(h, ["e2"]) == {"e2": 0}
    assert index.size("e2") == 0


def test_prefix_affinity_follows_the_endpoint_that_served() -> None:
    s = _scheduler(scorers={"prefix": 1})
    endpoints = [_endpoint(p) for p in (1, 2, 3, 4)]
    first = PickRequest(
        "m",
        prompt_text(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "q1"},
                ]
            },
            16384,
        ),
    )
    d = s.decide(endpoints, first)
    chosen = d.ranked[0]
    s.sent(chosen, first, d)
    second = PickRequest(
        "m",
        prompt_text(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "q2"},
                ]
            },
            16384,
        ),
    )
    d2 = s.decide(endpoints, second)
    assert d2.ranked[0] is chosen
    assert d2.prefix_hit > 0.9
    # another model does not share the blocks
    d3 = s.decide(endpoints, PickRequest("other", second.prompt))
    assert d3.prefix_hit == 0


def test_queue_scorer_uses_scraped_queue_plus_what_was_sent_since() -> None:
    s = _scheduler(scorers={"queue": 1})
    a = _endpoint(1, waiting=0, running=2, kv_cache=0.1)
    b = _endpoint(2, waiting=3, running=2, kv_cache=0.1)
    req = PickRequest("m", "")
    assert s.decide([a, b], req).ranked[0] is a
    # four requests sent to `a` since its scrape: it now has the longer queue
    s.decide([a, b], req)
    a.in_flight += 4
    assert s.decide([a, b], req).ranked[0] is b


def test_stale_metrics_are_not_trusted() -> None:
    s = _scheduler(scorers={"queue": 1})
    a = _endpoint(1, waiting=0, running=0)
    b = _endpoint(2, waiting=9, running=8)
    b.server_at = a.server_at = time.monotonic() - 60  # both stale
    a.in_flight, b.in_flight = 5, 1  # Crossway's own counts decide
    assert s.decide([a, b], PickRequest("m", "")).ranked[0] is b


def test_kv_cache_scorer_and_saturated_endpoints_filtered() -> None:
    s = _scheduler(scorers={"kv_cache": 1})
    busy = _endpoint(1, waiting=0, kv_cache=0.6)
    empty = _endpoint(2, waiting=0, kv_cache=0.05)
    d = s.decide([busy, empty], PickRequest("m", ""))
    assert d.ranked == [empty, busy]
    assert d.scores[empty.name] == pytest.approx(0.95)
    # over the KV threshold (0.8) or the queue threshold (5): left out while others have room
    full = _endpoint(3, waiting=0, kv_cache=0.95)
    queued = _endpoint(4, waiting=7, kv_cache=0.1)
    assert s.decide([full, queued, busy], PickRequest("m", "")).ranked == [busy]
    assert len(s.decide([full, queued], PickRequest("m", "")).ranked) == 2


def test_lora_affinity_order() -> None:
    s = _scheduler(scorers={"lora": 1})
    loaded = _endpoint(
        1, running_adapters=frozenset({"sql"}), max_lora=1, models=frozenset({"base"})
    )
    free = _endpoint(2, running_adapters=frozenset(), max_lora=2, models=frozenset({"base"}))
    queued = _endpoint(
        3,
        running_adapters=frozenset({"x", "y"}),
        waiting_adapters=frozenset({"sql"}),
        max_lora=2,
        models=frozenset({"base"}),
    )
    none = _endpoint(
        4, running_adapters=frozenset({"x", "y"}), max_lora=2, models=frozenset({"base"})
    )
    d = s.decide([none, queued, free, loaded], PickRequest("sql", ""))
    assert d.ranked == [loaded, free, queued, none]
    # an adapter loaded nowhere goes where a slot is free
    d = s.decide([none, queued, free, loaded], PickRequest("new-adapter", ""))
    assert d.ranked[0] is free
    # the base model: every endpoint is as good
    d = s.decide([none, queued, free, loaded], PickRequest("base", ""))
    assert len({d.scores[e.name] for e in d.ranked}) == 1


def test_lora_remembers_where_an_adapter_was_sent_between_scrapes() -> None:
    s = _scheduler(scorers={"lora": 1})
    a = _endpoint(1, running_adapters=frozenset(), max_lora=2)
    b = _endpoint(2, running_adapters=frozenset(), max_lora=2)
    req = PickRequest("sql", "")
    d = s.decide([a, b], req)
    s.sent(d.ranked[0], req, d)
    for _ in range(5):
        assert s.decide([a, b], req).ranked[0] is d.ranked[0]


def test_gpu_scorer_and_memory_filter() -> None:
    s = _scheduler(scorers={"gpu": 1}, min_gpu_free_mb=1000)
    busy = _endpoint(1)
    idle = _endpoint(2)
    full = _endpoint(3)
    now = time.monotonic()
    busy.gpu, busy.gpu_at = ServerMetrics(gpu_util=0.9, gpu_fb_free_mb=4000), now
    idle.gpu, idle.gpu_at = ServerMetrics(gpu_util=0.1, gpu_fb_free_mb=4000), now
    full.gpu, full.gpu_at = ServerMetrics(gpu_util=0.0, gpu_fb_free_mb=100), now
    d = s.decide([busy, idle, full], PickRequest("m", ""))
    assert d.ranked == [idle, busy]  # `full` has too little free memory
    # when no endpoint has the headroom, the filter does not fail the request
    idle.gpu.gpu_fb_free_mb = busy.gpu.gpu_fb_free_mb = 10
    assert len(s.decide([busy, idle, full], PickRequest("m", "")).ranked) == 3


def test_saturation_sheds_only_sheddable_requests() -> None:
    s = _scheduler()
    a = _endpoint(1, waiting=9, kv_cache=0.5)
    b = _endpoint(2, waiting=1, kv_cache=0.95)
    with pytest.raises(RateLimited) as info:
        s.decide([a, b], PickRequest("m", "", priority=-1))
    assert info.value.code == POOL_SATURATED
    assert s.decide([a, b], PickRequest("m", "", priority=0)).ranked  # critical: still served
    b.server = ServerMetrics(waiting=1, kv_cache=0.2)
    assert s.decide([a, b], PickRequest("m", "", priority=-1)).ranked[0] is b
    # unknown metrics count as saturated for sheddable requests
    unknown = _endpoint(3)
    with pytest.raises(RateLimited):
        s.decide([unknown], PickRequest("m", "", priority=-1))


def test_nothing_ready_is_503() -> None:
    s = _scheduler()
    a = _endpoint(1, waiting=0)
    a.ready = False
    with pytest.raises(ServiceUnavailable) as info:
        s.decide([a], PickRequest("m", ""))
    assert info.value.code == NO_READY_ENDPOINT and info.value.status_code == 503


def test_round_robin_cycles_and_cooling_endpoints_go_last() -> None:
    s = _scheduler(scorers={}, picker="round_robin")
    endpoints = [_endpoint(p) for p in (1, 2, 3)]
    firsts = [s.decide(endpoints, PickRequest("m", "")).ranked[0].name for _ in range(6)]
    assert sorted(set(firsts)) == sorted(e.name for e in endpoints)
    assert firsts[:3] == firsts[3:]
    s.failed(endpoints[0], unreachable=True, failures_to_cool=3)
    for _ in range(3):
        assert s.decide(endpoints, PickRequest("m", "")).ranked[-1] is endpoints[0]
    s.succeeded(endpoints[0])
    assert endpoints[0].cooldown_until == 0


def test_default_weights_balance_affinity_and_load() -> None:
    """With the defaults, a prefix hit wins over a slightly shorter queue, not over a
    saturated endpoint."""
    s = _scheduler()
    hot = _endpoint(1, waiting=1, running=4, kv_cache=0.4)
    cold = _endpoint(2, waiting=0, running=4, kv_cache=0.35)
    req = PickRequest("m", SYSTEM + "q")
    d = s.decide([hot, cold], req)
    s.sent(hot, req, d)
    assert s.decide([hot, cold], PickRequest("m", SYSTEM + "other")).ranked[0] is hot
    hot.server = ServerMetrics(waiting=12, running=8, kv_cache=0.97)
    assert s.decide([hot, cold], PickRequest("m", SYSTEM + "third")).ranked[0] is cold


def test_prompt_text_bounds_and_shapes() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url"}]},
        ]
    }
    text = prompt_text(body, 1000)
    assert "sys" in text and "hello" in text
    assert len(prompt_text({"messages": [{"role": "user", "content": "x" * 5000}]}, 100)) == 100
    assert prompt_text({"messages": "nonsense"}, 100) == ""


def test_an_idle_adapter_still_in_its_slot_keeps_its_affinity() -> None:
    """vLLM lists only adapters with running requests: an adapter sent to an endpoint among its
    last `max_lora` adapters is taken as still loaded there (and as taking a slot), one pushed
    out of them is not."""
    s = _scheduler(scorers={"lora": 1})
    a = _endpoint(1, running_adapters=frozenset(), max_lora=2)
    b = _endpoint(2, running_adapters=frozenset(), max_lora=2)
    long_ago = time.monotonic() - 60  # long before the last scrape
    a.recent_adapters = {"sql": long_ago, "chat": long_ago + 1}
    assert s.decide([a, b], PickRequest("sql", "")).ranked[0] is a
    a.recent_adapters["x"] = long_ago + 2
    a.recent_adapters["y"] = long_ago + 3  # two newer adapters: sql was evicted
    d = s.decide([a, b], PickRequest("sql", ""))
    assert d.ranked[0] is b  # a's two slots hold x and y; b has a free one
    assert d.scores[a.name] == 0.0
