"""One worker keeps answering while thousands of connections are held open.

granian serves at most `backpressure` connections per worker at once, and its default is the
listen backlog over the workers (2048 here): idle streams held by 2048 clients (SSE, MCP GET)
made the worker stop answering anyone else. `crossway serve` sets it from the process's
open-file limit instead (the real bound of what one process can hold).
"""

from __future__ import annotations

import asyncio
import resource
from typing import Final

import aiohttp
from aiohttp import web

from tests.helpers import start_gateway

HELD: Final = 2100
"""Connections held open before the probe: more than granian's default of 2048."""

CONFIG = """
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


async def test_a_worker_answers_with_more_than_2048_connections_held() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < HELD + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, HELD + 1000), hard))

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    held: list[asyncio.StreamWriter] = []
    try:
        with start_gateway(CONFIG.format(upstream=f"http://127.0.0.1:{upstream}")) as gw:
            for _ in range(HELD):
                _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
                held.append(writer)
            async with aiohttp.ClientSession() as session:
                async with session.get(
                    gw.url + "/ok", timeout=aiohttp.ClientTimeout(total=10)
                ) as resp:
                    assert resp.status == 200
                    assert await resp.text() == "ok"
    finally:
        for writer in held:
            writer.close()
        await runner.cleanup()
