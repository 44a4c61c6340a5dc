"""Small raw-ASGI helpers for the hot path: read a bounded body, send a whole response,
stream a response while watching for the client to leave."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from typing import Final

from crossway.errors import BadRequest, PayloadTooLarge
from crossway.types import Message, Receive, Scope, Send

JSON_HEADERS: Final = [(b"content-type", b"application/json")]
SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._-]{1,128}")
"""A client's `x-request-id` is kept only when it matches this."""

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


def connection_options(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names (lower-case) that `Connection` headers declare hop-by-hop; they are
    stripped like `HOP_BY_HOP` (RFC 9110 §7.6.1)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    names.discard(b"")
    return frozenset(names)


class ClientDisconnected(Exception):
    """The downstream client went away; nothing more can be sent."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """Read the whole request body, refusing more than `limit` bytes with 413: the one body
    reader of every protocol (each renders the refusal in its own format).

    Framing the gateway cannot read one unambiguous way is the client's error (400), never a
    500, and no byte of such a body is handed on: a transfer coding other than `chunked`,
    `Transfer-Encoding` together with `Content-Length`, an unparsable `Content-Length`, a body
    that ends early (a client that leaves mid-body, or a malformed chunked body, which the
    server reports as a disconnect), or any error from `receive()` while reading. Every
    refusal carries `Connection: close`: the rest of the body is never read, so the connection
    cannot carry another request (a client reusing it would see it drop).
    """
    length: bytes | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            if length is not None and value != length:
                raise _bad_framing("conflicting content-length headers")
            length = value
        elif name == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                raise _bad_framing("unsupported transfer-encoding (only chunked is accepted)")
            chunked = True
    if length is not None:
        if chunked:
            raise _bad_framing("both transfer-encoding and content-length")
        if not length.isdigit():
            raise _bad_framing("invalid content-length header")
        if int(length) > limit:
            raise _too_large(limit)
    try:  # the first message inline: one coroutine less on the hot path
        message = await receive()
    except Exception as exc:
        raise _unreadable() from exc
    if message["type"] != "http.request":
        raise _cut_short()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) or (
        length is not None and len(body) == int(length)
    ):  # (granian sends the whole body, then an empty last message: not waited for)
        if len(body) > limit:
            raise _too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await _receive_body(receive)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def _receive_body(receive: Receive) -> Message:
    """One `http.request` message; a disconnect or a failing `receive()` mid-body is a 400."""
    try:
        message = await receive()
    except Exception as exc:
        raise _unreadable() from exc
    if message["type"] != "http.request":
        raise _cut_short()
    return message


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body larger than {limit} bytes", headers={"connection": "close"}
    )


def _bad_framing(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_framing", headers={"connection": "close"})


def _unreadable() -> BadRequest:
    return _bad_framing("the request body could not be read")


def _cut_short() -> BadRequest:
    return _bad_framing("the request body ended before it was complete or was malformed")


def client_request_id(scope: Scope) -> str | None:
    """The client's `x-request-id` when it is well-formed (1-128 of `[A-Za-z0-9._-]`), else
    None (the gateway then makes one; a malformed id is never echoed)."""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            if _REQUEST_ID.fullmatch(value) is not None:
                return value.decode("ascii")  # type: ignore[no-any-return]
            return None
    return None


def header(scope: Scope, name: bytes) -> bytes | None:
    """First value of a request header (`name` lower-case): the one lookup of an ASGI scope's
    headers for every protocol (`header_text` for the value as text)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def header_text(scope: Scope, name: bytes) -> str | None:
    """`header` decoded as latin-1 (what HTTP header bytes map to one-to-one)."""
    value = header(scope, name)
    return None if value is None else bytes(value).decode("latin-1")


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


class LastChunk(bytes):
    """A stream's last bytes, known to be last when yielded: `stream_response` sends them with
    the end of the response (`more_body: False`), one ASGI message instead of two."""

    __slots__ = ()


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
    hot path too.) A `LastChunk` ends the response with its bytes; the source may not yield
    after it.
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
    closed = False
    try:
        async for chunk in chunks:
            if closed:
                raise RuntimeError("a stream yielded a chunk after its LastChunk")
            if type(chunk) is LastChunk:
                # One message for the last bytes and the end of the response. The source may
                # still settle (usage, policies) before it stops: the client leaving now must
                # not cancel that.
                state["done"] = closed = True
                await send({"type": "http.response.body", "body": bytes(chunk)})
                continue
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not closed:
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
