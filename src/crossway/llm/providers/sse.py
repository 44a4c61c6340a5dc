"""Server-sent events as upstream providers send them (Anthropic names its events; Gemini sends
bare `data:` lines framed with CRLF), split incrementally from the bytes as they arrive."""

from __future__ import annotations


class SSEParser:
    """Splits a server-sent event stream into `(event name, data)` pairs, incrementally.

    Frames may be split anywhere across `feed` calls; both `\\n` and `\\r\\n` line ends work.
    Only the `event:` and `data:` fields are read (`id:`, `retry:` and comments are skipped);
    names are returned as bytes (`b"message"` when the event has none).
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

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
        self._buffer = buffer[start:] + held if start or held else buffer
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
