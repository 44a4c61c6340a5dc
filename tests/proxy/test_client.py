"""The upstream client's timeouts: first byte, idle gaps, connect failures, mapped to errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from crossway.config.common import Timeouts
from crossway.errors import UpstreamTimeout, UpstreamUnreachable
from crossway.proxy import client
from tests.helpers import free_port


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def slow_headers(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query["delay"]))
        return web.Response(text="late")

    async def stalled_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/plain"})
        await resp.prepare(request)
        await resp.write(b"first ")
        await asyncio.sleep(float(request.query["delay"]))
        await resp.write(b"second")
        return resp

    app = web.Application()
    app.router.add_get("/slow", slow_headers)
    app.router.add_get("/stall", stalled_body)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await client.close_session()
    await runner.cleanup()


# (first_byte, idle): equal (aiohttp's read timer alone), first byte shorter, idle shorter.
CASES = [(0.3, 0.3), (0.3, 30.0), (30.0, 0.3)]


@pytest.mark.parametrize(("first_byte", "idle"), CASES)
async def test_slow_headers(upstream: str, first_byte: float, idle: float) -> None:
    # The first-byte limit counts from the start, connect included.
    t = Timeouts(connect=0.2, first_byte=first_byte, idle=idle)
    if first_byte < 1:
        with pytest.raises(UpstreamTimeout, match="did not answer in time"):
            await client.send("GET", upstream + "/slow?delay=2", {}, b"", t)
    else:
        resp = await client.send("GET", upstream + "/slow?delay=0.5", {}, b"", t)
        assert await client.read_body(resp, t) == b"late"


@pytest.mark.parametrize(("first_byte", "idle"), CASES)
async def test_idle_gap_in_body(upstream: str, first_byte: float, idle: float) -> None:
    t = Timeouts(first_byte=first_byte, idle=idle)
    resp = await client.send("GET", upstream + "/stall?delay=2", {}, b"", t)
    got = b""
    if idle < 1:
        with pytest.raises(UpstreamTimeout):
            async for chunk in client.iter_body(resp, t):
                got += chunk
        assert got == b"first "
    else:
        async for chunk in client.iter_body(resp, t):
            got += chunk
        assert got == b"first second"


async def test_unreachable() -> None:
    with pytest.raises(UpstreamUnreachable):
        await client.send("GET", f"http://127.0.0.1:{free_port()}/", {}, b"", Timeouts())
    await client.close_session()
