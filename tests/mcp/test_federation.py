"""Federation through a real gateway process: lists merged, names prefixed, calls routed."""

from __future__ import annotations

import re
import sys

from mcp.types import PaginatedRequestParams

from mcp import Client
from tests.helpers import ROOT, start_gateway
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


async def test_names_that_need_hashing_stay_callable() -> None:
    with start_gateway(mcp_config({"notes": notes_stdio()})) as gw:
        async with Client(gw.url + "/mcp", mode="legacy") as client:
            names = [t.name for t in (await client.list_tools()).tools]
            assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", n) for n in names)
            dotted = next(n for n in names if n.startswith("notes_dotted-name-"))
            assert (await client.call_tool(dotted, {})).content[0].text == "dotted"  # type: ignore[union-attr]


async def test_unprefixed_single_server_exposes_names_unchanged() -> None:
    config = mcp_config({"notes": notes_stdio().replace("}", ", prefix: false}")})
    with start_gateway(config) as gw:
        async with Client(gw.url + "/mcp", mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"add", "whoami", "dotted.name"} <= names
            assert (await client.call_tool("add", {"a": 1, "b": 1})).content[0].text == "2"  # type: ignore[union-attr]
            uris = {str(r.uri) for r in (await client.list_resources()).resources}
            assert "notes://first" in uris
            read = await client.read_resource("notes://first")
            assert read.contents[0].text == "first note from notes"  # type: ignore[union-attr]


async def test_pagination_across_servers() -> None:
    paged = (
        f'{{type: stdio, command: "{sys.executable}", '
        f'args: ["-m", "tests.mcp.servers.garbage", "paged", "5"], cwd: "{ROOT}"}}'
    )
    config = mcp_config({"paged": paged, "notes": notes_stdio()}, "separator: '-'")
    with start_gateway(config) as gw:
        async with Client(gw.url + "/mcp", mode="legacy") as client:
            pages: list[list[str]] = []
            cursor = None
            while True:
                page = await client.session.list_tools(params=PaginatedRequestParams(cursor=cursor))
                pages.append([t.name for t in page.tools])
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert len(pages) == 3
            assert {"paged-t0", "paged-t1", "notes-add"} <= set(pages[0])
            assert pages[1] == ["paged-t2", "paged-t3"]
            assert pages[2] == ["paged-t4"]
            assert (await client.call_tool("paged-t3", {})).content[0].text == "noop done"  # type: ignore[union-attr]
