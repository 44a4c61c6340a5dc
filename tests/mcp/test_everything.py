"""The `mcp` SDK client against @modelcontextprotocol/server-everything through Crossway, with
the server reached over each upstream transport (stdio, legacy SSE, Streamable HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import mcp.types as types
import pytest

from mcp import Client
from tests.helpers import Gateway, start_gateway
from tests.mcp.conftest import everything_server, everything_stdio, mcp_config, notes_stdio, stop


@pytest.fixture(params=["stdio", "sse", "streamableHttp"])
def gateway(request: pytest.FixtureRequest) -> Iterator[Gateway]:
    """Crossway federating server-everything (as `ev`) and the notes server (as `notes`)."""
    proc = None
    if request.param == "stdio":
        entry = everything_stdio()
    else:
        proc, url = everything_server(request.param)
        kind = "sse" if request.param == "sse" else "streamable_http"
        entry = f"{{type: {kind}, url: {url}}}"
    try:
        with start_gateway(mcp_config({"ev": entry, "notes": notes_stdio()})) as gw:
            yield gw
    finally:
        if proc is not None:
            stop(proc)


async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"sampled: {params.messages[0].content.text}"),  # type: ignore[union-attr]
        model="test-model",
    )


async def test_tools_resources_prompts_progress_sampling(gateway: Gateway) -> None:
    async with Client(gateway.url + "/mcp", mode="legacy", sampling_callback=sampling) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"ev_echo", "ev_get-sum", "ev_trigger-long-running-operation", "notes_add"} <= names
        assert all(n.startswith(("ev_", "notes_")) for n in names)

        echoed = await client.call_tool("ev_echo", {"message": "hello"})
        assert "hello" in echoed.content[0].text  # type: ignore[union-attr]
        total = await client.call_tool("ev_get-sum", {"a": 2, "b": 40})
        assert "42" in total.content[0].text  # type: ignore[union-attr]

        resources = (await client.list_resources()).resources
        uris = [str(r.uri) for r in resources]
        ev_uri = next(u for u in uris if u.startswith("crossway://ev/"))
        assert "crossway://notes/notes://first" in uris
        read = await client.read_resource(ev_uri)
        assert str(read.contents[0].uri) == ev_uri
        notes = await client.read_resource("crossway://notes/notes://first")
        assert notes.contents[0].text == "first note from notes"  # type: ignore[union-attr]
        templates = (await client.list_resource_templates()).resource_templates
        assert "crossway://notes/notes://by-id/{note_id}" in {t.uri_template for t in templates}
        by_id = await client.read_resource("crossway://notes/notes://by-id/7")
        assert by_id.contents[0].text == "note 7 from notes"  # type: ignore[union-attr]

        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert {"ev_simple-prompt", "ev_args-prompt", "notes_summarize"} <= prompts
        prompt = await client.get_prompt("ev_args-prompt", {"city": "Oslo", "state": "NO"})
        assert "Oslo" in str(prompt.messages[0].content)

        progress: list[float] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append(p)

        done = await client.call_tool(
            "ev_trigger-long-running-operation",
            {"duration": 0.3, "steps": 3},
            progress_callback=on_progress,
        )
        assert "completed" in done.content[0].text  # type: ignore[union-attr]
        assert progress == [1.0, 2.0, 3.0]

        sampled = await client.call_tool(
            "ev_trigger-sampling-request", {"prompt": "ping", "maxTokens": 5}
        )
        assert "sampled: " in sampled.content[0].text and "ping" in sampled.content[0].text  # type: ignore[union-attr]


async def test_list_changed_reaches_the_client(gateway: Gateway) -> None:
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with Client(gateway.url + "/mcp", mode="legacy", message_handler=on_message) as client:
        before = {t.name for t in (await client.list_tools()).tools}
        grown = await client.call_tool("notes_grow", {})
        new_tool = "notes_" + grown.content[0].text  # type: ignore[union-attr]
        assert new_tool not in before
        await asyncio.wait_for(changed.wait(), 10)
        after = {t.name for t in (await client.list_tools()).tools}
        assert new_tool in after
