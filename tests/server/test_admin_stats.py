"""`GET /stats` and `/readyz` of a real `crossway serve`: per route counts and latency from the
metrics registry, requests in flight, LLM tokens, uptime, version, workers; per backend whether
its upstreams are reachable (from the background probe, never probed per call)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from crossway import __version__
from crossway.server.admin_stats import quantile
from tests.helpers import READY_TIMEOUT, Gateway, free_port, start_gateway

CONFIG = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
  - name: slow
    match: {{path: {{prefix: /slow}}}}
    backend: web
  - name: web
    match: {{path: {{prefix: /web}}}}
    backend: web
  - name: dead
    match: {{path: {{prefix: /dead}}}}
    backend: dead
backends:
  llm:
    type: llm
    providers:
      sample: {{type: openai_compatible, base_url: "{llm}"}}
  web:
    type: http
    url: {web}
  dead:
    type: http
    url: http://127.0.0.1:{dead_port}
"""


def test_quantile_interpolates_like_histogram_quantile() -> None:
    buckets = [(0.1, 10.0), (0.5, 20.0), (1.0, 20.0), (float("inf"), 20.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.3)
    assert quantile(0.25, buckets) == pytest.approx(0.05)
    assert quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == pytest.approx(0.1)
    assert quantile(0.5, []) is None


class Upstream:
    """An HTTP upstream whose `/slow` answers only when released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.arrived = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.path.startswith("/slow"):
            self.arrived += 1
            await self.release.wait()
        return web.Response(text="ok")


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", up.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield up, f"http://127.0.0.1:{port}"
    finally:
        up.release.set()
        await runner.cleanup()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def _until(check: Any, what: str) -> Any:
    """Poll the async `check()` until it returns something truthy (bounded, no fixed sleep)."""
    deadline = time.monotonic() + READY_TIMEOUT
    delay = 0.01
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise TimeoutError(f"timed out waiting for {what}")


async def _started(config: str) -> tuple[Gateway, Any]:
    manager = start_gateway(config)
    gw = await asyncio.to_thread(manager.__enter__)
    return gw, manager


async def test_stats_and_readiness(sample_openai: str, upstream: tuple[Upstream, str]) -> None:
    up, web_url = upstream
    config = CONFIG.format(llm=sample_openai, web=web_url, dead_port=free_port())
    gw, manager = await _started(config)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(gw.url + "/web/x") as resp:
                    assert resp.status == 200
            async with session.get(gw.url + "/nowhere") as resp:
                assert resp.status == 404
            async with session.get(gw.url + "/dead/x") as resp:
                assert resp.status == 502
            body = {"model": "sample-model", "messages": [{"role": "user", "content": "hi"}]}
            async with session.post(gw.url + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200, await resp.text()
                usage = (await resp.json())["usage"]

            status, stats = await _get(session, gw.admin_url + "/stats")
            assert status == 200
            assert stats["version"] == __version__
            assert stats["uptime_seconds"] > 0 and stats["started_at"] <= time.time()
            assert stats["workers"] == {"ready": 1, "mode": "single"}
            routes = {r["route"]: r for r in stats["routes"]}
            assert routes["web"]["requests"] == 3 and routes["web"]["by_status"] == {"200": 3}
            assert routes["web"]["errors"] == 0
            latency = routes["web"]["latency"]
            assert latency["count"] == 3
            assert 0 < latency["mean_seconds"] < 10
            assert 0 < latency["p50_seconds"] <= latency["p90_seconds"] <= latency["p99_seconds"]
            assert routes["_unmatched"]["by_status"] == {"404": 1}
            assert routes["dead"]["errors"] == 1 and routes["dead"]["by_status"] == {"502": 1}
            assert stats["requests"]["total"] == 6 and stats["requests"]["errors"] == 1
            upstreams = {u["backend"]: u for u in stats["upstreams"]}
            assert upstreams["llm"]["calls"] == 1 and upstreams["llm"]["by_status"] == {"200": 1}
            assert upstreams["llm"]["latency"]["count"] == 1
            [model] = stats["llm"]["models"]
            assert model["tokens"]["input"] == usage["prompt_tokens"]
            assert model["tokens"]["output"] == usage["completion_tokens"]

            # A request held by the upstream is in flight (sampled each second by the worker).
            held = asyncio.ensure_future(session.get(gw.url + "/slow/x"))

            async def in_flight(n: int) -> Any:
                _, now = await _get(session, gw.admin_url + "/stats")
                return now if now["requests"]["in_flight"] == n else None

            await _until(lambda: in_flight(1), "one request in flight")
            assert up.arrived == 1
            up.release.set()
            async with await held as resp:
                assert resp.status == 200
            done = await _until(lambda: in_flight(0), "no request in flight")
            assert {r["route"]: r for r in done["routes"]}["slow"]["requests"] == 1

            # Readiness: the probe's cached results per backend.
            async def probed() -> Any:
                code, ready = await _get(session, gw.admin_url + "/readyz")
                backends = ready["backends"]
                settled = all(b["reachable"] is not None for b in backends.values())
                return (code, ready) if settled else None

            code, ready = await _until(probed, "the first probe round")
            assert code == 200 and ready["ready"] is True and ready["workers_ready"] == 1
            assert ready["config"]["loaded"] is True
            assert ready["config"]["path"] == str(gw.config_path.resolve())
            backends = ready["backends"]
            assert backends["web"]["reachable"] is True
            assert backends["llm"]["reachable"] is True
            assert backends["llm"]["upstreams"]["sample"]["reachable"] is True
            assert backends["dead"]["reachable"] is False
            dead = backends["dead"]["upstreams"]["url"]
            assert dead["reachable"] is False and dead["error"]
            assert ready["degraded"] is True

            # ... and the same as the `crossway_upstream_up` gauge on /metrics.
            async with session.get(gw.admin_url + "/metrics") as resp:
                text = await resp.text()
            up_gauge = {
                (s.labels["backend"], s.labels["upstream"]): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "crossway_upstream_up"
            }
            assert up_gauge == {("web", "url"): 1.0, ("llm", "sample"): 1.0, ("dead", "url"): 0.0}
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)
