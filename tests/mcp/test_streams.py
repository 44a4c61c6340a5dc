"""The session's standalone stream (GET /mcp): server notifications arrive on it, and a client
that reconnects with `Last-Event-ID` gets what it missed, once."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from tests.helpers import start_gateway
from tests.mcp.conftest import mcp_config, notes_stdio

ACCEPT = {"accept": "application/json, text/event-stream"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


async def read_event(resp: aiohttp.ClientResponse) -> tuple[str | None, Any]:
    """The next `message` event on an SSE response: (id, decoded data)."""
    event_id = None
    data = None
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().rstrip("\r\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = orjson.loads(line[6:])
        elif line == "" and data is not None:
            return event_id, data


async def test_get_stream_resumes_after_last_event_id() -> None:
    with start_gateway(mcp_config({"notes": notes_stdio()})) as gw:
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.url + "/mcp", json=INIT, headers=ACCEPT) as resp:
                sid = resp.headers["mcp-session-id"]
            headers = {**ACCEPT, "mcp-session-id": sid}

            async def grow(i: int) -> None:
                call = {
                    "jsonrpc": "2.0",
                    "id": 100 + i,
                    "method": "tools/call",
                    "params": {"name": "notes_grow", "arguments": {}},
                }
                async with http.post(gw.url + "/mcp", json=call, headers=headers) as resp:
                    assert resp.status == 200
                    await resp.read()

            stream_headers = {"accept": "text/event-stream", "mcp-session-id": sid}
            async with http.get(gw.url + "/mcp", headers=stream_headers) as stream:
                assert stream.status == 200
                await grow(1)
                first_id, first = await read_event(stream)
            assert first["method"] == "notifications/tools/list_changed"
            assert first_id is not None

            await grow(2)  # sent while no stream is open
            await grow(3)
            async with http.get(
                gw.url + "/mcp", headers={**stream_headers, "last-event-id": first_id}
            ) as stream:
                ids = [(await read_event(stream))[0] for _ in range(2)]
            assert [int(i) for i in ids if i] == [int(first_id) + 1, int(first_id) + 2]
