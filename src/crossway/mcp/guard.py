"""Guardrails on the MCP layer: the text of tool calls, prompts and resource reads, as slots.

The federation calls these only when the route has a guard (`guarded(ctx)`):

- `guard_request` before a `tools/call` or `prompts/get` goes upstream: every string value of
  `arguments` (keys are names, not content) and the 2026-07-28 `Mcp-Param-*` headers that
  mirror them (masked alike, so the server's header check still holds; a value only in a
  header is caught too). A mask rewrites them; a block raises `GuardBlocked`, which
  `crossway.mcp.jsonrpc` renders as -32602 with the guard and detector in `data`, and the
  server never sees the call.
- `guard_result` before a result goes back: a tool's `content` text, embedded resources' text
  and the string leaves of `structuredContent`; a prompt's messages (and description); a
  resource's `contents[].text`. Binary content (images, audio, blobs) is not scanned.

Results are rewritten in place: each is decoded for this one request and nothing else holds it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from crossway.guard.content import Slot, string_slots
from crossway.mcp.upstream.base import JsonObject
from crossway.mcp.upstream.http import header_value
from crossway.policy.guardrails import guard_content
from crossway.server.context import RequestContext

ARGUMENT_KINDS: Final = {"tools/call": "tool_arguments", "prompts/get": "prompt_arguments"}
"""Methods whose `arguments` are guarded on the way in, and the slot kind of each."""
RESULT_METHODS: Final = frozenset({"tools/call", "prompts/get", "resources/read"})
"""Methods whose results are guarded on the way out."""
_B64_START: Final = "=?base64?"
_B64_END: Final = "?="


async def guard_request(
    ctx: RequestContext, method: str, params: JsonObject, headers: dict[str, str] | None
) -> dict[str, str] | None:
    """Guard a call's arguments (masked in `params` in place, or `GuardBlocked` raised);
    returns the `Mcp-Param-*` headers to forward (rewritten where they were masked)."""
    kind = ARGUMENT_KINDS.get(method)
    if kind is None:
        return headers
    slots: list[Slot] = []
    arguments = params.get("arguments")
    if isinstance(arguments, dict | list):
        string_slots(arguments, kind, slots)
    mirrored: list[tuple[str, Slot]] = []
    for name, value in (headers or {}).items():
        text = _unwrapped(value)
        if text:
            slot = Slot(text, kind)  # no container: written back below, re-encoded
            slots.append(slot)
            mirrored.append((name, slot))
    await guard_content(ctx, slots, "request")
    if headers is None or not any(slot.changed for _, slot in mirrored):
        return headers
    out = dict(headers)
    for name, slot in mirrored:
        if slot.changed:
            out[name] = header_value(slot.text)
    return out


async def guard_result(ctx: RequestContext, method: str, result: JsonObject) -> JsonObject:
    """Guard a result on its way to the client (masked in place, or `GuardBlocked`)."""
    slots: list[Slot] = []
    if method == "tools/call":
        _content_slots(result.get("content"), "tool_result", slots)
        structured = result.get("structuredContent")
        if isinstance(structured, dict | list):
            string_slots(structured, "tool_result", slots)
    elif method == "prompts/get":
        if isinstance(result.get("description"), str) and result["description"]:
            slots.append(Slot(result["description"], "prompt", result, "description"))
        messages = result.get("messages")
        if isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict):
                    _content_slots(message.get("content"), "prompt", slots)
    elif method == "resources/read":
        contents = result.get("contents")
        if isinstance(contents, list):
            for item in contents:
                _text_slot(item, "resource", slots)
    if slots:
        await guard_content(ctx, slots, "response")
    return result


def _content_slots(content: Any, kind: str, out: list[Slot]) -> None:
    """The text of content blocks (one block, as in prompt messages, or a list of them):
    `text` blocks and embedded `resource` blocks' text."""
    blocks = content if isinstance(content, list) else [content]
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind_of = block.get("type")
        if kind_of == "text":
            _text_slot(block, kind, out)
        elif kind_of == "resource":
            _text_slot(block.get("resource"), kind, out)


def _text_slot(item: Any, kind: str, out: list[Slot]) -> None:
    if isinstance(item, dict):
        text = item.get("text")
        if isinstance(text, str) and text:
            out.append(Slot(text, kind, item, "text"))


def _unwrapped(value: str) -> str:
    """A `Mcp-Param-*` value as text: `=?base64?...?=` (UTF-8) unwrapped (a malformed one is
    scanned as it is)."""
    value = value.strip(" \t")
    if not (value.startswith(_B64_START) and value.endswith(_B64_END)):
        return value
    try:
        return base64.b64decode(value[len(_B64_START) : -len(_B64_END)], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return value


__all__ = ["ARGUMENT_KINDS", "RESULT_METHODS", "guard_request", "guard_result"]
