"""A slow OpenAI-compatible upstream for the scale bench: streams that stay open and idle.

    .venv/bin/python -m bench.paced_upstream PORT [--interval 10] [--chunks 0]

POST .../chat/completions with `"stream": true` answers an SSE stream (chunked): the role chunk
at once, then one content chunk every `--interval` seconds (each stream starts at its own random
phase, so the chunks of many streams spread over the interval instead of arriving together),
until the client leaves — or, with `--chunks N`, N content chunks then the finish, usage and
`[DONE]`. Without `stream` it answers the benchmark's JSON completion at once (a latency probe
while the streams are held). GET /healthz answers `ok`; GET /stats answers
`{"open": streams open now, "opened": streams ever opened, "chunks": content chunks sent}`,
so the bench can see every stream reached the upstream and that closed clients closed theirs.

Raw asyncio streams on uvloop, HTTP/1.1 keep-alive: a few KB per open stream and almost no CPU
between chunks, so it can hold ten thousand streams next to the gateway on a two-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
from dataclasses import dataclass
from typing import Final

import orjson

from bench import fixtures

MAX_HEADER_BYTES: Final = 64 * 1024
DEFAULT_INTERVAL_S: Final = 10.0
READ_LIMIT: Final = 256 * 1024
STREAM_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk carrying `data` (empty: the last chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    """One `chat.completion.chunk` SSE event."""
    chunk = {
        "id": fixtures.COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": fixtures.CREATED,
        "model": fixtures.MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


ROLE_EVENT: Final = chunked(sse_chunk({"role": "assistant", "content": ""}))
TOKEN_EVENT: Final = chunked(sse_chunk({"content": " tick"}))
END_EVENTS: Final = (
    chunked(sse_chunk({}, "stop"))
    + chunked(
        b"data: "
        + orjson.dumps(
            {
                "id": fixtures.COMPLETION_ID,
                "object": "chat.completion.chunk",
                "created": fixtures.CREATED,
                "model": fixtures.MODEL,
                "choices": [],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
            }
        )
        + b"\n\n"
    )
    + chunked(b"data: [DONE]\n\n")
    + chunked(b"")
)


def json_answer(body: bytes, status: str = "200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status.encode(),
        len(body),
        body,
    )


@dataclass
class Stats:
    open: int = 0
    opened: int = 0
    chunks: int = 0


class PacedUpstream:
    """The server's state: its pacing and what it counted."""

    def __init__(self, interval_s: float, chunks: int) -> None:
        self.interval_s = interval_s
        self.chunks = chunks
        self.stats = Stats()
        self.completion = json_answer(fixtures.openai_completion())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                    return
                request_line, _, rest = head.partition(b"\r\n")
                method, _, target = request_line.partition(b" ")
                path = target.partition(b" ")[0]
                length = 0
                close = False
                for line in rest.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value.strip() or b"0")
                    elif name == b"connection":
                        close = value.strip().lower() == b"close"
                body = await reader.readexactly(length) if length else b""
                if method == b"GET" and path == b"/healthz":
                    writer.write(json_answer(b'"ok"'))
                elif method == b"GET" and path == b"/stats":
                    writer.write(json_answer(orjson.dumps(self.stats.__dict__)))
                elif method == b"POST" and path.endswith(b"/chat/completions"):
                    if _wants_stream(body):
                        await self.stream(reader, writer)
                        if self.chunks <= 0 or close:
                            return  # a stream without end only stops when its client leaves
                        continue
                    writer.write(self.completion)
                else:
                    writer.write(json_answer(b'{"error":{"message":"not found"}}', "404 Not Found"))
                await writer.drain()
                if close:
                    return
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One paced stream: the role chunk now, a content chunk per interval (the first after a
        random part of it), until the client closes or `chunks` were sent."""
        stats = self.stats
        stats.open += 1
        stats.opened += 1
        try:
            writer.write(STREAM_HEAD + ROLE_EVENT)
            await writer.drain()
            wait = random.uniform(0, self.interval_s)
            sent = 0
            while self.chunks <= 0 or sent < self.chunks:
                # Reading doubles as the pause: it returns early only when the client left.
                with contextlib.suppress(TimeoutError):
                    if not await asyncio.wait_for(reader.read(1), wait):
                        return
                wait = self.interval_s
                writer.write(TOKEN_EVENT)
                await writer.drain()
                sent += 1
                stats.chunks += 1
            writer.write(END_EVENTS)
            await writer.drain()
        finally:
            stats.open -= 1


def _wants_stream(body: bytes) -> bool:
    try:
        return bool(orjson.loads(body).get("stream")) if body else False
    except (orjson.JSONDecodeError, AttributeError):
        return False


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def serve(port: int, interval_s: float, chunks: int) -> None:
    upstream = PacedUpstream(interval_s, chunks)
    server = await asyncio.start_server(
        upstream.handle, "127.0.0.1", port, backlog=4096, limit=READ_LIMIT
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S)
    parser.add_argument("--chunks", type=int, default=0, help="0: stream until the client leaves")
    args = parser.parse_args()
    raise_fd_limit()
    import uvloop

    uvloop.run(serve(args.port, args.interval, args.chunks))


if __name__ == "__main__":
    main()
