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
    with start_gateway(config, env={"TEAM_A_KEY": "key-a-0123456789abcdef"}) as gw:
        good = openai.OpenAI(base_url=gw.url + "/v1", api_key="key-a-0123456789abcdef")
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


async def test_shutdown_ends_idle_event_streams_at_once() -> None:
    """An MCP client's open GET stream does not hold shutdown for the whole drain time."""
    import subprocess
    import sys
    import time

    from tests.helpers import free_port, wait_for

    mcp_port = free_port()
    upstream = subprocess.Popen(  # noqa: ASYNC220 - a child for the test's lifetime
        [sys.executable, "-m", "crossway.samples.mcp_server", "--port", str(mcp_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    config = f"""
listen:
  port: {port}
  drain_seconds: 60
routes:
  - name: mcp
    match:
      path:
        prefix: /mcp
    backend: tools
backends:
  tools:
    type: mcp
    servers:
      sample:
        type: streamable_http
        url: http://127.0.0.1:{mcp_port}/mcp
"""
    try:
        await asyncio.to_thread(wait_for, lambda: _port_open(mcp_port), 20, "sample MCP server")
        with start_gateway(config, port=port) as gw:
            headers = {
                "accept": "application/json, text/event-stream",
                "content-type": "application/json",
            }
            init = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            }
            async with aiohttp.ClientSession() as session:
                async with session.post(gw.url + "/mcp", json=init, headers=headers) as resp:
                    assert resp.status == 200
                    sid = resp.headers["mcp-session-id"]
                    version = {"mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}
                async with session.post(
                    gw.url + "/mcp",
                    json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                    headers={**headers, **version},
                ) as resp:
                    assert resp.status == 202
                stream = await session.get(
                    gw.url + "/mcp", headers={"accept": "text/event-stream", **version}
                )
                assert stream.status == 200
                started = time.monotonic()
                gw.proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(gw.proc.wait, 20) == 0
                assert time.monotonic() - started < 15  # not the 60 s drain
                stream.close()
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def test_shutdown_is_bounded_by_the_drain_time() -> None:
    """A request that never ends does not keep the process alive past the drain time."""
    import socket
    import time

    from tests.helpers import free_port

    hang = socket.socket()  # accepts connections, never answers
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)
    port = free_port()
    config = f"""
listen:
  port: {port}
  drain_seconds: 1
routes:
  - name: web
    backend: web
backends:
  web:
    type: http
    url: http://127.0.0.1:{hang.getsockname()[1]}
"""
    try:
        with start_gateway(config, port=port) as gw:
            async with aiohttp.ClientSession() as session:
                pending = asyncio.ensure_future(session.get(gw.url + "/forever"))
                hang.settimeout(10)
                conn, _ = await asyncio.to_thread(hang.accept)  # the request reached upstream
                started = time.monotonic()
                gw.proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(gw.proc.wait, 20) == 0
                assert time.monotonic() - started < 12
                pending.cancel()
                conn.close()
    finally:
        hang.close()
