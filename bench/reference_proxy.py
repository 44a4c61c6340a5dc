"""The reference proxy: the thinnest passthrough on Crossway's own server and client stack.

A raw ASGI app, served by granian on uvloop, forwarding every request to one upstream with a
pooled keep-alive aiohttp `ClientSession`: no routing, no parsing, no policies. Whatever
Crossway adds on top is measured against this ceiling.

    REFERENCE_UPSTREAM=http://127.0.0.1:8081 \\
        granian --interface asgi --loop uvloop --workers 1 bench.reference_proxy:app

A request for `/v1/chat/completions` goes to `$REFERENCE_UPSTREAM/v1/chat/completions`.
"""

from __future__ import annotations

import os
from typing import Any, Final

import aiohttp
import yarl

Scope = dict[str, Any]
Message = dict[str, Any]

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one connection and are never forwarded."""

REQUEST_DROPPED: Final = HOP_BY_HOP | {"host", "content-length"}
"""Request headers aiohttp sets itself for the upstream connection."""

POOL_SIZE: Final = 256


class ReferenceProxy:
    """Forward every HTTP request to `upstream` and stream the answer back chunk by chunk."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=60),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60),
            )
        return self.session

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1") not in REQUEST_DROPPED
        ]
        target = self.upstream + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        try:
            async with self._session().request(
                scope["method"],
                yarl.URL(target, encoded=True),
                headers=headers,
                data=b"".join(chunks),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            ) as upstream:
                await send(
                    {
                        "type": "http.response.start",
                        "status": upstream.status,
                        "headers": [
                            (k, v)
                            for k, v in upstream.raw_headers
                            if k.decode("latin-1").lower() not in HOP_BY_HOP
                        ],
                    }
                )
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, TimeoutError):
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
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = ReferenceProxy(os.environ.get("REFERENCE_UPSTREAM", "http://127.0.0.1:8081"))
