"""Bad input from clients gets the right JSON-RPC error or HTTP status; the gateway carries on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.helpers import Gateway, start_gateway
from tests.mcp.conftest import mcp_config, notes_stdio

ACCEPT = {"accept": "application/json, text/event-stream"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


@pytest.fixture(scope="module")
def gateway() -> Any:
    config = mcp_config({"notes": notes_stdio()}, "max_message_bytes: 65536")
    with start_gateway(config) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    gw: Gateway,
    body: Any,
    session_id: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    headers = {**ACCEPT, "content-type": "application/json"}
    if session_id:
        headers["mcp-session-id"] = session_id
    data = raw if raw is not None else None
    async with http.post(
        gw.url + "/mcp", json=None if raw is not None else body, data=data, headers=headers
    ) as resp:
        text = await resp.read()
        parsed: Any = None
        if text and resp.content_type == "application/json":
            parsed = await resp.json()
        return resp.status, parsed, {k.lower(): v for k, v in resp.headers.items()}


async def new_session(http: aiohttp.ClientSession, gw: Gateway) -> str:
    status, body, headers = await post(http, gw, INIT)
    assert status == 200, body
    assert body["result"]["protocolVersion"] == "2025-06-18"
    await post(
        http,
        gw,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers["mcp-session-id"],
    )
    return headers["mcp-session-id"]


async def test_malformed_messages(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, gateway, None, raw=b"{not json")
    assert status == 400 and body["error"]["code"] == -32700
    status, body, _ = await post(http, gateway, [INIT, INIT])
    assert status == 400 and body["error"]["code"] == -32600
    status, body, _ = await post(http, gateway, {"id": 1, "method": "ping"})
    assert status == 400 and body["error"]["code"] == -32600
    status, body, _ = await post(http, gateway, {"jsonrpc": "2.0", "id": 1, "method": 7})
    assert status == 400 and body["error"]["code"] == -32600
    status, body, _ = await post(http, gateway, "just a string")
    assert status == 400 and body["error"]["code"] == -32600


async def test_session_errors(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    status, body, _ = await post(http, gateway, ping)
    assert status == 400 and "Mcp-Session-Id" in body["error"]["message"]
    status, body, _ = await post(http, gateway, ping, "cw1.forged-session")
    assert status == 404
    sid = await new_session(http, gateway)
    tampered = sid[:-4] + ("AAAA" if not sid.endswith("AAAA") else "BBBB")
    status, _, _ = await post(http, gateway, ping, tampered)
    assert status == 404
    status, body, _ = await post(http, gateway, ping, sid)
    assert status == 200 and body == {"jsonrpc": "2.0", "id": 2, "result": {}}
    async with http.delete(gateway.url + "/mcp", headers={"mcp-session-id": sid}) as resp:
        assert resp.status == 200
    async with http.get(gateway.url + "/mcp", headers={"mcp-session-id": sid}) as resp:
        assert resp.status == 406  # no Accept: text/event-stream
    async with http.put(gateway.url + "/mcp") as resp:
        assert resp.status == 405


async def test_unknown_methods_tools_and_bad_params(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    sid = await new_session(http, gateway)
    await post(http, gateway, {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, sid)
    cases: list[tuple[dict[str, Any], int]] = [
        ({"method": "no/such/method"}, -32601),
        ({"method": "tools/call", "params": {"name": "notes_nope", "arguments": {}}}, -32602),
        ({"method": "tools/call", "params": {"name": "other_add", "arguments": {}}}, -32602),
        ({"method": "tools/call", "params": {"arguments": {}}}, -32602),
        ({"method": "tools/call", "params": "not an object"}, -32602),
        ({"method": "resources/read", "params": {"uri": "crossway://nobody/x"}}, -32002),
        ({"method": "tools/list", "params": {"cursor": "%%%not-a-cursor"}}, -32602),
    ]
    for i, (message, code) in enumerate(cases, start=10):
        status, body, _ = await post(http, gateway, {"jsonrpc": "2.0", "id": i, **message}, sid)
        assert status == 200, message
        assert body["id"] == i
        assert "error" in body and body["error"]["code"] == code, (message, body)
    # The upstream's own answer to a call with bad arguments arrives unchanged.
    status, body, _ = await post(
        http,
        gateway,
        {
            "jsonrpc": "2.0",
            "id": 99,
            "method": "tools/call",
            "params": {"name": "notes_add", "arguments": {"a": "x"}},
        },
        sid,
    )
    assert status == 200 and ("error" in body or body["result"].get("isError") is True)
    status, body, _ = await post(
        http,
        gateway,
        {
            "jsonrpc": "2.0",
            "id": 100,
            "method": "tools/call",
            "params": {"name": "notes_add", "arguments": {"a": 1, "b": 2}},
        },
        sid,
    )
    assert body["result"]["content"][0]["text"] == "3"


async def test_oversized_message(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    sid = await new_session(http, gateway)
    big = {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "tools/call",
        "params": {"name": "notes_add", "arguments": {"pad": "x" * 100_000}},
    }
    status, body, _ = await post(http, gateway, big, sid)
    assert status == 413 and body["error"]["code"] == -32005
    status, body, _ = await post(http, gateway, {"jsonrpc": "2.0", "id": 6, "method": "ping"}, sid)
    assert status == 200 and body["result"] == {}
