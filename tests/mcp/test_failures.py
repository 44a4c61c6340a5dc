"""Failure isolation: a down, slow, crashing or garbage-speaking upstream never breaks the
session; its tools disappear or its calls fail with a clear JSON-RPC error."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError

from mcp import Client
from tests.helpers import ROOT, free_port, start_gateway
from tests.mcp.conftest import mcp_config, notes_stdio, spawn, stop

SHORT = "timeouts: {connect: 1, list: 1, call: 2}"
ACCEPT = {"accept": "application/json, text/event-stream"}


@pytest.fixture
def broken_http() -> Iterator[dict[str, str]]:
    """URLs of a garbage-answering and of a hanging HTTP server, and of a closed port."""
    garbage_port, hang_port = free_port(), free_port()
    garbage = spawn(
        [sys.executable, "-m", "tests.mcp.servers.garbage", "http", str(garbage_port)], garbage_port
    )
    hang = spawn(
        [sys.executable, "-m", "tests.mcp.servers.garbage", "hang", str(hang_port)], hang_port
    )
    try:
        yield {
            "garbage": f"http://127.0.0.1:{garbage_port}/mcp",
            "hang": f"http://127.0.0.1:{hang_port}/mcp",
            "down": f"http://127.0.0.1:{free_port()}/mcp",
        }
    finally:
        stop(garbage)
        stop(hang)


async def test_broken_upstreams_leave_the_others_working(broken_http: dict[str, str]) -> None:
    config = mcp_config(
        {
            "good": notes_stdio("good"),
            "garbage": f"{{type: streamable_http, url: {broken_http['garbage']}, {SHORT}}}",
            "hang": f"{{type: streamable_http, url: {broken_http['hang']}, {SHORT}}}",
            "down": f"{{type: streamable_http, url: {broken_http['down']}, {SHORT}}}",
            "noisy": f'{{type: stdio, command: "{sys.executable}", args: ["-m", "tests.mcp.servers.garbage", "stdio"], cwd: "{ROOT}"}}',
        },
    )
    with start_gateway(config) as gw:
        started = time.monotonic()
        async with Client(gw.url + "/mcp", mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "good_add" in names
            assert "noisy_noop" in names  # garbage lines between valid messages are skipped
            assert not any(n.startswith(("garbage_", "hang_", "down_")) for n in names)
            assert (await client.call_tool("good_add", {"a": 1, "b": 1})).content[0].text == "2"  # type: ignore[union-attr]
            assert (await client.call_tool("noisy_noop", {})).content[0].text == "noop done"  # type: ignore[union-attr]
            for server in ("garbage", "hang", "down"):
                with pytest.raises(MCPError) as caught:
                    await client.call_tool(f"{server}_anything", {})
                assert caught.value.error.code == -32001
                assert server in caught.value.error.message
            # The session is still fine afterwards.
            assert (await client.call_tool("good_add", {"a": 2, "b": 2})).content[0].text == "4"  # type: ignore[union-attr]
        assert time.monotonic() - started < 15
        assert "Traceback" not in gw.log()


async def test_fail_closed_refuses_a_partial_federation(broken_http: dict[str, str]) -> None:
    config = mcp_config(
        {
            "good": notes_stdio("good"),
            "down": f"{{type: streamable_http, url: {broken_http['down']}, {SHORT}}}",
        },
        "fail_closed: true",
    )
    with start_gateway(config) as gw:
        async with aiohttp.ClientSession() as http:
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            }
            async with http.post(gw.url + "/mcp", json=body, headers=ACCEPT) as resp:
                assert resp.status == 503
                error = (await resp.json())["error"]
        assert "down" in error["message"]
        assert error["data"] == {"servers": ["down"]}


async def test_slow_tool_times_out_without_blocking_others() -> None:
    config = mcp_config(
        {
            "slowpoke": notes_stdio("slowpoke").replace("}", ", timeouts: {call: 0.5}}"),
            "quick": notes_stdio("quick"),
        }
    )
    with start_gateway(config) as gw:
        async with Client(gw.url + "/mcp", mode="legacy") as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool("slowpoke_slow", {"seconds": 5})
            assert caught.value.error.code == -32001
            assert "did not answer" in caught.value.error.message
            assert (await client.call_tool("quick_add", {"a": 1, "b": 2})).content[0].text == "3"  # type: ignore[union-attr]
            # The upstream was told to cancel, and still serves the session.
            assert (await client.call_tool("slowpoke_slow", {"seconds": 0})).content[
                0
            ].text == "done"  # type: ignore[union-attr]


async def test_crashed_stdio_server_is_restarted() -> None:
    config = mcp_config({"notes": notes_stdio()})
    with start_gateway(config) as gw:
        async with Client(gw.url + "/mcp", mode="legacy") as client:
            first = (await client.call_tool("notes_whoami", {})).content[0].text  # type: ignore[union-attr]
            with pytest.raises(MCPError) as caught:
                await client.call_tool("notes_crash", {})
            assert caught.value.error.code == -32001
            deadline = time.monotonic() + 20
            second = None
            while time.monotonic() < deadline:
                try:
                    second = (await client.call_tool("notes_whoami", {})).content[0].text  # type: ignore[union-attr]
                    break
                except MCPError:
                    continue
            assert second is not None and second != first  # a new process answers
        assert "restarting" in gw.log()


async def test_restarted_http_upstream_gets_a_new_session_transparently() -> None:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "tests.mcp.servers.notes",
        "streamable-http",
        str(port),
        "--name",
        "remote",
    ]
    upstream = spawn(args, port)
    try:
        config = mcp_config(
            {"remote": f"{{type: streamable_http, url: http://127.0.0.1:{port}/mcp}}"}
        )
        with start_gateway(config) as gw:
            async with Client(gw.url + "/mcp", mode="legacy") as client:
                assert (await client.call_tool("remote_bump", {})).content[0].text == "1"  # type: ignore[union-attr]
                stop(upstream)
                with pytest.raises(MCPError) as caught:
                    await client.call_tool("remote_bump", {})
                assert caught.value.error.code == -32001
                upstream = spawn(args, port)
                # The new server process does not know the old upstream session (404): Crossway
                # initializes a new one and the client's session goes on.
                assert (await client.call_tool("remote_bump", {})).content[0].text == "1"  # type: ignore[union-attr]
                assert (await client.call_tool("remote_add", {"a": 1, "b": 2})).content[
                    0
                ].text == "3"  # type: ignore[union-attr]
    finally:
        stop(upstream)
