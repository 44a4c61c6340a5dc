"""`stream_response` sends a `LastChunk` with the end of the response (one ASGI message), and a
client that leaves once it has the whole response does not cancel the source's settling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from crossway.server import asgi
from crossway.server.asgi import LastChunk, stream_response


async def test_last_chunk_closes_the_response() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def chunks() -> AsyncIterator[bytes]:
        yield b"one"
        yield LastChunk(b"two")

    await stream_response(receive, send, 200, [], chunks())
    assert [(m.get("body"), m.get("more_body", False)) for m in sent[1:]] == [
        (b"one", True),
        (b"two", False),
    ]
    assert type(sent[-1]["body"]) is bytes


async def test_without_last_chunk_an_empty_message_closes() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"one"

    await stream_response(lambda: asyncio.Event().wait(), send, 200, [], chunks())  # type: ignore[arg-type, return-value]
    assert [(m.get("body"), m.get("more_body", False)) for m in sent[1:]] == [
        (b"one", True),
        (b"", False),
    ]


async def test_leaving_after_the_end_does_not_cancel_settling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asgi, "WATCHER_GRACE_SECONDS", 0.0)  # the watcher starts at once
    watching = asyncio.Event()
    ended = asyncio.Event()
    left = asyncio.Event()
    settled: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        if not message.get("more_body", False) and message["type"] == "http.response.body":
            ended.set()

    async def receive() -> dict[str, Any]:
        watching.set()
        await ended.wait()  # the client leaves as soon as it has the whole response
        left.set()
        return {"type": "http.disconnect"}

    async def chunks() -> AsyncIterator[bytes]:
        await watching.wait()  # the disconnect watcher is running
        try:
            yield LastChunk(b"tail")
        finally:
            await left.wait()  # settling (usage, spend) while the client leaves
            await asyncio.sleep(0)
            settled.append("done")

    async with asyncio.timeout(10):
        await stream_response(receive, send, 200, [], chunks())
    assert settled == ["done"]
