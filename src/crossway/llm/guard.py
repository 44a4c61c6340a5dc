"""Guardrails on the LLM layer (being written: helper LLMGUARD replaces this module)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from crossway.llm.calls import LlmCall
from crossway.server.context import RequestContext


async def guard_request(call: LlmCall, ctx: RequestContext) -> None:
    """Guard the request's content (masks in place, or raises `GuardBlocked`)."""
    raise NotImplementedError("llm guard_request is being written")


async def guard_body(call: LlmCall, body: bytes, ctx: RequestContext) -> bytes:
    """Guard a whole answer in the client's API."""
    raise NotImplementedError("llm guard_body is being written")


def guard_stream(
    call: LlmCall, chunks: AsyncIterator[Any], ctx: RequestContext
) -> AsyncIterator[Any]:
    """Guard the client's stream as it flows."""
    raise NotImplementedError("llm guard_stream is being written")
