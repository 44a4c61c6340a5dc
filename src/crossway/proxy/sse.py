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


@dataclass(slots=True)
class SSEEvent:
    """One event, as `SSEParser.feed_events` gives it."""

    event: str
    """The event's name (`message` when it has none), decoded as UTF-8."""
    data: bytes
    """Its `data` lines joined with `\\n` (JSON parsers take the bytes as they are)."""
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
    raises `EventTooLarge`; an unfinished one is never held past that size. The work is
    linear in the stream however it is cut: a held event is appended to, never re-copied,
    and only a chunk's new bytes are searched for its end.
    """

    __slots__ = ("_cr", "_fresh", "_held", "_id_text", "_max", "_slow", "last_event_id", "retry")

    def __init__(self, max_event_bytes: int) -> None:
        self._max = max_event_bytes
        self._held = bytearray()  # the unfinished event, line ends made `\n`
        self._fresh = True  # nothing read yet (a BOM may come)
        self._cr = False  # the last chunk ended with a CR, whose LF may open the next one
        self._slow = True  # `_fresh or _cr`: the next chunk's first bytes need a look
        #: the last `id` the stream set (the WHATWG "last event ID buffer")
        self.last_event_id = b""
        self._id_text: str | None = None
        #: the last valid `retry` (milliseconds), None until the stream sends one
        self.retry: int | None = None

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The `(name, data)` pairs of the events `data` completes."""
        if self._slow or b"\r" in data:
            data = self._normalize(data)
        limit = self._max
        held = self._held
        if held:  # (what `_complete` does, inlined: this is the LLM streaming hot path)
            mark = len(held) - 1  # an event may end on the last held byte and the first new
            held += data
            if held.find(b"\n\n", mark) < 0:
                if len(held) > limit and _over(len(held), limit, held):
                    raise self._too_large()
                return []
            data = bytes(held)
            held.clear()
        events: list[tuple[bytes, bytes]] = []
        find = data.find
        at = data.startswith
        start = 0
        # Line by line, with fast paths for what providers send: `data: X` and
        # `event: N\ndata: X`, each followed by a blank line.
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if at(b"\n", nl + 1):  # one line, then the blank line
                if nl - start > limit:
                    raise self._too_large()
                if at(b"data: ", start):
                    events.append((b"message", data[start + 6 : nl]))
                elif nl > start:
                    pair = self._pair(data[start:nl])
                    if pair is not None:
                        events.append(pair)
                start = nl + 2
                continue
            second = find(b"\n", nl + 1)
            if second < 0:
                break
            if at(b"\n", second + 1):  # two lines, then the blank line
                if second - start > limit:
                    raise self._too_large()
                if at(b"event: ", start) and at(b"data: ", nl + 1):
                    events.append((data[start + 7 : nl] or b"message", data[nl + 7 : second]))
                else:
                    pair = self._pair(data[start:second])
                    if pair is not None:
                        events.append(pair)
                start = second + 2
                continue
            end = find(b"\n\n", second + 1)
            if end < 0:
                break
            if end - start > limit:
                raise self._too_large()
            pair = self._pair(data[start:end])
            if pair is not None:
                events.append(pair)
            start = end + 2
        if start < len(data):  # an unfinished event: hold it (`held` is empty here)
            rest = data[start:] if start else data
            if len(rest) > limit and _over(len(rest), limit, rest):
                raise self._too_large()
            held += rest
        return events

    def close(self) -> list[tuple[bytes, bytes]]:
        """The stream ended: the last event, if it was not ended by a blank line."""
        events = self.feed(b"\n\n")
        self._reset()
        return events

    def feed_events(self, data: bytes) -> list[SSEEvent]:
        """The `SSEEvent`s `data` completes (with the stream's id and retry)."""
        data = self._complete(data)
        events: list[SSEEvent] = []
        limit = self._max
        find = data.find
        start = 0
        while True:
            end = find(b"\n\n", start)
            if end < 0:
                break
            if end - start > limit:
                raise self._too_large()
            if data.startswith(b"data: ", start) and find(b"\n", start, end) < 0:
                events.append(SSEEvent("message", data[start + 6 : end], self._id_text, self.retry))
            else:
                event = self._event(data[start:end])
                if event is not None:
                    events.append(event)
            start = end + 2
        if start < len(data):
            self._hold(data, start)
        return events

    def close_events(self) -> list[SSEEvent]:
        """`close` for `feed_events`."""
        events = self.feed_events(b"\n\n")
        self._reset()
        return events

    # -- framing ------------------------------------------------------------------------------

    def _normalize(self, data: bytes) -> bytes:
        """`data` with its line ends made `\\n` (a CRLF split across chunks, or a BOM at the
        start, handled); empty while a BOM may still be arriving (it is then held)."""
        if self._fresh:
            held = self._held
            if held:  # the start of a BOM, cut short
                data = bytes(held) + data
                held.clear()
            if len(data) < len(_BOM) and _BOM.startswith(data):
                held += data
                return b""
            self._fresh = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        if self._cr:
            self._cr = False
            if data.startswith(b"\n"):
                data = data[1:]  # the LF of a CRLF split across chunks
        self._slow = False
        if b"\r" in data:
            if data.endswith(b"\r"):
                self._cr = self._slow = True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def _complete(self, data: bytes) -> bytes:
        """`_normalize`d `data` after the held unfinished event; empty when it completes no
        event (it is then held)."""
        if self._slow or b"\r" in data:
            data = self._normalize(data)
        held = self._held
        if not held:
            return data
        mark = len(held) - 1  # an event may end on the last held byte and the first new one
        held += data
        if held.find(b"\n\n", mark) < 0:
            if len(held) > self._max and _over(len(held), self._max, held):
                raise self._too_large()
            return b""
        data = bytes(held)
        held.clear()
        return data

    def _hold(self, data: bytes, start: int) -> None:
        size = len(data) - start
        if size > self._max and _over(size, self._max, data):
            raise self._too_large()
        self._held += data[start:] if start else data

    def _too_large(self) -> EventTooLarge:
        self._reset()
        return EventTooLarge(self._max)

    def _reset(self) -> None:
        self._held.clear()
        self._cr = self._slow = False

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
                    self._id_text = value.decode("utf-8", "replace") or None
            elif field == b"retry" and value.isdigit():
                self.retry = int(value)
        return name or b"message", b"\n".join(data) if data else None

    def _pair(self, raw: bytes) -> tuple[bytes, bytes] | None:
        name, data = self._fields(raw)
        return None if data is None else (name, data)

    def _event(self, raw: bytes) -> SSEEvent | None:
        if raw.startswith(b"data: ") and b"\n" not in raw:
            return SSEEvent("message", raw[6:], self._id_text, self.retry)
        if raw.startswith(b"event: message\ndata: ") and raw.find(b"\n", 15) < 0:
            return SSEEvent("message", raw[21:], self._id_text, self.retry)
        name, data = self._fields(raw)
        if data is None:
            return None
        text = "message" if name == b"message" else name.decode("utf-8", "replace")
        return SSEEvent(text, data, self._id_text, self.retry)


def _over(size: int, limit: int, last: bytes | bytearray) -> bool:
    """Whether an unfinished event of `size` bytes, ending with `last`, is past `limit` (a
    line end that may be the first half of its blank line does not count)."""
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
