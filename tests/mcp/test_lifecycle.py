"""stdio children follow the backend's life: killed on shutdown and when a reload drops them;
kept (with their sessions) when a reload leaves the MCP backend unchanged."""

from __future__ import annotations

import os

from mcp import Client
from tests.helpers import start_gateway, wait_for
from tests.mcp.conftest import mcp_config, notes_stdio


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def whoami(url: str, tool: str) -> int:
    async with Client(url + "/mcp", mode="legacy") as client:
        text = (await client.call_tool(tool, {})).content[0].text  # type: ignore[union-attr]
    return int(text.rsplit(":", 1)[1])


async def test_children_are_killed_on_reload_and_shutdown() -> None:
    with start_gateway(mcp_config({"one": notes_stdio("one")})) as gw:
        first = await whoami(gw.url, "one_whoami")
        assert alive(first)
        # A reload that changes the backend: the old child goes, the new one serves.
        gw.write_config(
            mcp_config({"two": notes_stdio("two")}).replace(
                "routes:",
                f"listen:\n  port: {gw.port}\nadmin:\n  port: {gw.admin_port}\nroutes:",
                1,
            )
        )
        wait_for(lambda: not alive(first), timeout=30, what="old stdio child to exit")
        second = await whoami(gw.url, "two_whoami")
        assert second != first and alive(second)
        gw.stop()
        wait_for(lambda: not alive(second), timeout=15, what="stdio child to exit on shutdown")


async def test_per_client_isolation_gives_each_session_its_own_child() -> None:
    entry = notes_stdio("own").replace("}", ", isolation: per_client}")
    with start_gateway(mcp_config({"own": entry})) as gw:
        async with (
            Client(gw.url + "/mcp", mode="legacy") as one,
            Client(gw.url + "/mcp", mode="legacy") as two,
        ):
            pid_one = int((await one.call_tool("own_whoami", {})).content[0].text.rsplit(":", 1)[1])  # type: ignore[union-attr]
            pid_two = int((await two.call_tool("own_whoami", {})).content[0].text.rsplit(":", 1)[1])  # type: ignore[union-attr]
            assert pid_one != pid_two
            assert (await one.call_tool("own_bump", {})).content[0].text == "1"  # type: ignore[union-attr]
            assert (await one.call_tool("own_bump", {})).content[0].text == "2"  # type: ignore[union-attr]
            assert (await two.call_tool("own_bump", {})).content[0].text == "1"  # type: ignore[union-attr]
        # Leaving the sessions (DELETE) stops their children.
        wait_for(
            lambda: not alive(pid_one) and not alive(pid_two), timeout=15, what="children to exit"
        )
