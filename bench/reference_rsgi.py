"""The reference proxy on granian's RSGI interface instead of ASGI, to measure what RSGI would buy.

The same passthrough as bench/reference_proxy.py and bench/reference_proxy_reqwest.py (no
routing, parsing or policies), written against RSGI: the request body is one awaited call, the
answer one `response_bytes` call when the upstream sized it (`content-length`, not an event
stream) or a `response_stream` transport fed chunk by chunk otherwise — no message dicts.

    REFERENCE_UPSTREAM=http://127.0.0.1:8081 REFERENCE_CLIENT=reqwest \\
        granian --interface rsgi --loop uvloop --workers 1 bench.reference_rsgi:app

`REFERENCE_CLIENT` picks the upstream client: `reqwest` (default, one pooled pyreqwest
`Client`) or `aiohttp` (one pooled `ClientSession`, as the ASGI reference). Only
bench/server_options.py runs it; `make bench` keeps the ASGI references.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Final

import aiohttp
import yarl
from pyreqwest.client import Client
from pyreqwest.exceptions import RequestError

from bench.reference_proxy import HOP_BY_HOP, REQUEST_DROPPED, ReferenceProxy
from bench.reference_proxy_reqwest import build_client

CLIENTS: Final = ("reqwest", "aiohttp")
ERROR_HEADERS: Final = [("content-type", "text/plain")]


def _sized(content_length: str | None, content_type: str | None) -> bool:
    """Answer in one call: a sized body that is not an event stream (those stream as they come)."""
    return content_length is not None and not (content_type or "").startswith("text/event-stream")


class RsgiReferenceProxy:
    """Forward every HTTP request to `upstream`; sized answers in one call, others streamed."""

    def __init__(self, upstream: str, client: str = "reqwest") -> None:
        if client not in CLIENTS:
            raise ValueError(f"REFERENCE_CLIENT must be one of {CLIENTS}, not {client!r}")
        self.upstream = upstream.rstrip("/")
        self.client_name = client
        self.reqwest: Client | None = None
        self.aiohttp = ReferenceProxy(upstream)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.client_name == "reqwest":
            self.reqwest = build_client()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.reqwest is not None:
            loop.run_until_complete(self.reqwest.close())
        if self.aiohttp.session is not None:
            loop.run_until_complete(self.aiohttp.session.close())

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            return
        body: bytes = await protocol()
        headers = [(k, v) for k, v in scope.headers.items() if k not in REQUEST_DROPPED]
        target = self.upstream + scope.path
        if scope.query_string:
            target += "?" + scope.query_string
        if self.client_name == "reqwest":
            await self._forward_reqwest(scope.method, target, headers, body, protocol)
        else:
            await self._forward_aiohttp(scope.method, target, headers, body, protocol)

    async def _forward_reqwest(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, protocol: Any
    ) -> None:
        if self.reqwest is None:
            self.reqwest = build_client()
        request = (
            self.reqwest.request(method, target).headers(headers).body_bytes(body).build_streamed()
        )
        try:
            async with request as upstream:
                answer_headers = [
                    (k, v) for k, v in upstream.headers.items() if k not in HOP_BY_HOP
                ]
                reader = upstream.body_reader
                if _sized(
                    upstream.headers.get("content-length"), upstream.headers.get("content-type")
                ):
                    data = await reader.bytes()
                    protocol.response_bytes(upstream.status, answer_headers, data.to_bytes())
                    return
                transport = protocol.response_stream(upstream.status, answer_headers)
                while (chunk := await reader.read_chunk()) is not None:
                    await transport.send_bytes(chunk.to_bytes())
        except RequestError:
            protocol.response_bytes(502, ERROR_HEADERS, b"upstream error")

    async def _forward_aiohttp(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, protocol: Any
    ) -> None:
        try:
            async with self.aiohttp._session().request(
                method,
                yarl.URL(target, encoded=True),
                headers=headers,
                data=body,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            ) as upstream:
                answer_headers = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in upstream.raw_headers
                    if k.decode("latin-1").lower() not in HOP_BY_HOP
                ]
                if _sized(
                    upstream.headers.get("content-length"), upstream.headers.get("content-type")
                ):
                    protocol.response_bytes(upstream.status, answer_headers, await upstream.read())
                    return
                transport = protocol.response_stream(upstream.status, answer_headers)
                async for chunk in upstream.content.iter_any():
                    await transport.send_bytes(chunk)
        except (aiohttp.ClientError, TimeoutError):
            protocol.response_bytes(502, ERROR_HEADERS, b"upstream error")


app = RsgiReferenceProxy(
    os.environ.get("REFERENCE_UPSTREAM", "http://127.0.0.1:8081"),
    os.environ.get("REFERENCE_CLIENT", "reqwest"),
)
