"""The reference proxy on the Rust-backed client: the same raw ASGI app, forwarding with pyreqwest.

Like bench/reference_proxy.py (granian on uvloop, no routing, no parsing, no policies), but the
upstream call goes through one pooled pyreqwest `Client` (reqwest/hyper) instead of aiohttp, so
the ceiling Crossway is measured against moves with the stack Crossway itself runs on.

    REFERENCE_UPSTREAM=http://127.0.0.1:8081 \\
        granian --interface asgi --loop uvloop --workers 1 bench.reference_proxy_reqwest:app

A request for `/v1/chat/completions` goes to `$REFERENCE_UPSTREAM/v1/chat/completions`.
With `REFERENCE_ONE_BODY=1` (bench/server_options.py's interface study only) a sized answer that
is not an event stream goes out as one body message (`more_body` false) instead of chunk messages and an empty last one.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Final

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import RequestError

from bench.reference_proxy import HOP_BY_HOP, POOL_SIZE, REQUEST_DROPPED, Message, Scope

CONNECT_TIMEOUT: Final = timedelta(seconds=5)
READ_TIMEOUT: Final = timedelta(seconds=60)
IDLE_TIMEOUT: Final = timedelta(seconds=60)


def build_client() -> Client:
    """One pooled client with the aiohttp reference's rules: no redirects, cookies or decompression."""
    return (
        ClientBuilder()
        .max_connections(POOL_SIZE)
        .pool_max_idle_per_host(POOL_SIZE)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .follow_redirects(False)
        .default_cookie_store(False)
        .gzip(False)
        .brotli(False)
        .zstd(False)
        .deflate(False)
        .http1_only()
        .no_proxy()
        .build()
    )


class ReqwestReferenceProxy:
    """Forward every HTTP request to `upstream` and stream the answer back chunk by chunk."""

    def __init__(self, upstream: str, *, one_body: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.one_body = one_body
        self.client: Client | None = None

    def _client(self) -> Client:
        if self.client is None:
            self.client = build_client()
        return self.client

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        message: Message = await receive()
        body: bytes = message.get("body", b"")
        if message.get("more_body"):
            chunks = [body]
            while message.get("more_body"):
                message = await receive()
                chunks.append(message.get("body", b""))
            body = b"".join(chunks)
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1") not in REQUEST_DROPPED
        ]
        target = self.upstream + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        request = (
            self._client()
            .request(scope["method"], target)
            .headers(headers)
            .body_bytes(body)
            .build_streamed()
        )
        try:
            async with request as upstream:
                await send(
                    {
                        "type": "http.response.start",
                        "status": upstream.status,
                        "headers": [
                            (k.encode("latin-1"), v.encode("latin-1"))
                            for k, v in upstream.headers.items()
                            if k not in HOP_BY_HOP
                        ],
                    }
                )
                reader = upstream.body_reader
                if (
                    self.one_body
                    and upstream.headers.get("content-length") is not None
                    and not upstream.headers.get("content-type", "").startswith("text/event-stream")
                ):
                    data = (await reader.bytes()).to_bytes()
                    await send({"type": "http.response.body", "body": data, "more_body": False})
                    return
                while (chunk := await reader.read_chunk()) is not None:
                    await send(
                        {"type": "http.response.body", "body": chunk.to_bytes(), "more_body": True}
                    )
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except RequestError:
            await send(
                {
                    "type": "http.response.start",
                    "status": 502,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"upstream error"})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = ReqwestReferenceProxy(
    os.environ.get("REFERENCE_UPSTREAM", "http://127.0.0.1:8081"),
    one_body=os.environ.get("REFERENCE_ONE_BODY") == "1",
)
