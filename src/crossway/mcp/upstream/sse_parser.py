"""Incremental parsing of a `text/event-stream` body into events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from crossway.errors import UpstreamError


@dataclass(slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None


async def iter_events(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[SseEvent]:
    """Events from a stream of byte chunks; `UpstreamError` if one grows past `max_bytes`."""
    buffer = b""
    event = "message"
    data: list[str] = []
    event_id: str | None = None
    size = 0
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > max_bytes:
            raise UpstreamError("server-sent event too large")
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                break
            raw, buffer = buffer[:newline], buffer[newline + 1 :]
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if data:
                    yield SseEvent(event, "\n".join(data), event_id)
                event, data, size = "message", [], 0
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                size += len(value)
                if size > max_bytes:
                    raise UpstreamError("server-sent event too large")
                data.append(value)
            elif field == "event":
                event = value
            elif field == "id":
                event_id = value
    if data:
        yield SseEvent(event, "\n".join(data), event_id)
