"""The stateless 2026-07-28 revision: `server/discover`, per-request `_meta`, routing headers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from mcp import Client
from tests.helpers import Gateway, start_gateway
from tests.mcp.conftest import mcp_config, notes_stdio

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with start_gateway(mcp_config({"notes": notes_stdio()})) as gw:
        yield gw


@pytest.mark.parametrize("mode", ["auto", MODERN])
async def test_sdk_client_in_the_modern_era(gateway: Gateway, mode: Any) -> None:
    async with Client(gateway.url + "/mcp", mode=mode) as client:
        assert client.session.protocol_version == MODERN
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "notes_add" in tools
        result = await client.call_tool("notes_add", {"a": 4, "b": 5})
        assert result.content[0].text == "9"  # type: ignore[union-attr]
        read = await client.read_resource("crossway://notes/notes://first")
        assert read.contents[0].text == "first note from notes"  # type: ignore[union-attr]
        prompt = await client.get_prompt("notes_summarize", {"topic": "gateways"})
        assert "gateways" in str(prompt.messages[0].content)


def routing_headers(body: Any) -> dict[str, str]:
    """The headers a 2026-07-28 client sends with `body` (MCP-Protocol-Version, Mcp-Method,
    Mcp-Name)."""
    params = body.get("params") or {}
    version = (params.get("_meta") or {}).get("io.modelcontextprotocol/protocolVersion", MODERN)
    headers = {"mcp-protocol-version": version, "mcp-method": body["method"]}
    named = params.get("uri" if body["method"] == "resources/read" else "name")
    if isinstance(named, str):
        headers["mcp-name"] = named
    return headers


async def raw(gw: Gateway, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST `body` with its routing headers (`headers` override or add to them)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gw.url + "/mcp",
            json=body,
            headers={
                "accept": "application/json, text/event-stream",
                **routing_headers(body),
                **(headers or {}),
            },
        ) as resp:
            return resp.status, await resp.json()


async def test_discover_and_header_checks(gateway: Gateway) -> None:
    status, body = await raw(
        gateway, {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": META}}
    )
    assert status == 200
    assert MODERN in body["result"]["supportedVersions"]
    assert "tools" in body["result"]["capabilities"]

    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "notes_add", "arguments": {"a": 1, "b": 1}, "_meta": META},
    }
    headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "notes_add"}
    status, body = await raw(gateway, call, headers)
    assert status == 200 and body["result"]["content"][0]["text"] == "2"

    status, body = await raw(gateway, call, {**headers, "mcp-name": "notes_other"})
    assert status == 400 and body["error"]["code"] == -32020
    status, body = await raw(gateway, call, {**headers, "mcp-method": "tools/list"})
    assert status == 400 and body["error"]["code"] == -32020
    # Routing headers are required, compared after trimming, and base64-wrapped names decoded.
    async with aiohttp.ClientSession() as http:
        for sent, expected in (
            ({"mcp-protocol-version": MODERN, "mcp-name": "notes_add"}, 400),
            ({"mcp-protocol-version": MODERN, "mcp-method": "tools/call"}, 400),
            ({**headers, "mcp-method": "TOOLS/CALL"}, 400),
            ({**headers, "mcp-name": "  notes_add "}, 200),
            ({**headers, "mcp-name": "=?base64?bm90ZXNfYWRk?="}, 200),
            ({**headers, "mcp-name": "=?base64?bm90ZXNfYWRk!?="}, 400),
        ):
            async with http.post(
                gateway.url + "/mcp",
                json=call,
                headers={"accept": "application/json, text/event-stream", **sent},
            ) as resp:
                assert resp.status == expected, sent
                if expected == 400:
                    assert (await resp.json())["error"]["code"] == -32020, sent

    old = {**META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    status, body = await raw(
        gateway,
        {**call, "params": {**call["params"], "_meta": old}},
        {"mcp-protocol-version": "2099-01-01"},
    )
    assert status == 400 and body["error"]["code"] == -32022
    assert MODERN in body["error"]["data"]["supported"]


async def test_envelope_validation_and_removed_methods(gateway: Gateway) -> None:
    headers = {"mcp-protocol-version": MODERN}
    no_caps = {k: v for k, v in META.items() if not k.endswith("clientCapabilities")}
    status, body = await raw(
        gateway,
        {"jsonrpc": "2.0", "id": 7, "method": "server/discover", "params": {"_meta": no_caps}},
        headers,
    )
    assert status == 400 and body["error"]["code"] == -32602 and body["id"] == 7
    status, body = await raw(gateway, {"jsonrpc": "2.0", "id": 8, "method": "tools/list"}, headers)
    assert status == 400 and body["error"]["code"] == -32602
    for method in ("ping", "logging/setLevel", "resources/subscribe", "no/such/method"):
        status, body = await raw(
            gateway,
            {"jsonrpc": "2.0", "id": 9, "method": method, "params": {"_meta": META}},
            headers,
        )
        assert status == 404 and body["error"]["code"] == -32601 and body["id"] == 9, method


async def test_log_messages_only_when_the_request_opts_in(gateway: Gateway) -> None:
    async def call(meta: dict[str, Any]) -> str:
        body = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "notes_count", "arguments": {"n": 1}, "_meta": meta},
        }
        async with aiohttp.ClientSession() as http:
            async with http.post(
                gateway.url + "/mcp",
                json=body,
                headers={"accept": "application/json, text/event-stream", **routing_headers(body)},
            ) as resp:
                return await resp.text()

    assert "notifications/message" not in await call(META)
    assert "notifications/message" in await call(
        {**META, "io.modelcontextprotocol/logLevel": "info"}
    )
    assert "notifications/message" not in await call(
        {**META, "io.modelcontextprotocol/logLevel": "error"}
    )
