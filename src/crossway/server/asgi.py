"""Small raw-ASGI helpers for the hot path: read a bounded body, send a whole response,
stream a response while watching for the client to leave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Final

from crossway.errors import BadRequest, PayloadTooLarge
from crossway.types import Receive, Scope, Send

JSON_HEADERS: Final = [(b"content-type", b"application/json")]
SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

WATCHER_GRACE_SECONDS: Final = 0.25
"""How long a stream runs before a task starts watching for the client to leave."""

# Headers that describe one connection, not the message: never forwarded (RFC 9110 §7.6.1).
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    }
)


class ClientDisconnected(Exception):
    """The downstream client went away; nothing more can be sent."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """Read the whole request body, refusing more than `limit` bytes with 413."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                if int(value) > limit:
                    raise PayloadTooLarge(f"request body larger than {limit} bytes")
            except ValueError:
                raise BadRequest("invalid content-length header") from None
            break
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        if len(body) > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def header(scope: Scope, name: bytes) -> bytes | None:
    """First value of a request header (`name` lower-case)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]] = JSON_HEADERS,
) -> None:
    """Send a complete response in two ASGI messages."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def stream_response(
    receive: Receive,
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    chunks: AsyncIterator[bytes],
) -> None:
    """Send `chunks` as they come, with back-pressure from `send`.

    The chunks are pumped in the caller's task. A stream still running after
    `WATCHER_GRACE_SECONDS` gets one watcher task that waits for `http.disconnect` and, when the
    client leaves, cancels the pump, which closes the upstream response and so cancels the upstream
    request even while the upstream is silent. (No task at all for short streams: streaming is a
    hot path too.)
    """
    await send({"type": "http.response.start", "status": status, "headers": headers})
    task = asyncio.current_task()
    assert task is not None
    state = {"done": False, "left": False}
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not state["done"]:
                    state["left"] = True
                    task.cancel()
                return

    def start_watcher() -> None:
        nonlocal watcher
        if not state["done"]:
            watcher = loop.create_task(watch())

    # Most streams that end quickly never need the watcher: a client that left is noticed by the
    # next `send`. Streams that go on (LLM token streams) get it after a short grace period.
    loop = asyncio.get_running_loop()
    timer = loop.call_later(WATCHER_GRACE_SECONDS, start_watcher)
    try:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except asyncio.CancelledError:
        if state["left"]:
            task.uncancel()
            raise ClientDisconnected from None
        raise
    finally:
        state["done"] = True
        timer.cancel()
        if watcher is not None and not watcher.done():
            watcher.cancel()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                pass
