"""2026-07-28 end to end: a 2026-07-28 client's requests go on to a server that speaks the
revision in that era (input-required results relayed, names still prefixed), and
`subscriptions/listen` gathers change notifications from 2026-07-28 and handshake-era servers."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged

from mcp import Client, types
from tests.helpers import Gateway, free_port, start_gateway
from tests.mcp.conftest import mcp_config, notes_stdio, spawn, stop
from tests.mcp.test_modern import routing_headers

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    """The conformance fixture (Streamable HTTP, speaks 2026-07-28) and the notes server
    (stdio, handshake era only), both prefixed."""
    port = free_port()
    fixture = spawn([sys.executable, "-m", "tests.mcp.conformance.server", str(port)], port)
    servers = {
        "fx": f'{{type: streamable_http, url: "http://127.0.0.1:{port}/mcp"}}',
        "notes": notes_stdio(),
    }
    try:
        with start_gateway(mcp_config(servers)) as gw:
            yield gw
    finally:
        stop(fixture)


async def test_input_required_results_relayed_with_prefixed_names(gateway: Gateway) -> None:
    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async with Client(gateway.url + "/mcp", mode=MODERN, elicitation_callback=elicit) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"fx_test_input_required_result_elicitation", "notes_add"} <= names
        result = await client.call_tool("fx_test_input_required_result_elicitation", {})
        assert result.content[0].text == "Hello, Ada!"  # type: ignore[union-attr]
        assert asked == ["What is your name?"]
        # A handshake-era server behind the same endpoint still answers.
        added = await client.call_tool("notes_add", {"a": 2, "b": 3})
        assert added.content[0].text == "5"  # type: ignore[union-attr]


async def post(gw: Gateway, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gw.url + "/mcp",
            json=body,
            headers={"accept": "application/json, text/event-stream", **routing_headers(body)},
        ) as resp:
            return resp.status, await resp.json()


async def test_envelope_travels_per_request(gateway: Gateway) -> None:
    """The server sees each request's own declared capabilities, not another client's."""

    def call(caps: dict[str, Any], rpc_id: int) -> dict[str, Any]:
        meta = {**META, "io.modelcontextprotocol/clientCapabilities": caps}
        params = {"name": "fx_test_missing_capability", "arguments": {}, "_meta": meta}
        return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": params}

    status, body = await post(gateway, call({"sampling": {}}, 1))
    assert status == 200 and body["result"]["content"][0]["text"] == "sampling declared"
    status, body = await post(gateway, call({}, 2))
    assert status == 400 and body["error"]["code"] == -32021 and body["id"] == 2


async def test_initialize_is_not_a_2026_method(gateway: Gateway) -> None:
    body = {"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {"_meta": META}}
    status, reply = await post(gateway, body)
    assert status == 404 and reply["error"]["code"] == -32601 and reply["id"] == 3


async def test_listen_gathers_list_changed_from_both_eras(gateway: Gateway) -> None:
    async with Client(gateway.url + "/mcp", mode=MODERN) as client:
        async with client.listen(tools_list_changed=True) as sub:
            events = aiter(sub)
            await client.call_tool("fx_test_trigger_tool_change", {})
            assert isinstance(await asyncio.wait_for(anext(events), 10), ToolsListChanged)
            await client.call_tool("notes_grow", {})
            assert isinstance(await asyncio.wait_for(anext(events), 10), ToolsListChanged)
            names = {t.name for t in (await client.list_tools()).tools}
            assert "fx_dynamic_tool_1" in names and "notes_extra1" in names


async def test_listen_relays_resource_updates_with_federated_uris(gateway: Gateway) -> None:
    watched = "crossway://fx/test://watched-resource"
    async with Client(gateway.url + "/mcp", mode=MODERN) as client:
        async with client.listen(resource_subscriptions=[watched]) as sub:
            events = aiter(sub)
            await client.call_tool("fx_test_trigger_resource_update", {"uri": "test://other"})
            await client.call_tool(
                "fx_test_trigger_resource_update", {"uri": "test://watched-resource"}
            )
            event = await asyncio.wait_for(anext(events), 10)
    assert event == ResourceUpdated(uri=watched)


async def test_listen_tags_and_filters(gateway: Gateway) -> None:
    """Raw frames: the acknowledgement first, then only the kinds asked for, each tagged with
    the listen request's id."""
    listen = {
        "jsonrpc": "2.0",
        "id": "L1",
        "method": "subscriptions/listen",
        "params": {"_meta": META, "notifications": {"promptsListChanged": True}},
    }
    headers = {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": "subscriptions/listen",
    }
    frames: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/mcp", json=listen, headers=headers) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"

            async def next_frame() -> dict[str, Any]:
                while True:
                    line = (await resp.content.readline()).decode().strip()
                    if line.startswith("data:"):
                        frame: dict[str, Any] = json.loads(line[5:])
                        frames.append(frame)
                        return frame

            ack = await asyncio.wait_for(next_frame(), 10)
            assert ack["method"] == "notifications/subscriptions/acknowledged"
            assert ack["params"]["notifications"] == {"promptsListChanged": True}
            for tool in ("fx_test_trigger_tool_change", "fx_test_trigger_prompt_change"):
                call = {
                    "jsonrpc": "2.0",
                    "id": tool,
                    "method": "tools/call",
                    "params": {"name": tool, "arguments": {}, "_meta": META},
                }
                status, _ = await post(gateway, call)
                assert status == 200
            changed = await asyncio.wait_for(next_frame(), 10)
    assert changed["method"] == "notifications/prompts/list_changed"
    assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1"
    assert not any(f.get("method") == "notifications/tools/list_changed" for f in frames)
