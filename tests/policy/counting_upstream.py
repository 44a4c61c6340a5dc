"""A small aiohttp upstream that records every request reaching it (policy tests assert that
refused requests never do), and an aiohttp client call that returns status, headers, JSON."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class CountingUpstream:
    url: str
    seen: list[Seen] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.seen)


@asynccontextmanager
async def counting_upstream() -> AsyncIterator[CountingUpstream]:
    state: dict[str, CountingUpstream] = {}

    async def handle(request: web.Request) -> web.Response:
        state["up"].seen.append(
            Seen(request.method, request.path, {k.lower(): v for k, v in request.headers.items()})
        )
        return web.json_response({"ok": True, "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["up"] = CountingUpstream(f"http://127.0.0.1:{port}")
    try:
        yield state["up"]
    finally:
        await runner.cleanup()


def http_route_config(upstream: str, policies: str, listen: str = "") -> str:
    """A config with one catch-all route to a plain HTTP backend, with these policies
    (YAML list items, indented by 6 spaces)."""
    return f"""
{listen}routes:
  - name: api
    backend: web
    policies:
{policies}
backends:
  web:
    type: http
    url: {upstream}
"""


async def call(
    url: str,
    method: str = "GET",
    *,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    session: aiohttp.ClientSession | None = None,
) -> tuple[int, CIMultiDictProxy[str], Any]:
    """One request; returns (status, headers, JSON body or None)."""
    own = session is None
    client = session or aiohttp.ClientSession()
    try:
        async with client.request(
            method, url, headers=headers, ssl=ssl_context if ssl_context is not None else True
        ) as resp:
            body = await resp.read()
            data: Any = None
            if body and resp.content_type == "application/json":
                data = await resp.json()
            return resp.status, resp.headers, data
    finally:
        if own:
            await client.close()
