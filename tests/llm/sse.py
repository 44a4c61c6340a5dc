"""Parse server-sent events in tests (kept independent of the code under test)."""

from __future__ import annotations

from typing import Any

import orjson


def parse_sse(data: bytes) -> list[tuple[str | None, Any]]:
    """`(event name or None, decoded data)` for every event in `data`."""
    events: list[tuple[str | None, Any]] = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        name = None
        lines = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                lines.append(line[5:].strip())
        payload = b"\n".join(lines)
        events.append((name, payload.decode() if payload == b"[DONE]" else orjson.loads(payload)))
    return events
