"""Graceful shutdown drains requests in flight; route policies guard backends."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import openai
import pytest
from aiohttp import web

from tests.helpers import start_gateway

HTTP_CONFIG = """
routes:
  - name: web
    match:
      path:
        prefix: /
    backend: web
backends:
  web:
    type: http
    url: {upstream}
"""


async def test_sigterm_drains_in_flight_requests() -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="finished")

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        with start_gateway(HTTP_CONFIG.format(upstream=f"http://127.0.0.1:{port}")) as gw:
            async with aiohttp.ClientSession() as session:
                request = asyncio.create_task(session.get(gw.url + "/slow"))
                await asyncio.wait_for(arrived.wait(), 10)
                gw.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0)  # let the signal land before the upstream answers
                loop = asyncio.get_running_loop()
                loop.call_later(0.5, release.set)
                resp = await asyncio.wait_for(request, 20)
                assert resp.status == 200
                assert await resp.text() == "finished"
            assert await asyncio.to_thread(gw.proc.wait, 20) == 0
    finally:
        await runner.cleanup()


def test_api_key_policy(sample_openai_process: str) -> None:
    config = f"""
routes:
  - name: llm
    match:
      path:
        prefix: /v1
    backend: llm
    policies:
      - type: api_key
        keys:
          team-a: ${{TEAM_A_KEY}}
backends:
  llm:
    type: llm
    providers:
      sample:
        type: openai_compatible
        base_url: {sample_openai_process}
"""
    with start_gateway(config, env={"TEAM_A_KEY": "key-a"}) as gw:
        good = openai.OpenAI(base_url=gw.url + "/v1", api_key="key-a")
        resp = good.chat.completions.create(
            model="sample-model", messages=[{"role": "user", "content": "x"}]
        )
        assert resp.choices[0].message.content == "You said: x"
        bad = openai.OpenAI(base_url=gw.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(
                model="sample-model", messages=[{"role": "user", "content": "x"}]
            )
        assert info.value.status_code == 401
        assert "invalid API key" in info.value.message
