"""Raw-ASGI helpers shared by the downstream transports (the request body and headers are
read with `crossway.server.asgi.read_body` and `header_text`, like every protocol's)."""

from __future__ import annotations

from typing import Any, Final

import orjson

from crossway.server.asgi import JSON_HEADERS
from crossway.types import Send

SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


async def send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A complete JSON response."""
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_empty(
    send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A response without a body."""
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": b""})


def sse_event(data: bytes, event_id: str | None = None, event: str | None = None) -> bytes:
    """One server-sent event."""
    head = b""
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"
