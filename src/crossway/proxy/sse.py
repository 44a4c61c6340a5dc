"""Server-sent events read from upstreams, size-capped: below the protocol packages so every
protocol splits and bounds upstream streams the same way.

    SSEParser        splits a stream into `(event name, data)` pairs, incrementally; an event
                     that grows past `max_event_bytes` raises `EventTooLarge`
    EventSizeGuard   for streams forwarded untouched: counts the bytes since the last event
                     boundary (nothing is buffered) and raises `EventTooLarge` past the cap

An upstream that never ends an event would otherwise grow a buffer without bound.
"""

from __future__ import annotations

from typing import Final

from crossway.errors import UpstreamError

EVENT_TOO_LARGE: Final = "upstream_event_too_large"
"""`code` of the error raised when one upstream event outgrows the cap."""


class EventTooLarge(UpstreamError):
    """One upstream stream event (or frame) is larger than the configured cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the upstream sent a stream event larger than {limit} bytes", code=EVENT_TOO_LARGE
        )


class SSEParser:
    """Splits a server-sent event stream into `(event name, data)` pairs, incrementally.

    Frames may be split anywhere across `feed` calls; both `\\n` and `\\r\\n` line ends work.
    Only the `event:` and `data:` fields are read (`id:`, `retry:` and comments are skipped);
    names are returned as bytes (`b"message"` when the event has none). An unfinished event
    longer than `max_event_bytes` raises `EventTooLarge`.
    """

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_event_bytes: int) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                # A CR at the very end may be the first half of a CRLF: wait for the next byte.
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[tuple[bytes, bytes]] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            event = _parse_sse_event(buffer[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
        rest = buffer[start:] + held if start or held else buffer
        if len(rest) > self._max:
            self._buffer = b""
            raise EventTooLarge(self._max)
        self._buffer = rest
        return events

    def close(self) -> list[tuple[bytes, bytes]]:
        rest, self._buffer = self._buffer.replace(b"\r\n", b"\n").strip(b"\r\n"), b""
        event = _parse_sse_event(rest) if rest else None
        return [event] if event is not None else []


def _parse_sse_event(raw: bytes) -> tuple[bytes, bytes] | None:
    # Fast paths: `data: X` and `event: N\ndata: X` (all that providers send in practice).
    if raw.startswith(b"data: ") and b"\n" not in raw:
        return b"message", raw[6:]
    if raw.startswith(b"event: "):
        nl = raw.find(b"\n")
        if nl > 0 and raw.startswith(b"data: ", nl + 1) and raw.find(b"\n", nl + 1) < 0:
            return raw[7:nl].strip(), raw[nl + 7 :]
    name = b"message"
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    if not data:
        return None
    return name, b"\n".join(data)


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
