"""A passed-through OpenAI stream's `[DONE]` goes out with the end of the response (one ASGI
message), once the upstream's own end is seen; an upstream that stays open after `[DONE]` does
not hold the client's stream open. Usage is recorded either way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from crossway.config.llm import LlmBackendConfig
from crossway.llm.backend import LlmBackend
from crossway.proxy import client
from crossway.server.context import RequestContext


def event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


CHUNKS = [
    event({"id": "c", "choices": [{"index": 0, "delta": {"content": w}}], "usage": None})
    for w in ("Hel", "lo")
]
USAGE = event({"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
DONE = b"data: [DONE]\n\n"


class Upstream:
    """An OpenAI-style server whose stream is written as the test says."""

    def __init__(self) -> None:
        self.mode = "one_write"
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        if self.mode == "one_write":
            await resp.write(b"".join([*CHUNKS, USAGE, DONE]))
        else:
            for chunk in [*CHUNKS, USAGE, DONE]:
                await resp.write(chunk)
            if self.mode == "stall":
                await self.release.wait()  # open after [DONE] until the test ends
        await resp.write_eof()
        return resp


@pytest.fixture
async def served() -> AsyncIterator[tuple[Upstream, LlmBackend]]:
    upstream = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = LlmBackendConfig.model_validate(
        {
            "type": "llm",
            "providers": {
                "oai": {"type": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k"}
            },
        }
    )
    backend = LlmBackend("llm", config, 1 << 20)
    await backend.start()
    try:
        yield upstream, backend
    finally:
        upstream.release.set()
        await backend.close()
        await client.close_session()
        close_clients = getattr(client, "close_clients", None)
        if close_clients is not None:
            await close_clients()
        await runner.cleanup()


async def stream(backend: LlmBackend) -> tuple[list[dict[str, Any]], RequestContext]:
    body = orjson.dumps({"model": "m", "stream": True, "messages": []})
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        message = next(messages, None)
        if message is None:
            await never.wait()
            return {"type": "http.disconnect"}
        return message

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = "/v1/chat/completions"
    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    ctx = RequestContext("r", "llm", "1", path)
    async with asyncio.timeout(10):
        await backend(scope, receive, send, ctx)
    return sent, ctx


@pytest.mark.parametrize("mode", ["one_write", "writes", "stall"])
async def test_done_goes_out_with_the_end(served: tuple[Upstream, LlmBackend], mode: str) -> None:
    upstream, backend = served
    upstream.mode = mode
    sent, ctx = await stream(backend)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert bodies[-1]["body"].endswith(DONE)
    assert not bodies[-1].get("more_body", False)  # [DONE] and the end: one message
    assert all(m.get("more_body") for m in bodies[:-1])
    text = b"".join(m["body"] for m in bodies)
    assert text.count(b"Hel") == 1 and text.count(DONE) == 1
    assert b'"usage"' not in text  # the usage Crossway asked for stays hidden
    assert ctx.attrs["llm.usage"]["input_tokens"] == 5
    if mode == "one_write":
        assert len(bodies) == 1
