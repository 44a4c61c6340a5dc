"""Server-sent events read from upstreams, size-capped: below the protocol packages so every
protocol (LLM providers, MCP, A2A) splits and bounds upstream streams the same way.

    SSEParser        bytes in, events out, incrementally: `feed` gives `(event name, data)`
                     pairs (the LLM hot path), `feed_events` gives `SSEEvent`s with the id and
                     retry too; an event that grows past `max_event_bytes` raises `EventTooLarge`
    iter_events      an async iterator of `SSEEvent`s over a stream of byte chunks
    EventSizeGuard   for streams forwarded untouched: counts the bytes since the last event
                     boundary (nothing is buffered) and raises `EventTooLarge` past the cap

An upstream that never ends an event would otherwise grow a buffer without bound. The grammar
is the WHATWG one (`text/event-stream`): `\\n`, `\\r\\n` and `\\r` line ends, `:` comments,
`field: value` with one optional space, multi-line `data`, `id` and `retry`, a leading BOM.
One leniency: a last event the stream ends without a blank line is still delivered by `close`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Final

from crossway.errors import UpstreamError

EVENT_TOO_LARGE: Final = "upstream_event_too_large"
"""`code` of the error raised when one upstream event outgrows the cap."""

_BOM: Final = b"\xef\xbb\xbf"


class EventTooLarge(UpstreamError):
    """One upstream stream event (or frame) is larger than the configured cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the upstream sent a stream event larger than {limit} bytes", code=EVENT_TOO_LARGE
        )


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event, decoded (UTF-8, invalid bytes replaced)."""

    event: str
    """The event's name (`message` when it has none)."""
    data: str
    """Its `data` lines joined with `\\n`."""
    id: str | None
    """The stream's last event id when the event was dispatched (None if none was set), the
    value to resume with (`Last-Event-ID`)."""
    retry: int | None
    """The reconnection time (ms) the stream last asked for, None if it never did."""


class SSEParser:
    """Splits a server-sent event stream into events, incrementally.

    Bytes may be split anywhere across `feed` calls. `feed` returns `(event name, data)` pairs
    as bytes (name `b"message"` when the event has none) and is the one to use on a hot path;
    `feed_events` returns `SSEEvent`s. Feed one stream through one of them, not both. Events
    without `data` are not dispatched, but their `id` and `retry` still count
    (`last_event_id`, `retry`). An event, finished or not, larger than `max_event_bytes`
    raises `EventTooLarge`; an unfinished one is never held past that size.
    """

    __slots__ = ("_cr", "_fresh", "_max", "_parts", "_size", "last_event_id", "retry")

    def __init__(self, max_event_bytes: int) -> None:
        self._max = max_event_bytes
        self._parts: list[bytes] = []  # the unfinished event, line ends made `\n`
        self._size = 0  # bytes in `_parts`
        self._cr = False  # the last chunk ended with a CR, whose LF may open the next one
        self._fresh = True  # nothing read yet (a BOM may come)
        #: the last `id` the stream set (the WHATWG "last event ID buffer")
        self.last_event_id = b""
        #: the last valid `retry` (milliseconds), None until the stream sends one
        self.retry: int | None = None

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The `(name, data)` pairs of the events `data` completes."""
        if self._fresh or self._parts or self._cr or b"\r" in data:
            data = self._prepare(data)
        events: list[tuple[bytes, bytes]] = []
        limit = self._max
        find = data.find
        start = 0
        # Line by line, with fast paths for what providers send: `data: X` and
        # `event: N\ndata: X`, each followed by a blank line.
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if data.startswith(b"\n", nl + 1):  # a one-line event
                if nl - start > limit:
                    raise self._too_large()
                if data.startswith(b"data: ", start):
                    events.append((b"message", data[start + 6 : nl]))
                elif nl > start:
                    pair = self._pair(data[start:nl])
                    if pair is not None:
                        events.append(pair)
                start = nl + 2
                continue
            end = find(b"\n\n", nl + 1)
            if end < 0:
                break
            if end - start > limit:
                raise self._too_large()
            if (
                data.startswith(b"event: ", start)
                and data.startswith(b"data: ", nl + 1)
                and find(b"\n", nl + 1, end) < 0
            ):
                events.append((data[start + 7 : nl], data[nl + 7 : end]))
            else:
                pair = self._pair(data[start:end])
                if pair is not None:
                    events.append(pair)
            start = end + 2
        if start < len(data):
            self._hold(data[start:] if start else data)
        return events

    def close(self) -> list[tuple[bytes, bytes]]:
        """The stream ended: the last event, if it was not ended by a blank line."""
        events = self.feed(b"\n\n")
        self._reset()
        return events

    def feed_events(self, data: bytes) -> list[SSEEvent]:
        """The `SSEEvent`s `data` completes (with their id and retry)."""
        if self._fresh or self._parts or self._cr or b"\r" in data:
            data = self._prepare(data)
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = data.find(b"\n\n", start)
            if end < 0:
                break
            if end - start > self._max:
                raise self._too_large()
            event = self._event(data[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
        if start < len(data):
            self._hold(data[start:] if start else data)
        return events

    def close_events(self) -> list[SSEEvent]:
        """`close` for `feed_events`."""
        events = self.feed_events(b"\n\n")
        self._reset()
        return events

    # -- framing ------------------------------------------------------------------------------

    def _prepare(self, data: bytes) -> bytes:
        """`data` with line ends made `\\n` and the held unfinished event in front; empty
        when it completes no event (it is then held)."""
        if self._fresh:
            head = b"".join((*self._parts, data)) if self._parts else data
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._parts, self._size = [head], len(head)  # maybe a BOM cut short
                return b""
            self._fresh = False
            self._parts, self._size = [], 0
            data = head[len(_BOM) :] if head.startswith(_BOM) else head
        if self._cr:
            self._cr = False
            if data.startswith(b"\n"):
                data = data[1:]  # the LF of a CRLF split across chunks
        if b"\r" in data:
            self._cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        parts = self._parts
        if parts:
            if b"\n\n" not in data and not (data.startswith(b"\n") and parts[-1].endswith(b"\n")):
                size = self._size + len(data)
                if size > self._max and _over(size, self._max, data):
                    raise self._too_large()
                if data:
                    parts.append(data)
                    self._size = size
                return b""
            parts.append(data)
            data = b"".join(parts)
            self._parts, self._size = [], 0
        return data

    def _hold(self, rest: bytes) -> None:
        if len(rest) > self._max and _over(len(rest), self._max, rest):
            raise self._too_large()
        self._parts, self._size = [rest], len(rest)

    def _too_large(self) -> EventTooLarge:
        self._reset()
        return EventTooLarge(self._max)

    def _reset(self) -> None:
        self._parts, self._size, self._cr = [], 0, False

    # -- fields -------------------------------------------------------------------------------

    def _fields(self, raw: bytes) -> tuple[bytes, bytes | None]:
        """The name and data (None without `data` lines) of one event's lines; `id` and
        `retry` update the stream's state."""
        name = b""
        data: list[bytes] = []
        for line in raw.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value
            elif field == b"id":
                if b"\0" not in value:
                    self.last_event_id = value
            elif field == b"retry" and value.isdigit():
                self.retry = int(value)
        return name or b"message", b"\n".join(data) if data else None

    def _pair(self, raw: bytes) -> tuple[bytes, bytes] | None:
        name, data = self._fields(raw)
        return None if data is None else (name, data)

    def _event(self, raw: bytes) -> SSEEvent | None:
        name, data = self._fields(raw)
        if data is None:
            return None
        return SSEEvent(
            name.decode("utf-8", "replace"),
            data.decode("utf-8", "replace"),
            self.last_event_id.decode("utf-8", "replace") or None,
            self.retry,
        )


