"""Server-sent event framing shared by the downstream APIs."""

from __future__ import annotations

from typing import Any, Final

import orjson

DONE: Final = b"data: [DONE]\n\n"
"""The OpenAI Chat Completions end-of-stream marker."""


def named_event(event: str, data: Any) -> bytes:
    """One SSE event with an `event:` name (Anthropic Messages, OpenAI Responses)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def data_event(data: Any) -> bytes:
    """One unnamed SSE event (OpenAI Chat Completions)."""
    return b"data: " + orjson.dumps(data) + b"\n\n"
