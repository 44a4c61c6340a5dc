"""Server-to-client traffic through Crossway: elicitation, roots, sampling, logging,
cancellation — on Streamable HTTP and on the legacy SSE endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import mcp.types as types
import pytest
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from mcp import Client
from tests.helpers import Gateway, start_gateway
from tests.mcp.conftest import mcp_config, notes_server, notes_stdio, stop


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    """Notes over stdio (shared child) and over Streamable HTTP (per-client sessions)."""
    proc, url = notes_server("streamable-http", "remote")
    try:
        config = mcp_config(
            {"local": notes_stdio("local"), "remote": f"{{type: streamable_http, url: {url}}}"}
        )
        with start_gateway(config) as gw:
            yield gw
    finally:
        stop(proc)


async def elicit(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"colour": "teal"})


async def list_roots(ctx: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])


@pytest.mark.parametrize("transport", ["streamable", "sse"])
@pytest.mark.parametrize("server", ["local", "remote"])
async def test_elicitation_roots_and_logging_are_relayed(
    gateway: Gateway, transport: str, server: str
) -> None:
    target = gateway.url + "/mcp" if transport == "streamable" else sse_client(gateway.url + "/sse")
    logs: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    async with Client(
        target,
        mode="legacy",
        elicitation_callback=elicit,
        list_roots_callback=list_roots,
        logging_callback=on_log,
    ) as client:
        asked = await client.call_tool(f"{server}_ask", {})
        assert asked.content[0].text == "colour: teal"  # type: ignore[union-attr]
        roots = await client.call_tool(f"{server}_roots", {})
        assert roots.content[0].text == "file:///work/project"  # type: ignore[union-attr]
        progress: list[float] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append(p)

        counted = await client.call_tool(f"{server}_count", {"n": 3}, progress_callback=on_progress)
        assert counted.content[0].text == "counted 3"  # type: ignore[union-attr]
        assert progress == [1.0, 2.0, 3.0]
        for _ in range(100):
            if "counted" in logs:
                break
            await asyncio.sleep(0.05)
        assert "counted" in logs


async def test_a_client_without_elicitation_gets_an_error_not_a_hang(gateway: Gateway) -> None:
    async with Client(gateway.url + "/mcp", mode="legacy") as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("remote_ask", {})
        assert "does not support elicitation" in caught.value.error.message
        assert (await client.call_tool("remote_add", {"a": 1, "b": 1})).content[0].text == "2"  # type: ignore[union-attr]


async def test_cancelled_call_leaves_the_session_usable(gateway: Gateway) -> None:
    async with Client(gateway.url + "/mcp", mode="legacy") as client:
        slow = asyncio.create_task(client.call_tool("remote_slow", {"seconds": 30}))
        await asyncio.sleep(0.3)
        slow.cancel()
        with pytest.raises((asyncio.CancelledError, MCPError)):
            await slow
        result = await client.call_tool("remote_add", {"a": 1, "b": 2})
        assert result.content[0].text == "3"  # type: ignore[union-attr]


async def test_client_disconnect_cancels_the_upstream_call(gateway: Gateway) -> None:
    import aiohttp

    headers = {"accept": "application/json, text/event-stream"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/mcp", json=init, headers=headers) as resp:
            headers["mcp-session-id"] = resp.headers["mcp-session-id"]
        for server in ("local", "remote"):
            call = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {
                    "name": f"{server}_wait",
                    "arguments": {"seconds": 30, "key": "k"},
                    "_meta": {"progressToken": 1},
                },
            }
            resp = await http.post(gateway.url + "/mcp", json=call, headers=headers)
            assert resp.content_type == "text/event-stream"
            assert b"notifications/progress" in await resp.content.readline()
            resp.close()  # the client goes away mid-call

            async def outcome(server: str = server) -> str:
                check = {
                    "jsonrpc": "2.0",
                    "id": 3,
                    "method": "tools/call",
                    "params": {"name": f"{server}_outcome", "arguments": {"key": "k"}},
                }
                async with http.post(gateway.url + "/mcp", json=check, headers=headers) as r:
                    return str((await r.json())["result"]["content"][0]["text"])

            for _ in range(100):
                if await outcome() == "cancelled":
                    break
                await asyncio.sleep(0.1)
            assert await outcome() == "cancelled", server
