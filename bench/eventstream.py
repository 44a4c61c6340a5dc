"""Encode AWS event-stream frames (`application/vnd.amazon.eventstream`), as Bedrock streams them.

A frame is: total length (u32), headers length (u32), CRC32 of those 8 bytes, the headers,
the payload, and a CRC32 of everything before it. Each header is a 1-byte name length, the
name, a 1-byte value type (7 = string), a 2-byte value length and the value. All integers
are big-endian. Used only to build the benchmark's fixed upstream answers.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

HEADER_TYPE_STRING: Final = 7
PRELUDE_LENGTH: Final = 12
MESSAGE_CRC_LENGTH: Final = 4


def encode_headers(headers: dict[str, str]) -> bytes:
    """Encode string-valued event-stream headers."""
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode()
        raw_value = value.encode()
        out += struct.pack(">B", len(raw_name)) + raw_name
        out += struct.pack(">BH", HEADER_TYPE_STRING, len(raw_value)) + raw_value
    return bytes(out)


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """Encode one event-stream frame with its prelude and message CRC32s."""
    raw_headers = encode_headers(headers)
    total = PRELUDE_LENGTH + len(raw_headers) + len(payload) + MESSAGE_CRC_LENGTH
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def encode_event(event_type: str, payload: bytes) -> bytes:
    """Encode a Bedrock ConverseStream event (`:message-type: event`) with a JSON payload."""
    return encode_frame(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        payload,
    )
