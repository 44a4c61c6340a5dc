"""Federation through a real gateway process: lists merged, names prefixed, calls routed."""

from __future__ import annotations

from mcp import Client
from tests.helpers import start_gateway
from tests.mcp.conftest import mcp_config, notes_stdio


async def test_tools_from_two_servers_are_prefixed_and_callable(notes_http: str) -> None:
    config = mcp_config(
        {"alpha": notes_stdio("alpha"), "beta": f"{{type: streamable_http, url: {notes_http}}}"}
    )
    with start_gateway(config) as gw:
        async with Client(gw.url + "/mcp", mode="legacy") as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"alpha_add", "beta_add", "alpha_whoami", "beta_whoami"} <= tools
            result = await client.call_tool("alpha_add", {"a": 2, "b": 3})
            assert result.content[0].text == "5"
            result = await client.call_tool("beta_whoami", {})
            assert result.content[0].text.startswith("notes:")
