"""A virtual key's MCP-tool and A2A-agent scopes, through the `mcp` SDK client and A2A JSON-RPC:
out-of-scope tools and agents are refused and not listed; the key's `rpm` limits MCP calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from crossway.store import key_admin
from crossway.store.accounting_sqlite import SqliteAccounting
from mcp import Client
from tests.a2a.agents import run_agents
from tests.helpers import Gateway, start_gateway
from tests.mcp.conftest import notes_stdio

CONFIG = """
accounting: {{key_poll_interval: 0.2}}
listen:
  port: {port}
  policies: [{{type: virtual_key}}]
routes:
  - name: mcp
    match: {{path: {{prefix: /mcp}}}}
    backend: tools
  - name: a2a
    match: {{path: {{prefix: /a2a}}}}
    backend: agents
backends:
  tools:
    type: mcp
    servers:
      notes: {notes}
  agents:
    type: a2a
    agents:
      writer: {{url: "{writer}"}}
      vision: {{url: "{vision}"}}
    task_store: {{type: memory}}
"""


def _create(db: Path, **fields: Any) -> str:
    async def go() -> str:
        store = SqliteAccounting(db)
        await store.open()
        try:
            secret, _ = await key_admin.create_key(store, **fields)
            return secret
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, dict[str, str]]]:
    from tests.helpers import free_port

    data = tmp_path_factory.mktemp("data")
    db = data / "accounting.sqlite3"
    keys = {
        # made before the gateway starts: loaded at start, no poll to wait for
        "tools": _create(db, mcp_tools=["notes_add"], agents=["writer"]),
        "limited": _create(db, rpm=2),
    }
    port = free_port()
    with run_agents(["writer", "vision"]) as agents:
        config = CONFIG.format(
            port=port,
            notes=notes_stdio("notes"),
            writer=agents["writer"].url,
            vision=agents["vision"].url,
        )
        with start_gateway(config, env={"CROSSWAY_DATA_DIR": str(data)}, port=port) as gw:
            yield gw, keys


def _mcp(gw: Gateway, key: str) -> Client:
    http = create_mcp_http_client(headers={"authorization": f"Bearer {key}"})
    return Client(streamable_http_client(gw.url + "/mcp", http_client=http), mode="legacy")


async def test_mcp_tools_outside_the_key_scope(setup: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = setup
    async with _mcp(gw, keys["tools"]) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"notes_add"}
        result = await client.call_tool("notes_add", {"a": 2, "b": 3})
        assert "5" in str(result.content[0])
        with pytest.raises(MCPError) as info:
            await client.call_tool("notes_whoami", {})
        assert "may not call tool 'notes_whoami'" in info.value.error.message
    async with _mcp(gw, keys["limited"]) as client:  # an unscoped key sees every tool
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"notes_add", "notes_whoami"} <= names


async def test_mcp_calls_count_against_the_key_rpm(setup: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = setup
    async with _mcp(gw, keys["limited"]) as client:
        await client.call_tool("notes_add", {"a": 1, "b": 1})
        await client.call_tool("notes_add", {"a": 1, "b": 1})
        with pytest.raises(MCPError) as info:
            await client.call_tool("notes_add", {"a": 1, "b": 1})
        assert "key rpm" in info.value.error.message


def _send(gw: Gateway, agent: str, key: str | None) -> httpx.Response:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "Hi."}]}},
    }
    headers = {"A2A-Version": "1.0"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(f"{gw.url}/a2a/{agent}/", json=message, headers=headers, timeout=30)


def test_a2a_agents_outside_the_key_scope(setup: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = setup
    ok = _send(gw, "writer", keys["tools"])
    assert ok.status_code == 200 and "result" in ok.json(), ok.text
    refused = _send(gw, "vision", keys["tools"])
    body = refused.json()
    assert "error" in body, body
    # an agent outside the scope is hidden, as if it were not there
    assert body["error"]["message"] == "no A2A agent 'vision' here"
    assert refused.status_code == 404
    catalog = httpx.get(
        gw.url + "/a2a/agents", headers={"authorization": f"Bearer {keys['tools']}"}
    ).json()
    names = {entry["name"] for entry in catalog.get("agents", catalog)}
    assert names == {"writer"}
    assert _send(gw, "writer", None).status_code == 401


def test_a2a_messages_count_against_the_key_rpm(setup: tuple[Gateway, dict[str, str]]) -> None:
    gw, _ = setup
    secret = _create(Path(gw.env["CROSSWAY_DATA_DIR"]) / "accounting.sqlite3", rpm=1)

    def loaded() -> bool:
        return _send(gw, "writer", secret).status_code != 401

    from tests.helpers import wait_for

    wait_for(loaded, timeout=5, what="the new key to be loaded")  # took the one request
    refused = _send(gw, "writer", secret)
    body = refused.json()
    assert refused.status_code == 429, refused.text
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32029
    assert "key rpm" in body["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
