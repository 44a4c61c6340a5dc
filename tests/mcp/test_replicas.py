"""Sessions across replicas: two Crossway processes sharing a session key serve one client
whose requests alternate between them (through a round-robin proxy)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from mcp import Client
from tests.helpers import free_port, start_gateway
from tests.mcp.conftest import mcp_config, notes_stdio

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


@pytest.fixture
async def round_robin() -> AsyncIterator[tuple[list[str], list[str]]]:
    """A proxy sending each request to the next of `targets` (filled in by the test); yields
    (targets, hits) and the proxy's URL is `targets`' first element's replacement."""
    targets: list[str] = []
    hits: list[str] = []
    counter = itertools.count()
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))

    async def forward(request: web.Request) -> web.StreamResponse:
        target = targets[next(counter) % len(targets)]
        hits.append(target)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with http.request(
            request.method, target + request.path_qs, headers=headers, data=await request.read()
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers[key] = value
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield targets, [f"http://127.0.0.1:{port}", *hits]
    finally:
        await runner.cleanup()
        await http.close()


async def test_a_session_survives_alternating_replicas(
    notes_http: str, round_robin: tuple[list[str], list[str]]
) -> None:
    targets, (proxy_url, *_) = round_robin
    config = mcp_config(
        {"shared": f"{{type: streamable_http, url: {notes_http}}}", "local": notes_stdio("local")},
        "session_key: ${MCP_KEY}",
    )
    env = {"MCP_KEY": "test-secret-shared-by-both-replicas-7f3a9c"}
    with start_gateway(config, env=env) as one, start_gateway(config, env=env) as two:
        targets.extend([one.url, two.url])
        async with Client(proxy_url + "/mcp", mode="legacy") as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"shared_bump", "local_add"} <= tools
            counts = []
            for _ in range(6):
                result = await client.call_tool("shared_bump", {})
                counts.append(int(result.content[0].text))  # type: ignore[union-attr]
            # One upstream session, whichever replica served the call.
            assert counts == [1, 2, 3, 4, 5, 6]
            for _ in range(4):
                result = await client.call_tool("local_add", {"a": 20, "b": 22})
                assert result.content[0].text == "42"  # type: ignore[union-attr]
        assert "re-attached" in one.log() + two.log()


async def test_a_replica_with_another_key_refuses_the_session(notes_http: str) -> None:
    config = mcp_config(
        {"shared": f"{{type: streamable_http, url: {notes_http}}}"}, "session_key: ${MCP_KEY}"
    )
    with (
        start_gateway(config, env={"MCP_KEY": "one"}) as one,
        start_gateway(config, env={"MCP_KEY": "two"}) as two,
    ):
        async with aiohttp.ClientSession() as http:
            init = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            }
            headers = {"accept": "application/json, text/event-stream"}
            async with http.post(one.url + "/mcp", json=init, headers=headers) as resp:
                sid = resp.headers["mcp-session-id"]
            ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
            async with http.post(
                two.url + "/mcp", json=ping, headers={**headers, "mcp-session-id": sid}
            ) as resp:
                assert resp.status == 404
            async with http.post(
                one.url + "/mcp", json=ping, headers={**headers, "mcp-session-id": sid}
            ) as resp:
                assert resp.status == 200
