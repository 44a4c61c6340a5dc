"""AWS event-stream framing (`application/vnd.amazon.eventstream`), decoded incrementally.

One message on the wire:

    total length   u32 (big endian, whole message including both CRCs)
    headers length u32
    prelude CRC    u32 = CRC32 of the 8 bytes above
    headers        name length u8, name, value type u8, value (typed, see `_HEADER_SIZES`)
    payload        total - headers - 16 bytes
    message CRC    u32 = CRC32 of everything before it

Bedrock's ConverseStream sends one message per event; `:message-type` is `event`, `exception`
or `error`, `:event-type` / `:exception-type` name it and the payload is JSON.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from crossway.config.llm import DEFAULT_MAX_EVENT_BYTES
from crossway.errors import UpstreamError
from crossway.proxy.sse import EventTooLarge

PRELUDE_BYTES: Final = 12

_PRELUDE: Final = struct.Struct(">III")
_U32: Final = struct.Struct(">I")
_U16: Final = struct.Struct(">H")  # used by encode_message

# Fixed sizes of header value types (bool true/false, byte, short, int, long, timestamp, uuid).
_HEADER_SIZES: Final = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class EventStreamError(UpstreamError):
    """The upstream's event stream is corrupt (bad CRC, impossible lengths)."""


Headers = dict[str, str | int | bool | bytes]


class EventMessage:
    """One decoded event-stream message: its headers, kind and JSON payload bytes."""

    __slots__ = ("event_type", "headers", "message_type", "payload")

    def __init__(self, headers: Headers, payload: bytes) -> None:
        self.headers = headers
        self.payload = payload
        self.message_type, self.event_type = _kinds(headers)


def _kinds(headers: Headers) -> tuple[str, str]:
    """`:message-type` (`event`, `exception` or `error`) and the event's name
    (`contentBlockDelta`...) or the exception's (`throttlingException`...)."""
    return (
        str(headers.get(":message-type", "event")),
        str(headers.get(":event-type") or headers.get(":exception-type") or ""),
    )


MAX_CACHED_HEADERS: Final = 256
"""Distinct header blocks whose decoding is kept (a stream repeats one per event type)."""

Known = tuple[Headers, str, str]
"""A message's headers, message type and event type (see `EventMessage`)."""

_header_cache: dict[bytes, Known] = {}


class EventStreamDecoder:
    """Splits a byte stream into messages, checking both CRCs of every message.

    `feed` gives `EventMessage`s; `feed_raw`, on the hot path, `((headers, message type,
    event type), payload)` pairs whose first part is shared by every message with the same
    header bytes (do not change it). A message whose prelude announces more than
    `max_message_bytes` raises `EventTooLarge` before any of it is buffered (a corrupt or
    hostile stream)."""

    __slots__ = ("_max", "_pending")

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._pending = b""
        self._max = max_message_bytes

    def feed(self, data: bytes) -> list[EventMessage]:
        return [EventMessage(headers, payload) for (headers, _, _), payload in self.feed_raw(data)]

    def feed_raw(self, data: bytes) -> list[tuple[Known, bytes]]:
        buffer = self._pending + data if self._pending else data
        out: list[tuple[Known, bytes]] = []
        append = out.append
        start = 0
        size = len(buffer)
        crc32 = zlib.crc32
        unpack_prelude = _PRELUDE.unpack_from
        unpack_u32 = _U32.unpack_from
        cached = _header_cache.get
        while size - start >= PRELUDE_BYTES:
            total, headers_len, prelude_crc = unpack_prelude(buffer, start)
            if crc32(buffer[start : start + 8]) != prelude_crc:
                raise EventStreamError("corrupt event stream from upstream (prelude CRC mismatch)")
            if total > self._max:
                raise EventTooLarge(self._max)
            if total < PRELUDE_BYTES + 4 + headers_len:
                raise EventStreamError(
                    f"corrupt event stream from upstream (message length {total})"
                )
            end = start + total
            if end > size:
                break
            if crc32(buffer[start : end - 4]) != unpack_u32(buffer, end - 4)[0]:
                raise EventStreamError("corrupt event stream from upstream (message CRC mismatch)")
            body = start + PRELUDE_BYTES + headers_len
            raw_headers = buffer[start + PRELUDE_BYTES : body]
            known = cached(raw_headers)
            if known is None:
                headers = _decode_headers(raw_headers, 0, headers_len)
                known = (headers, *_kinds(headers))
                if len(_header_cache) >= MAX_CACHED_HEADERS:
                    _header_cache.clear()
                _header_cache[raw_headers] = known
            append((known, buffer[body : end - 4]))
            start = end
        self._pending = buffer[start:] if start < size else b""
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._pending)


def _decode_headers(raw: bytes, i: int, end: int) -> Headers:
    headers: Headers = {}
    try:
        while i < end:
            name_end = i + 1 + raw[i]
            name = raw[i + 1 : name_end].decode("utf-8")
            kind = raw[name_end]
            i = name_end + 1
            value: str | int | bool | bytes
            if kind == 7 or kind == 6:
                length = (raw[i] << 8) | raw[i + 1]
                data = raw[i + 2 : i + 2 + length]
                i += 2 + length
                value = data.decode("utf-8") if kind == 7 else data
            elif kind in _HEADER_SIZES:
                size = _HEADER_SIZES[kind]
                if kind < 2:
                    value = kind == 0
                elif kind == 9:
                    value = raw[i : i + size]
                else:
                    value = int.from_bytes(raw[i : i + size], "big", signed=True)
                i += size
            else:
                raise EventStreamError(f"corrupt event stream from upstream (header type {kind})")
            headers[name] = value
    except (IndexError, UnicodeDecodeError):
        raise EventStreamError("corrupt event stream from upstream (headers)") from None
    if i != end:
        raise EventStreamError("corrupt event stream from upstream (headers length)")
    return headers


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message with string headers (what Bedrock sends; used by tests and mocks)."""
    raw = bytearray()
    for name, value in headers.items():
        key = name.encode()
        data = value.encode()
        raw += bytes([len(key)]) + key + b"\x07" + _U16.pack(len(data)) + data
    total = PRELUDE_BYTES + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    message = prelude + _U32.pack(zlib.crc32(prelude)) + bytes(raw) + payload
    return message + _U32.pack(zlib.crc32(message))
