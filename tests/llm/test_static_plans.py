"""A model with one deployment, no context window and no fallbacks gets its plan from a cache
(nothing is resolved or ranked per request); every other model is still planned per request,
so health and cooldowns keep ordering its deployments."""

from __future__ import annotations

import time
from typing import Any

import pytest

from crossway.config.llm import LlmBackendConfig
from crossway.errors import GatewayError
from crossway.llm import backend as llm_backend
from crossway.llm.backend import LlmBackend
from crossway.llm.calls import CHAT, LlmCall
from crossway.server.context import RequestContext


class Stop(GatewayError):
    pass


def make_backend() -> LlmBackend:
    config = LlmBackendConfig.model_validate(
        {
            "type": "llm",
            "providers": {"a": {"type": "openai"}, "b": {"type": "openai"}},
            "models": [
                {"name": "one", "targets": [{"provider": "a", "model": "m1"}]},
                {
                    "name": "two",
                    "targets": [
                        {"provider": "a", "model": "m2", "priority": 0},
                        {"provider": "b", "model": "m2", "priority": 1},
                    ],
                },
                {"name": "windowed", "targets": [{"provider": "a", "context_window": 100000}]},
                {"name": "w/*", "targets": [{"provider": "b"}]},
            ],
        }
    )
    return LlmBackend("llm", config, 1 << 20)


async def plan_of(backend: LlmBackend, model: str) -> list[Any]:
    seen: list[Any] = []

    async def attempt_all(call: Any, plan: Any, receive: Any, ctx: Any) -> Any:
        seen.append(plan)
        raise Stop("planned")

    backend._attempt_all = attempt_all  # type: ignore[method-assign]
    call = LlmCall(CHAT, model, False, raw=b'{"model":"%s","messages":[]}' % model.encode())
    with pytest.raises(Stop):
        await backend.serve(call, None, None, RequestContext("r", "llm", "1", "/"))  # type: ignore[arg-type]
    return seen[0]


async def test_one_deployment_plan_is_cached() -> None:
    backend = make_backend()
    first = await plan_of(backend, "one")
    assert await plan_of(backend, "one") is first
    assert [d.key for _, d in first] == ["a/m1"]
    wildcard = await plan_of(backend, "w/x")
    assert await plan_of(backend, "w/x") is wildcard
    assert wildcard[0][0].upstream_model(wildcard[0][1]) == "x"
    assert (await plan_of(backend, "w/y"))[0][0].matched == "y"  # by the client's model name


async def test_other_plans_follow_health() -> None:
    backend = make_backend()
    plan = await plan_of(backend, "two")
    assert [d.key for _, d in plan] == ["a/m2", "b/m2"]
    plan[0][1].health.cooldown_until = time.monotonic() + 60  # a/m2 ejected
    again = await plan_of(backend, "two")
    assert again is not plan
    assert [d.key for _, d in again] == ["b/m2", "a/m2"]
    assert await plan_of(backend, "windowed") is not await plan_of(backend, "windowed")


async def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_backend, "STATIC_PLANS_MAX", 3)
    backend = make_backend()
    for i in range(10):
        await plan_of(backend, f"w/m{i}")
    assert len(backend._static_plans) <= 3
