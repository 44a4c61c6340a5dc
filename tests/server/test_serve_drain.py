"""SIGTERM while a slow streamed response is in flight: the stream completes, new connections
are refused, and the process exits 0 within the drain time (single process and supervisor)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import free_port, start_gateway

DRAIN_SECONDS = 15.0
CONFIG = f"""
listen:
  port: {{port}}
  drain_seconds: {DRAIN_SECONDS}
routes:
  - name: web
    match:
      path:
        prefix: /
    backend: web
backends:
  web:
    type: http
    url: {{upstream}}
"""


class SlowStream:
    """An upstream that sends one chunk, then waits to be released before the last one."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/plain"})
        await resp.prepare(request)
        await resp.write(b"first chunk\n")
        self.started.set()
        await self.release.wait()
        await resp.write(b"last chunk\n")
        await resp.write_eof()
        return resp


@pytest.fixture
async def upstream() -> AsyncIterator[SlowStream]:
    slow = SlowStream()
    app = web.Application()
    app.router.add_get("/stream", slow.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    slow.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield slow
    finally:
        slow.release.set()
        await runner.cleanup()


async def _refused(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def _wait_refused(port: int) -> None:
    delay = 0.01
    while not await _refused(port):  # polled with backoff; the caller bounds the wait
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


@pytest.mark.parametrize("workers", [1, 2], ids=["single-process", "supervisor"])
async def test_sigterm_lets_a_streamed_response_finish(upstream: SlowStream, workers: int) -> None:
    port = free_port()
    config = CONFIG.format(port=port, upstream=f"http://127.0.0.1:{upstream.port}")
    with start_gateway(config, port=port, workers=workers) as gw:
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.url + "/stream") as resp:
                assert resp.status == 200
                first = await asyncio.wait_for(resp.content.readline(), 10)
                assert first == b"first chunk\n"
                signalled = time.monotonic()
                gw.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(_wait_refused(port), DRAIN_SECONDS / 2)
                assert gw.proc.poll() is None, "exited with a response still streaming"
                upstream.release.set()
                rest = await asyncio.wait_for(resp.content.read(), 10)
                assert rest == b"last chunk\n"
        code = await asyncio.to_thread(gw.proc.wait, DRAIN_SECONDS)
        assert code == 0, gw.log()[-2000:]
        assert time.monotonic() - signalled < DRAIN_SECONDS
        assert "Traceback" not in gw.log()