def _over(size: int, limit: int, last: bytes) -> bool:
    """Whether an unfinished event of `size` bytes, the last of them `last`, is past `limit`
    (the line end that may be the first half of its blank line does not count)."""
    return size > limit + 1 or not last.endswith(b"\n")


async def iter_events(
    chunks: AsyncIterator[bytes], max_event_bytes: int
) -> AsyncGenerator[SSEEvent, None]:
    """The events of a stream of byte chunks; `EventTooLarge` if one outgrows the cap."""
    parser = SSEParser(max_event_bytes)
    async for chunk in chunks:
        for event in parser.feed_events(chunk):
            yield event
    for event in parser.close_events():
        yield event


class EventSizeGuard:
    """Bounds the events of a stream that is forwarded as it arrives, without buffering it.

    `feed` looks only at where each network chunk's last blank line is (`\\n\\n`, or the end of
    `\\r\\n\\r\\n`; a boundary split across two chunks counts too), so a well-formed stream
    costs one `rfind` that stops near the chunk's end. `mid_event` says the client was sent
    part of an event: an error event must then be preceded by a blank line to be read.
    A caller on a hot path may skip `feed` for a chunk that ends with `\\n\\n` and set
    `since = 0` itself (what `feed` would do).
    """

    __slots__ = ("_max", "_newline", "since")

    def __init__(self, max_event_bytes: int) -> None:
        self._max = max_event_bytes
        self._newline = False  # the last chunk ended with a line end
        #: bytes since the last event boundary
        self.since = 0

    def feed(self, data: bytes) -> None:
        cut = data.rfind(b"\n\n")
        if cut < 0:
            cut = data.rfind(b"\n\r\n")
            if cut >= 0:
                cut += 1
        if cut >= 0:
            since = len(data) - cut - 2
        elif self._newline and data[:1] in (b"\n", b"\r"):
            since = len(data)
        else:
            since = self.since + len(data)
        self.since = since
        self._newline = data.endswith(b"\n")
        if since > self._max:
            raise EventTooLarge(self._max)

    @property
    def mid_event(self) -> bool:
        return self.since > 0
