"""Drive a provider against a mock without the gateway: build its request, send it with aiohttp,
translate the answer (or the error) back, the way the LLM backend does."""

from __future__ import annotations

from typing import Any

import aiohttp

from crossway.errors import GatewayError, UpstreamUnreachable
from crossway.llm.providers.base import Provider


async def call(provider: Provider, body: dict[str, Any], model: str, *, read_size: int = 7) -> Any:
    """A canonical chat completion (dict) or, when `body["stream"]`, the list of chunks.

    Streams are read in small pieces (`read_size` bytes) so frames split across reads.
    Raises the provider's `GatewayError` for an error answer.
    """
    try:
        return await _call(provider, body, model, read_size)
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(f"upstream connection failed: {exc}") from exc


async def _call(provider: Provider, body: dict[str, Any], model: str, read_size: int) -> Any:
    stream = bool(body.get("stream"))
    req = await provider.chat_request(body, model, stream)
    async with (
        aiohttp.ClientSession() as session,
        session.request(req.method, req.url, headers=req.headers, data=req.body) as resp,
    ):
        if resp.status >= 300:
            raise provider.error(resp.status, dict(resp.headers), await resp.read())
        if not stream:
            return provider.chat_response(await resp.read())
        translator = provider.chat_stream(model)
        chunks: list[dict[str, Any]] = []
        async for data in resp.content.iter_chunked(read_size):
            chunks.extend(translator.feed(data))
        chunks.extend(translator.close())
        return chunks


def joined(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Assemble streamed chunks the way an OpenAI client does: text, tool calls, finish, usage."""
    text = ""
    reasoning = ""
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                if call.get("id"):
                    slot["id"] = call["id"]
                fn = call.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    return {
        "text": text,
        "reasoning": reasoning,
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish,
        "usage": usage,
    }


__all__ = ["GatewayError", "call", "joined"]
