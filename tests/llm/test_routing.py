"""The model router with pure inputs: resolution, ordering strategies, cooldown, back-off."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from crossway.config.llm import LlmBackendConfig, RetryConfig
from crossway.errors import (
    BadRequest,
    NotFound,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from crossway.llm.providers import build_provider
from crossway.llm.routing import (
    ModelRouter,
    backoff,
    estimate_prompt_tokens,
    is_retryable,
    parse_retry_after,
)


def router(models: list[dict], **routing: object) -> ModelRouter:
    config = LlmBackendConfig.model_validate(
        {
            "type": "llm",
            "providers": {
                "a": {"type": "openai"},
                "b": {"type": "openai"},
                "c": {"type": "openai"},
            },
            "models": models,
            "routing": routing,
        }
    )
    providers = {n: build_provider(n, p) for n, p in config.providers.items()}
    return ModelRouter(config, providers, rng=random.Random(7))


def test_exact_then_longest_wildcard() -> None:
    r = router(
        [
            {"name": "gpt", "targets": [{"provider": "a", "model": "gpt-4o"}]},
            {"name": "x/*", "targets": [{"provider": "b"}]},
            {"name": "x/long/*", "targets": [{"provider": "c"}]},
        ]
    )
    res = r.resolve("gpt")
    assert res.upstream_model(res.deployments[0]) == "gpt-4o"
    res = r.resolve("x/long/m1")
    assert (
        res.deployments[0].provider.name == "c" and res.upstream_model(res.deployments[0]) == "m1"
    )
    res = r.resolve("x/m2")
    assert res.deployments[0].provider.name == "b" and res.matched == "m2"
    with pytest.raises(NotFound):
        r.resolve("x/")
    with pytest.raises(NotFound) as info:
        r.resolve("other")
    assert info.value.code == "model_not_found"
    assert r.names() == ["gpt"]


def test_priorities_then_weights() -> None:
    r = router(
        [
            {
                "name": "m",
                "targets": [
                    {"provider": "c", "priority": 1},
                    {"provider": "a", "weight": 3},
                    {"provider": "b", "weight": 1},
                ],
            }
        ]
    )
    res = r.resolve("m")
    firsts = Counter()
    for _ in range(4000):
        order = r.order(res.deployments, res.strategy)
        assert order[-1].provider.name == "c"
        firsts[order[0].provider.name] += 1
    assert 0.7 < firsts["a"] / 4000 < 0.8


def test_cooled_down_deployments_go_last() -> None:
    r = router(
        [{"name": "m", "targets": [{"provider": "a"}, {"provider": "b"}]}],
        cooldown={"failures": 2, "seconds": 30},
    )
    res = r.resolve("m")
    a = next(d for d in res.deployments if d.provider.name == "a")
    r.failed(a, UpstreamError("x", status=500))
    assert a.health.cooldown_until == 0  # one failure is not enough
    r.failed(a, UpstreamError("x", status=500))
    assert a.health.cooldown_until > time.monotonic()
    for _ in range(20):
        assert [d.provider.name for d in r.order(res.deployments, res.strategy)] == ["b", "a"]
    r.succeeded(a, 0.1)
    assert a.health.cooldown_until == 0 and a.health.failures == 0


def test_429_ejects_at_once_for_retry_after() -> None:
    r = router([{"name": "m", "targets": [{"provider": "a"}]}], cooldown={"seconds": 1})
    d = r.resolve("m").deployments[0]
    r.failed(d, RateLimited("slow down", status=429, headers={"retry-after": "120"}))
    assert d.health.cooldown_until - time.monotonic() > 100


def test_least_in_flight_and_latency() -> None:
    r = router(
        [
            {
                "name": "m",
                "strategy": "least_in_flight",
                "targets": [{"provider": "a"}, {"provider": "b"}],
            }
        ]
    )
    res = r.resolve("m")
    res.deployments[0].health.in_flight = 3
    assert r.order(res.deployments, res.strategy)[0].provider.name == "b"
    r2 = router(
        [{"name": "m", "strategy": "latency", "targets": [{"provider": "a"}, {"provider": "b"}]}]
    )
    res2 = r2.resolve("m")
    r2.succeeded(res2.deployments[0], 0.5)
    r2.succeeded(res2.deployments[1], 0.05)
    assert r2.order(res2.deployments, res2.strategy)[0].provider.name == "b"


def test_health_is_shared_by_routes_with_the_same_deployment() -> None:
    r = router(
        [
            {"name": "m1", "targets": [{"provider": "a", "model": "x"}]},
            {"name": "m2", "targets": [{"provider": "a", "model": "x"}]},
        ]
    )
    assert r.resolve("m1").deployments[0].health is r.resolve("m2").deployments[0].health


def test_retryable_errors() -> None:
    assert is_retryable(UpstreamUnreachable("down"))
    assert is_retryable(UpstreamTimeout("slow"))
    assert is_retryable(UpstreamError("reset"))
    assert is_retryable(RateLimited("x", status=429))
    assert is_retryable(UpstreamError("x", status=503))
    assert is_retryable(UpstreamError("x", status=529))
    assert not is_retryable(BadRequest("x", status=400))
    assert not is_retryable(BadRequest("our own validation"))


def test_backoff_and_retry_after() -> None:
    cfg = RetryConfig(backoff_base=0.2, backoff_max=1.0, max_retry_after=10)
    rng = random.Random(1)
    assert 0.1 <= backoff(1, cfg, rng, None) <= 0.2  # type: ignore[operator]
    assert 0.5 <= backoff(5, cfg, rng, None) <= 1.0  # type: ignore[operator]
    assert backoff(1, cfg, rng, 3.0) == 3.0
    assert backoff(1, cfg, rng, 11.0) is None
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


def test_estimate_prompt_tokens() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "x" * 400},
            {
                "role": "user",
                "content": [{"type": "text", "text": "y" * 40}, {"type": "image_url"}],
            },
        ],
        "max_tokens": 100,
    }
    assert estimate_prompt_tokens(body) == 4 + 4 + 110 + 1000 + 100
