"""The upstream client's two engines: reqwest (the default) and aiohttp (the fallback).

Real aiohttp servers on loopback. Each rule of the outbound door is checked on the reqwest
engine (the one every hot-path request now takes): redirects are answers, no cookie store, no
automatic decompression, headers kept in order and repeated, chunks relayed as they arrive,
body caps, a dropped stream closes its upstream connection.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from crossway.config.common import Timeouts, UpstreamTls
from crossway.errors import UpstreamError, UpstreamTimeout
from crossway.proxy import client
from tests.helpers import ROOT


@asynccontextmanager
async def upstream(routes: dict[str, Any]) -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        await request.read()
        handler = routes[request.path]
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await client.close_session()
        await runner.cleanup()


T = Timeouts(connect=2, first_byte=5, idle=5)


async def test_reqwest_is_the_default_engine() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="hi")

    async with upstream({"/": ok}) as (url, _):
        resp = await client.send("GET", url + "/", {}, b"", T)
        assert isinstance(resp, client.ReqwestResponse)
        assert await client.read_body(resp, T) == b"hi"
    assert client.engine_for(None) == "reqwest"
    assert client.engine_for(UpstreamTls(ca_file="/x.pem")) == "reqwest"


async def test_a_server_name_override_uses_aiohttp() -> None:
    assert client.engine_for(UpstreamTls(server_name="api.internal")) == "aiohttp"


def test_the_environment_variable_chooses_aiohttp() -> None:
    code = "from crossway.proxy import client; print(client.ENGINE, client.engine_for(None))"
    env = {**os.environ, client.ENGINE_ENV: "aiohttp"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["aiohttp", "aiohttp"]


async def test_redirects_are_answers_and_no_cookie_is_kept() -> None:
    async def moved(_: web.Request) -> web.Response:
        response = web.Response(status=302, headers={"Location": "/elsewhere"})
        response.set_cookie("session", "s3cret")
        return response

    async def elsewhere(_: web.Request) -> web.Response:
        return web.Response(text="followed")

    async with upstream({"/moved": moved, "/elsewhere": elsewhere}) as (url, seen):
        for _ in range(2):
            resp = await client.send("GET", url + "/moved", {}, b"", T)
            assert resp.status == 302
            assert resp.headers.get("location") == "/elsewhere"
            await client.read_body(resp, T)
        assert [r.path for r in seen] == ["/moved", "/moved"]
        assert all("Cookie" not in r.headers for r in seen)


async def test_headers_sent_and_answered_as_given() -> None:
    async def answer(_: web.Request) -> web.Response:
        response = web.Response(body=b"\x1f\x8bnot-really-gzip")
        response.headers["Content-Encoding"] = "gzip"
        response.headers.add("X-Twice", "one")
        response.headers.add("X-Twice", "two")
        return response

    async with upstream({"/h": answer}) as (url, seen):
        headers = [("x-custom", "a"), ("x-custom", "b"), ("content-type", "application/json")]
        resp = await client.send("POST", url + "/h", headers, b"{}", T)
        raw = list(resp.raw_headers)
        assert (b"x-twice", b"one") in raw and (b"x-twice", b"two") in raw
        assert await client.read_body(resp, T) == b"\x1f\x8bnot-really-gzip"  # not decoded
        request = seen[0]
        assert request.headers.getall("x-custom") == ["a", "b"]
        assert "Accept-Encoding" not in request.headers
        assert request.headers["User-Agent"] == client.USER_AGENT
        resp = await client.send("GET", url + "/h", {"user-agent": "agent/1"}, b"", T)
        await client.read_body(resp, T)
        assert seen[1].headers["User-Agent"] == "agent/1"


async def test_stream_chunks_arrive_before_the_body_ends() -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await release.wait()
        await response.write(b"data: second\n\n")
        return response

    async with upstream({"/s": held}) as (url, _):
        resp = await client.send("GET", url + "/s", {}, b"", T)
        chunks = client.iter_body(resp, T)
        first = await asyncio.wait_for(anext(chunks), 3)
        assert first == b"data: first\n\n"
        release.set()
        rest = b"".join([c async for c in chunks])
        assert rest == b"data: second\n\n"


async def test_read_body_stops_past_its_limit() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(1000):
                await response.write(b"x" * 10_000)
        except ConnectionError:
            pass
        return response

    async with upstream({"/big": endless}) as (url, _):
        resp = await client.send("GET", url + "/big", {}, b"", T, stream=False)
        data = await client.read_body(resp, T, limit=50_000)
        assert len(data) == 50_001


async def test_dropping_a_stream_closes_the_upstream_connection() -> None:
    gone = asyncio.Event()

    async def forever(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            while True:
                await response.write(b"data: tick\n\n")
                await asyncio.sleep(0.02)
        except (ConnectionError, asyncio.CancelledError):
            gone.set()
            raise

    async with upstream({"/f": forever}) as (url, _):
        resp = await client.send("GET", url + "/f", {}, b"", T)
        chunks = client.iter_body(resp, T)
        assert await anext(chunks)
        await chunks.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(gone.wait(), 5)


async def test_idle_timeout_shorter_than_first_byte() -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"a")
        await asyncio.sleep(3)
        return response

    async with upstream({"/stall": stall}) as (url, _):
        t = Timeouts(connect=1, first_byte=10, idle=0.3)
        resp = await client.send("GET", url + "/stall", {}, b"", t)
        got = b""
        with pytest.raises(UpstreamTimeout, match="idle"):
            async for chunk in client.iter_body(resp, t):
                got += chunk
        assert got == b"a"


async def test_one_client_per_setting() -> None:
    a = client.get_client(None, T)
    assert client.get_client(UpstreamTls(), T) is a
    assert client.get_client(None, Timeouts(connect=2, first_byte=5, idle=5)) is a
    assert client.get_client(None, Timeouts(connect=3)) is not a
    await client.close_session()


async def test_a_header_that_is_not_text_is_a_clear_upstream_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Name: caf\xe9\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        resp = await client.send("GET", f"http://127.0.0.1:{port}/", {}, b"", T)
        with pytest.raises(UpstreamError, match="not valid text"):
            list(resp.raw_headers)
    finally:
        server.close()
        await client.close_session()


async def test_a_full_pool_waits_no_longer_than_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await release.wait()
        return response

    monkeypatch.setattr(client, "pool_limit", lambda: 1)
    async with upstream({"/s": held}) as (url, _):
        t = Timeouts(connect=0.3, first_byte=5, idle=5)
        first = await client.send("GET", url + "/s", {}, b"", t)
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamTimeout, match="every pooled connection is busy"):
            await client.send("GET", url + "/s", {}, b"", t)
        assert asyncio.get_running_loop().time() - started < 2
        release.set()
        await client.read_body(first, t)
