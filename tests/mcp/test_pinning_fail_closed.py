"""Tool pinning fails closed: in `block` mode a `tools/call` reaches the upstream only for a tool
whose current definition the gateway has seen and verified — also when the server's tool list
fails, or the tool sits on a page the client never read. Blocked tools are re-approved through
the admin API and the `crossway pins` CLI, without restarting Crossway."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crossway.cli import main as cli_main
from tests.helpers import ROOT, Gateway, free_port, start_gateway
from tests.mcp.conftest import mcp_config

ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def _server(state: Path) -> str:
    return (
        f'{{type: stdio, command: "{sys.executable}", '
        f'args: ["-m", "tests.mcp.servers.pintricks", "{state}"], cwd: "{ROOT}"}}'
    )


def _calls(state: Path) -> list[str]:
    path = state / "calls"
    return path.read_text().split() if path.exists() else []


class Client:
    """A raw MCP client over Streamable HTTP (JSON answers): what each test sends is explicit."""

    def __init__(self, http: aiohttp.ClientSession, gw: Gateway) -> None:
        self.http = http
        self.url = gw.url + "/mcp"
        self.session_id: str | None = None
        self._ids = 0

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._ids += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self._ids, "method": method}
        if params is not None:
            body["params"] = params
        headers = dict(ACCEPT)
        if self.session_id:
            headers["mcp-session-id"] = self.session_id
        async with self.http.post(self.url, json=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            self.session_id = resp.headers.get("mcp-session-id", self.session_id)
            answer: dict[str, Any] = await resp.json()
            return answer

    async def start(self) -> Client:
        init = await self.rpc(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        )
        assert "result" in init, init
        headers = {**ACCEPT, "mcp-session-id": str(self.session_id)}
        body = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with self.http.post(self.url, json=body, headers=headers) as resp:
            assert resp.status == 202
        return self

    async def call(self, tool: str) -> dict[str, Any]:
        return await self.rpc("tools/call", {"name": tool, "arguments": {"city": "Oslo"}})

    async def tool_names(self, *, all_pages: bool) -> list[str]:
        names: list[str] = []
        cursor: str | None = None
        while True:
            page = (await self.rpc("tools/list", {"cursor": cursor} if cursor else None))["result"]
            names += [t["name"] for t in page["tools"]]
            cursor = page.get("nextCursor")
            if cursor is None or not all_pages:
                return names


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "upstream"
    path.mkdir()
    return path


def _text(answer: dict[str, Any]) -> str:
    assert "result" in answer, answer
    return str(answer["result"]["content"][0]["text"])


async def _pin_then_rug_pull(client: Client, state: Path) -> None:
    """The client reads every page (so `later` is pinned), the server swaps `later`'s
    definition and announces it; the client then reads only page 1 again."""
    assert await client.tool_names(all_pages=True) == ["pt_first", "pt_swap", "pt_later"]
    assert _text(await client.call("pt_swap")) == "swap done"
    assert await client.tool_names(all_pages=False) == ["pt_first", "pt_swap"]


# -- fail closed -------------------------------------------------------------------------------


async def test_call_is_refused_when_the_tool_list_fails(
    state: Path, http: aiohttp.ClientSession
) -> None:
    (state / "fail-list").touch()
    with start_gateway(mcp_config({"pt": _server(state)})) as gw:
        client = await Client(http, gw).start()
        answer = await client.call("pt_first")  # never listed: the gateway cannot verify it
        assert "error" in answer, answer
        assert "could not be verified" in answer["error"]["message"]
        assert "pt_first" in answer["error"]["message"]
        assert _calls(state) == []  # the upstream never saw the call

        (state / "fail-list").unlink()  # the list works again: the call is verified and goes on
        assert _text(await client.call("pt_first")) == "first done"
        assert _calls(state) == ["first"]
        assert "'pt_first' could not be verified" in gw.log()


async def test_flag_mode_lets_an_unverifiable_call_through_and_logs_it(
    state: Path, http: aiohttp.ClientSession
) -> None:
    (state / "fail-list").touch()
    with start_gateway(mcp_config({"pt": _server(state)}, "pinning: {mode: flag}")) as gw:
        client = await Client(http, gw).start()
        assert _text(await client.call("pt_first")) == "first done"
        assert _calls(state) == ["first"]
        assert "called without a verified definition" in gw.log()


async def test_changed_tool_on_a_later_page_is_blocked(
    state: Path, http: aiohttp.ClientSession
) -> None:
    with start_gateway(mcp_config({"pt": _server(state)})) as gw:
        client = await Client(http, gw).start()
        await _pin_then_rug_pull(client, state)
        answer = await client.call("pt_later")
        assert "error" in answer and "blocked" in answer["error"]["message"], answer
        assert _calls(state) == ["swap"]  # `later` never reached the upstream
        # A new session that never listed anything is refused too.
        other = await Client(http, gw).start()
        assert "blocked" in (await other.call("pt_later"))["error"]["message"]
        assert _calls(state) == ["swap"]
        assert "definition changed: server=pt tool=later" in gw.log()


async def test_tool_past_the_page_bound_is_refused(
    state: Path, http: aiohttp.ClientSession
) -> None:
    from crossway.mcp.federation import MAX_VERIFY_PAGES

    (state / "filler").write_text(str(MAX_VERIFY_PAGES + 1))
    with start_gateway(mcp_config({"pt": _server(state)})) as gw:
        client = await Client(http, gw).start()
        answer = await client.call("pt_later")
        assert "error" in answer and "could not be verified" in answer["error"]["message"]
        assert _calls(state) == []
        assert _text(await client.call("pt_first")) == "first done"  # page 1 is fine


# -- re-approval -------------------------------------------------------------------------------


def _admin_config(state: Path, admin_port: int, extra: str = "", admin: str = "") -> str:
    return f"admin:\n  port: {admin_port}\n{admin}" + mcp_config({"pt": _server(state)}, extra)


async def test_reapproved_through_the_admin_api(state: Path, http: aiohttp.ClientSession) -> None:
    admin_port = free_port()
    with start_gateway(_admin_config(state, admin_port), admin_port=admin_port) as gw:
        client = await Client(http, gw).start()
        await _pin_then_rug_pull(client, state)
        assert "blocked" in (await client.call("pt_later"))["error"]["message"]

        async with http.get(gw.admin_url + "/pins") as resp:
            assert resp.status == 200
            listing = await resp.json()
        entries = {(e["backend"], e["server"], e["tool"]): e for e in listing["pins"]}
        later = entries[("tools", "pt", "later")]
        assert later["status"] == "blocked"
        assert later["pinned_sha256"] != later["current_sha256"]
        assert entries[("tools", "pt", "first")]["status"] == "ok"

        async with http.post(gw.admin_url + "/pins/tools/pt/later/approve") as resp:
            assert resp.status == 200, await resp.text()
            approved = await resp.json()
        assert approved["pinned_sha256"] == later["current_sha256"]
        assert approved["changed"] is False
        # The operator accepted it; its description still reads like an injection: flagged.
        assert approved["status"] == "flagged" and "important-tag" in approved["findings"]

        assert _text(await client.call("pt_later")) == "later done"  # no restart
        assert await client.tool_names(all_pages=True) == ["pt_first", "pt_swap", "pt_later"]

        async with http.delete(gw.admin_url + "/pins/tools/pt/later") as resp:
            assert resp.status == 200
        async with http.delete(gw.admin_url + "/pins/tools/pt/later") as resp:
            assert resp.status == 404
            assert "no pin" in (await resp.json())["error"]["message"]
        async with http.post(gw.admin_url + "/pins/nope/pt/later/approve") as resp:
            assert resp.status == 404


async def test_admin_pin_routes_need_the_token_when_one_is_set(
    state: Path, http: aiohttp.ClientSession
) -> None:
    admin_port = free_port()
    config = _admin_config(state, admin_port, admin="  token: s3cret-admin\n")
    with start_gateway(config, admin_port=admin_port) as gw:
        client = await Client(http, gw).start()
        await _pin_then_rug_pull(client, state)
        assert "blocked" in (await client.call("pt_later"))["error"]["message"]
        url = gw.admin_url + "/pins/tools/pt/later/approve"
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-admin"}):
            async with http.post(url, headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["www-authenticate"] == "Bearer"
        assert "blocked" in (await client.call("pt_later"))["error"]["message"]
        async with http.post(url, headers={"authorization": "Bearer s3cret-admin"}) as resp:
            assert resp.status == 200
        assert _text(await client.call("pt_later")) == "later done"


def test_cli_lists_and_approves_pins_in_the_sqlite_store(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    pins = tmp_path / "pins.sqlite3"
    config = mcp_config(
        {"pt": _server(state)}, f"pinning: {{mode: block, store: sqlite, path: '{pins}'}}"
    )

    async def scenario(gw: Gateway) -> Client:
        async with aiohttp.ClientSession() as http:
            client = await Client(http, gw).start()
            await _pin_then_rug_pull(client, state)
            assert "blocked" in (await client.call("pt_later"))["error"]["message"]
            return client

    async def call_later(client: Client) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            client.http = http
            return await client.call("pt_later")

    with start_gateway(config) as gw:
        client = asyncio.run(scenario(gw))
        capsys.readouterr()
        assert cli_main(["pins", "list", "--config", str(gw.config_path)]) == 0
        out = capsys.readouterr().out
        line = next(row for row in out.splitlines() if " later " in f" {row} ")
        assert line.split()[:4] == ["tools", "pt", "later", "blocked"]

        assert (
            cli_main(["pins", "approve", "--config", str(gw.config_path), "tools", "pt", "later"])
            == 0
        )
        assert "approved" in capsys.readouterr().out
        assert _text(asyncio.run(call_later(client))) == "later done"  # the worker noticed
        assert (
            cli_main(["pins", "approve", "--config", str(gw.config_path), "tools", "pt", "x"]) == 1
        )
        assert "no pin" in capsys.readouterr().err
