"""An inference pool on its own: endpoints from config and from DNS (re-resolved), in-flight
bookkeeping, config validation."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from pydantic import ValidationError

from crossway.config.inference import InferencePoolConfig
from crossway.config.llm import ProviderConfig
from crossway.inference.pool import InferencePool
from crossway.inference.scheduler import PickRequest


def _pool(**config: Any) -> InferencePool:
    return InferencePool(
        "p",
        InferencePoolConfig.model_validate(config),
        endpoint_cooldown=5.0,
        failures_to_cool=3,
    )


def test_endpoints_from_a_comma_separated_string_or_a_list() -> None:
    pool = _pool(endpoints=" http://10.0.0.1:8000/v1/, http://10.0.0.2:8000/v1 ")
    assert [e.base_url for e in pool.endpoints] == [
        "http://10.0.0.1:8000/v1",
        "http://10.0.0.2:8000/v1",
    ]
    assert pool.endpoints[0].metrics_url == "http://10.0.0.1:8000/metrics"
    pool = _pool(
        endpoints=[
            "http://a:1/v1",
            {
                "url": "http://b:2/v1",
                "metrics_url": "http://b:3/m",
                "gpu_metrics_url": "http://b:4/",
            },
        ],
        metrics={"enabled": True},
    )
    assert [e.name for e in pool.endpoints] == ["a:1", "b:2"]
    assert pool.endpoints[1].metrics_url == "http://b:3/m"
    assert pool.endpoints[1].gpu_metrics_url == "http://b:4/"
    off = _pool(endpoints="http://a:1/v1", metrics={"enabled": False})
    assert off.endpoints[0].metrics_url is None


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({}, "needs endpoints or dns"),
        ({"endpoints": "ftp://x/v1"}, "http"),
        ({"endpoints": "http://a:1/v1,http://a:1/v1"}, "twice"),
        ({"endpoints": "http://a:1/v1", "metrics": {"interval": 0.001}}, "interval"),
        ({"endpoints": "http://a:1/v1", "scheduler": {"scorers": {"prefix": -1}}}, ">= 0"),
        ({"endpoints": "http://a:1/v1", "scheduler": {"scorers": {"magic": 1}}}, "magic"),
        ({"endpoints": "http://a:1/v1", "scheduler": {"picker": "best"}}, "picker"),
        ({"endpoints": "http://a:1/v1", "unknown_key": 1}, "unknown_key"),
    ],
)
def test_bad_pool_config_is_refused_clearly(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        InferencePoolConfig.model_validate(config)
    assert problem in str(info.value)


def test_pool_provider_type_rules() -> None:
    with pytest.raises(ValidationError, match="inference_pool needs pool"):
        ProviderConfig.model_validate({"type": "inference_pool"})
    with pytest.raises(ValidationError, match="not base_url"):
        ProviderConfig.model_validate(
            {
                "type": "inference_pool",
                "base_url": "http://x/v1",
                "pool": {"endpoints": "http://a:1/v1"},
            }
        )
    with pytest.raises(ValidationError, match="pool applies only to type inference_pool"):
        ProviderConfig.model_validate({"type": "openai", "pool": {"endpoints": "http://a:1/v1"}})


async def test_dns_endpoints_follow_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[list[str]] = [["10.0.0.1", "10.0.0.2"]]

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        assert host == "vllm.internal" and port == 8000
        if not answers[0]:
            raise socket.gaierror("no such name")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[0]]

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    pool = _pool(
        dns={"name": "vllm.internal", "port": 8000, "refresh": 0.05}, metrics={"enabled": False}
    )
    await pool.start()
    try:
        assert [e.name for e in pool.endpoints] == ["10.0.0.1:8000", "10.0.0.2:8000"]
        assert pool.endpoints[0].base_url == "http://10.0.0.1:8000/v1"
        kept = pool.endpoints[1]
        kept.in_flight = 3  # state survives a re-resolution
        request = PickRequest("m", "system prompt " * 20)
        decision, _ = await pool.decide(request, (), b"")
        pool.sent(pool.endpoints[0], request, decision)
        answers[0] = ["10.0.0.2", "10.0.0.3"]
        await _until(lambda: [e.name for e in pool.endpoints] == ["10.0.0.2:8000", "10.0.0.3:8000"])
        assert pool.endpoints[0] is kept and kept.in_flight == 3
        # the departed endpoint's prefix blocks are forgotten
        assert pool.scheduler.index.size("10.0.0.1:8000") == 0
        # a failed resolution keeps the last good answer
        answers[0] = []
        await asyncio.sleep(0.15)
        assert [e.name for e in pool.endpoints] == ["10.0.0.2:8000", "10.0.0.3:8000"]
    finally:
        await pool.close()


async def _until(predicate: Any, within: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_in_flight_bookkeeping() -> None:
    pool = _pool(endpoints="http://a:1/v1,http://b:2/v1", metrics={"enabled": False})
    request = PickRequest("m", "", tokens=120)
    a = pool.endpoints[0]
    decision = pool.scheduler.decide(pool.endpoints, request)
    pool.sent(a, request, decision)
    assert (a.in_flight, a.in_flight_tokens) == (1, 120)
    pool.done(a, request)
    assert (a.in_flight, a.in_flight_tokens) == (0, 0)
    pool.failed(a, unreachable=False)
    pool.failed(a, unreachable=False)
    assert a.cooldown_until == 0  # two failures of three
    pool.failed(a, unreachable=False)
    assert a.cooldown_until > 0
    pool.succeeded(a)
    assert a.cooldown_until == 0 and a.failures == 0 and a.served == 1


def test_xds_protos_does_not_shadow_opentelemetry_proto() -> None:
    """xds-protos bundles an older copy of opentelemetry-proto's modules; the install (Makefile)
    must leave opentelemetry-proto's own, or the OTLP exporters fail to import."""
    from envoy.service.ext_proc.v3 import external_processor_pb2
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope

    assert external_processor_pb2.ProcessingRequest.DESCRIPTOR.name == "ProcessingRequest"
    assert InstrumentationScope.DESCRIPTOR.name == "InstrumentationScope"


async def test_an_attempt_that_fails_before_sending_releases_its_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request that cannot be built for the upstream (a 400 before anything is sent) must not
    leave the endpoint counted as busy."""
    from crossway.config.llm import LlmBackendConfig
    from crossway.errors import BadRequest
    from crossway.llm import backend as backend_module
    from crossway.llm.backend import LlmBackend
    from crossway.llm.calls import chat_call

    config = LlmBackendConfig.model_validate(
        {
            "type": "llm",
            "providers": {
                "pool": {
                    "type": "inference_pool",
                    "pool": {"endpoints": "http://127.0.0.1:9/v1", "metrics": {"enabled": False}},
                }
            },
        }
    )
    llm = LlmBackend("b", config, 1 << 20)

    async def refuse(*_: Any) -> Any:
        raise BadRequest("cannot be translated")

    monkeypatch.setattr(backend_module, "upstream_request", refuse)
    call = chat_call(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')
    resolved = llm.router.resolve("m")
    with pytest.raises(BadRequest):
        await llm._attempt(call, resolved, resolved.deployments[0])
    endpoint = llm.providers["pool"].pool.endpoints[0]  # type: ignore[union-attr]
    assert (endpoint.in_flight, endpoint.in_flight_tokens) == (0, 0)
    assert resolved.deployments[0].health.in_flight == 0
