"""What every mock provider shares: scripted replies, recorded requests, injected faults, SSE
framing and streamed answers, and an aiohttp server on a free loopback port.

A test scripts the next replies (`mock.script(Reply(text="hi"), Reply(status=429, ...))`); when
the script runs out, `mock.default` answers. Every request the mock received is in
`mock.requests`, so tests assert what was sent upstream. A handler answers a reply with
`injected_fault` first (delay, reset, or the provider's error for `reply.status`), then either
`json_response` or `send_stream`.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from aiohttp import web


@dataclass
class ToolCall:
    """A tool call the mock model makes."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None


@dataclass
class Reply:
    """What the mock answers to one request (content, usage, or an injected fault)."""

    text: str = "Hello from the mock!"
    tool_calls: list[ToolCall] = field(default_factory=list)
    thinking: str | None = None
    input_tokens: int = 12
    output_tokens: int = 7
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    stop: str | None = None
    """Provider-native stop reason; default end of turn (or tool use when tools are called)."""
    pieces: int = 3
    """A streamed text (and tool arguments) is sent in this many deltas."""
    # Faults
    status: int = 200
    """Answer with this HTTP error status (in the provider's error shape)."""
    error_type: str | None = None
    error_message: str | None = None
    retry_after: str | None = None
    reset: bool = False
    """Drop the connection without answering."""
    delay: float = 0.0
    """Seconds to wait before the first byte."""
    cut_after: int | None = None
    """Streams only: drop the connection after this many events."""
    stream_error: bool = False
    """Streams only: send the provider's in-stream error event after the first content."""

    @property
    def error_text(self) -> str:
        """The message of the injected error (a stock one when the script set none)."""
        return self.error_message or "mock error"

    @property
    def retry_headers(self) -> dict[str, str] | None:
        """The `retry-after` header the injected error carries, if the script set one."""
        return {"retry-after": self.retry_after} if self.retry_after else None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


Handler = Callable[["MockServer", web.Request, RecordedRequest], Awaitable[web.StreamResponse]]


class MockServer:
    """An aiohttp app serving one provider's API on 127.0.0.1."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def next_reply(self) -> Reply:
        return self.replies.popleft() if self.replies else self.default

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = RecordedRequest(
            request.method,
            request.raw_path.split("?", 1)[0],
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        self.requests.append(recorded)
        return await self.handler(self, request, recorded)


_Server = TypeVar("_Server", bound=MockServer)


@asynccontextmanager
async def running(server: _Server) -> AsyncIterator[_Server]:
    """`server` started, and closed on the way out."""
    await server.start()
    try:
        yield server
    finally:
        await server.close()


# --- fault helpers ----------------------------------------------------------------------------


async def before_first_byte(reply: Reply, request: web.Request) -> bool:
    """Apply the delay and reset faults; True when the connection was dropped."""
    if reply.delay:
        await asyncio.sleep(reply.delay)
    if reply.reset:
        drop(request)
        return True
    return False


async def injected_fault(
    request: web.Request, reply: Reply, render_error: Callable[[Reply], web.StreamResponse]
) -> web.StreamResponse | None:
    """The answer an injected fault makes: after the reply's delay, a dropped connection, or
    `render_error(reply)` (the provider's error shape) for a non-200 `reply.status`. None when
    the reply is to be answered normally."""
    if await before_first_byte(reply, request):
        return web.Response()
    if reply.status != 200:
        return render_error(reply)
    return None


def drop(request: web.Request) -> None:
    """Close the client connection at once (the client sees a reset / disconnect)."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # RST instead of FIN, like a crashed upstream
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            except OSError:
                pass
        transport.abort()


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(data),
        content_type="application/json",
        headers=headers or {},
    )


def sse_data(data: Any, *, line_end: bytes = b"\n") -> bytes:
    """A server-sent event of one `data:` line (`data` as JSON); Gemini ends lines with CRLF."""
    return b"data: " + orjson.dumps(data) + line_end + line_end


def sse_event(name: str, data: Any) -> bytes:
    """A named server-sent event: `event: name`, then `data` as JSON."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def split_text(text: str, pieces: int) -> list[str]:
    """`text` in about `pieces` consecutive fragments (at least one)."""
    if not text:
        return []
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]


class StreamWriter:
    """Writes a streamed answer event by event, cutting the connection when the reply says so."""

    def __init__(self, request: web.Request, response: web.StreamResponse, reply: Reply) -> None:
        self.request = request
        self.response = response
        self.reply = reply
        self.sent = 0
        self.cut = False

    async def write(self, data: bytes) -> bool:
        """Send one event; False once the connection was cut (stop writing)."""
        if self.cut:
            return False
        if self.reply.cut_after is not None and self.sent >= self.reply.cut_after:
            self.cut = True
            drop(self.request)
            return False
        await self.response.write(data)
        self.sent += 1
        return True


async def send_stream(
    request: web.Request, reply: Reply, events: Iterable[bytes], headers: dict[str, str]
) -> web.StreamResponse:
    """Answer 200 with `events` streamed one write each, cut where `reply.cut_after` says."""
    response = web.StreamResponse(status=200, headers=headers)
    await response.prepare(request)
    writer = StreamWriter(request, response, reply)
    for event in events:
        if not await writer.write(event):
            return response
    await response.write_eof()
    return response
