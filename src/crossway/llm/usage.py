"""Normalized token usage, read from canonical (OpenAI Chat) answers of every provider.

Providers translate their own usage into the canonical `usage` object; this module reads that
one shape (plus the few extra fields providers add for cache writes) into `Usage`, and scans a
passed-through OpenAI stream's tail for its usage chunk without parsing the whole stream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import msgspec

Json = dict[str, Any]

USAGE_MARKERS: Final = (b'"usage":{', b'"usage": {')
"""How a non-null usage object starts (compact or spaced JSON); other chunks carry `null`."""
TAIL_BYTES: Final = 8192
"""Bytes of a passed-through stream kept to find its usage chunk at the end."""


@dataclass(slots=True, frozen=True)
class Usage:
    """Tokens one request consumed.

    Attributes:
        input_tokens: prompt tokens in total, cached ones included.
        output_tokens: completion tokens in total, reasoning ones included.
        cached_tokens: prompt tokens read from the provider's prompt cache.
        cache_write_tokens: prompt tokens written to the provider's prompt cache.
        reasoning_tokens: completion tokens spent on hidden reasoning.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        """A plain dict for logs, CEL attributes and JSON."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_chat(usage: Any) -> Usage | None:
    """Read a canonical `usage` object (Chat Completions shape; Responses/Embeddings names too)."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    p_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    c_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    if not isinstance(p_details, dict):
        p_details = {}
    if not isinstance(c_details, dict):
        c_details = {}
    return Usage(
        input_tokens=_int(prompt),
        output_tokens=_int(completion),
        cached_tokens=_int(p_details.get("cached_tokens")),
        cache_write_tokens=_int(
            p_details.get("cache_creation_tokens", p_details.get("cache_write_tokens"))
        ),
        reasoning_tokens=_int(c_details.get("reasoning_tokens")),
    )


class _UsageOnly(msgspec.Struct):
    usage: dict[str, Any] | None = None


_usage_decoder: Final = msgspec.json.Decoder(_UsageOnly)


def usage_from_body(body: bytes) -> Usage | None:
    """Usage of a non-streamed JSON answer, decoding only its `usage` field."""
    try:
        return usage_from_chat(_usage_decoder.decode(body).usage)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class StreamTail:
    """Keeps the last few kilobytes of a passed-through SSE stream, by reference.

    `add` is O(1) per network chunk (no copying, no parsing); `usage` joins the tail once at the
    end and decodes the last event that carries a non-null `usage`.
    """

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        while self._size - len(self._chunks[0]) >= TAIL_BYTES:
            self._size -= len(self._chunks.popleft())

    def usage(self) -> Usage | None:
        tail = b"".join(self._chunks)
        at = max(tail.rfind(marker) for marker in USAGE_MARKERS)
        if at < 0:
            return None
        start = tail.rfind(b"data:", 0, at)
        end = tail.find(b"\n", at)
        if start < 0:
            return None
        line = tail[start + 5 : end if end >= 0 else len(tail)]
        return usage_from_body(line.strip())
