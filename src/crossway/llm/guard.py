"""Guardrails on the LLM layer: requests, whole answers and streams, in the client's API.

`LlmBackend.serve` calls these only when the route has a guard (`guarded(ctx)`):

- `guard_request` before anything goes upstream: the system prompt, every message's text, the
  tool results and the assistant tool-call arguments sent back (and an embeddings request's
  `input` texts). A block raises `GuardBlocked`
  (rendered in the caller's error format; no upstream sees the request). A masked request
  goes upstream masked: OpenAI Chat re-encodes its canonical body (`call.modified`); Anthropic
  Messages and Responses mask the client's own body (`call.source`), whose bytes are what the
  native passthroughs send, and translate it again for the other providers.
- `guard_body` over a non-streamed answer (chat.completion, Messages message, Response):
  content and text blocks, refusals, reasoning text, tool-call arguments.
- `guard_stream` over the client's stream as it flows (`crossway.llm.guard_stream`).

Tool-call arguments that are JSON are guarded leaf by leaf (a `\\u` escape cannot hide an
entity from a detector) and re-encoded only when a leaf changed; anything else is one text.
Anthropic `thinking` blocks are not touched: they are signed, and a changed one is refused
when the client sends it back.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from crossway.guard.content import Slot, any_changed, string_slots
from crossway.llm.api.anthropic_messages import messages_to_chat
from crossway.llm.api.responses import responses_to_chat
from crossway.llm.calls import CHAT, EMBEDDINGS, MESSAGES, RESPONSES, LlmCall
from crossway.llm.guard_stream import guard_stream
from crossway.policy.guardrails import GuardBlocked, guard_content
from crossway.server.context import RequestContext
from crossway.telemetry.request_log import note_request

_ROLE_KINDS: Final = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool_result",
    "function": "tool_result",
}
_TEXT_PARTS: Final = frozenset({"text", "input_text", "output_text"})
_REASONING_KEYS: Final = ("reasoning_content", "reasoning")


class Slots:
    """The slots of one body, and the JSON strings (tool arguments) some of them live in."""

    __slots__ = ("_json", "slots")

    def __init__(self) -> None:
        self.slots: list[Slot] = []
        self._json: list[tuple[Any, Any, list[Any], list[Slot]]] = []

    def text(self, container: Any, key: Any, kind: str) -> None:
        """`container[key]`, when it is a non-empty string."""
        value = container.get(key) if isinstance(container, dict) else None
        if isinstance(value, str) and value:
            self.slots.append(Slot(value, kind, container, key))

    def value(self, value: Any, kind: str) -> None:
        """Every string inside a JSON value (Anthropic's tool `input`)."""
        if isinstance(value, dict | list):
            string_slots(value, kind, self.slots)

    def json_text(self, container: Any, key: Any, kind: str) -> None:
        """`container[key]`, a string holding JSON (tool-call arguments): its string leaves,
        or the whole string when it is not JSON."""
        text = container.get(key) if isinstance(container, dict) else None
        if not isinstance(text, str) or not text:
            return
        try:
            holder = [orjson.loads(text)]
        except orjson.JSONDecodeError:
            self.slots.append(Slot(text, kind, container, key))
            return
        leaves = string_slots(holder, kind, [])
        if leaves:
            self.slots.extend(leaves)
            self._json.append((container, key, holder, leaves))

    def finish(self) -> bool:
        """Whether a guard rewrote any slot (the JSON strings are re-encoded then)."""
        if not any_changed(self.slots):
            return False
        for container, key, holder, leaves in self._json:
            if any_changed(leaves):
                container[key] = orjson.dumps(holder[0]).decode()
        return True


# -- requests -----------------------------------------------------------------------------------


async def guard_request(call: LlmCall, ctx: RequestContext) -> None:
    """Guard the request's content (masks in place, or raises `GuardBlocked`)."""
    if call.api == CHAT:
        root = call.canonical()
        found = chat_request_slots(root)
    elif call.api in (MESSAGES, RESPONSES):
        root = call.source or {}
        found = messages_slots(root) if call.api == MESSAGES else responses_request_slots(root)
    elif call.api == EMBEDDINGS:
        root = call.canonical()
        found = Slots()
        found.text(root, "input", "embedding_input")  # a string, or a list of strings
        if isinstance(root.get("input"), list):
            string_slots(root["input"], "embedding_input", found.slots)
    else:
        return
    if not found.slots:
        return
    try:
        await guard_content(ctx, found.slots, "request")
    except GuardBlocked:
        if found.finish():  # the refused text is masked: what the request log keeps
            note_request(orjson.dumps(root))
        raise
    if not found.finish():
        return
    raw = orjson.dumps(root)
    if call.api in (CHAT, EMBEDDINGS):
        call.modified = True  # the canonical (masked) body goes upstream, never the raw bytes
    elif call.api == MESSAGES:
        call.body = messages_to_chat(root)
    elif call.untranslatable is None:
        call.body = responses_to_chat(root)
    call.raw = raw  # what the passthroughs, the spans and the request log see
    note_request(raw)


def chat_request_slots(body: Any) -> Slots:
    """The texts of an OpenAI Chat request: every message's content (string or text parts),
    refusals, and the tool-call arguments of assistant messages sent back."""
    found = Slots()
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        kind = _ROLE_KINDS.get(message.get("role"), "user")  # type: ignore[arg-type]
        _chat_message(message, kind, found)
    return found


def _chat_message(message: dict[str, Any], kind: str, found: Slots) -> None:
    content = message.get("content")
    if isinstance(content, str):
        found.text(message, "content", kind)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                if part.get("type") in _TEXT_PARTS:
                    found.text(part, "text", kind)
                elif part.get("type") == "refusal":
                    found.text(part, "refusal", kind)
    found.text(message, "refusal", "refusal")
    for key in _REASONING_KEYS:
        found.text(message, key, "reasoning")
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            found.json_text(call.get("function"), "arguments", "tool_arguments")
    found.json_text(message.get("function_call"), "arguments", "tool_arguments")


def messages_slots(body: Any) -> Slots:
    """The texts of an Anthropic Messages request: the system prompt, text blocks, tool
    results (string or text blocks), tool_use inputs sent back, text documents."""
    found = Slots()
    if not isinstance(body, dict):
        return found
    system = body.get("system")
    if isinstance(system, str):
        found.text(body, "system", "system")
    elif isinstance(system, list):
        for block in system:
            found.text(block, "text", "system")
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        kind = "assistant" if message.get("role") == "assistant" else "user"
        content = message.get("content")
        if isinstance(content, str):
            found.text(message, "content", kind)
        elif isinstance(content, list):
            for block in content:
                _messages_block(block, kind, found)
    return found


def _messages_block(block: Any, kind: str, found: Slots) -> None:
    if not isinstance(block, dict):
        return
    btype = block.get("type")
    if btype == "text":
        found.text(block, "text", kind)
    elif btype == "tool_use":
        found.value(block.get("input"), "tool_arguments")
    elif btype == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            found.text(block, "content", "tool_result")
        elif isinstance(content, list):
            for inner in content:
                if isinstance(inner, dict) and inner.get("type") == "text":
                    found.text(inner, "text", "tool_result")
    elif btype == "document":
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "text":
            found.text(source, "data", kind)


def responses_request_slots(body: Any) -> Slots:
    """The texts of a Responses request: `instructions`, `input` (a string, or message items'
    text parts), function-call arguments and outputs sent back."""
    found = Slots()
    if not isinstance(body, dict):
        return found
    found.text(body, "instructions", "system")
    items = body.get("input")
    if isinstance(items, str):
        found.text(body, "input", "user")
        return found
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        itype = item.get("type", "message")
        if itype == "message":
            kind = _ROLE_KINDS.get(item.get("role"), "user")  # type: ignore[arg-type]
            content = item.get("content")
            if isinstance(content, str):
                found.text(item, "content", kind)
            else:
                _response_parts(content, kind, found)
        elif itype in ("function_call", "custom_tool_call"):
            found.json_text(item, "arguments", "tool_arguments")
            found.text(item, "input", "tool_arguments")
        elif itype in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            if isinstance(output, str):
                found.text(item, "output", "tool_result")
            else:
                _response_parts(output, "tool_result", found)
    return found


def _response_parts(parts: Any, kind: str, found: Slots) -> None:
    for part in parts if isinstance(parts, list) else ():
        if isinstance(part, dict):
            if part.get("type") in _TEXT_PARTS:
                found.text(part, "text", kind)
            elif part.get("type") == "refusal":
                found.text(part, "refusal", kind)


# -- whole answers ------------------------------------------------------------------------------


async def guard_body(call: LlmCall, body: bytes, ctx: RequestContext) -> bytes:
    """Guard a whole answer in the client's API: the masked body re-encoded (the same bytes
    when nothing changed), or `GuardBlocked`."""
    if call.api not in (CHAT, MESSAGES, RESPONSES):
        return body  # embeddings: vectors, no text
    try:
        root = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(root, dict):
        return body
    if call.api == CHAT:
        found = chat_answer_slots(root)
    elif call.api == MESSAGES:
        found = message_answer_slots(root)
    elif call.api == RESPONSES:
        found = response_answer_slots(root)
    else:
        return body
    if not found.slots:
        return body
    await guard_content(ctx, found.slots, "response")
    return orjson.dumps(root) if found.finish() else body


def chat_answer_slots(body: dict[str, Any]) -> Slots:
    """The texts of a `chat.completion`: each choice's content, refusal, reasoning and
    tool-call arguments."""
    found = Slots()
    for choice in body.get("choices") or ():
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            _chat_message(choice["message"], "content", found)
    return found


def message_answer_slots(body: dict[str, Any]) -> Slots:
    """The texts of an Anthropic message: text blocks and tool_use inputs."""
    found = Slots()
    for block in body.get("content") or ():
        if isinstance(block, dict):
            if block.get("type") == "text":
                found.text(block, "text", "content")
            elif block.get("type") == "tool_use":
                found.value(block.get("input"), "tool_arguments")
    return found


def response_answer_slots(body: dict[str, Any]) -> Slots:
    """The texts of a Response: message items' output text and refusals, function-call
    arguments, reasoning summaries (and `output_text`, where a server adds it)."""
    found = Slots()
    found.text(body, "output_text", "content")
    for item in body.get("output") or ():
        if not isinstance(item, dict):
            continue
        itype = item.get("type")
        if itype == "message":
            _response_parts(item.get("content"), "content", found)
        elif itype in ("function_call", "custom_tool_call"):
            found.json_text(item, "arguments", "tool_arguments")
            found.text(item, "input", "tool_arguments")
        elif itype == "reasoning":
            for part in item.get("summary") or ():
                found.text(part, "text", "reasoning")
    return found


__all__ = [
    "Slots",
    "chat_answer_slots",
    "chat_request_slots",
    "guard_body",
    "guard_request",
    "guard_stream",
    "message_answer_slots",
    "messages_slots",
    "response_answer_slots",
    "responses_request_slots",
]
