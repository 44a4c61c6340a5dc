"""Guardrails on the A2A layer: the text of messages, task statuses and artifacts, as slots.

The backend calls these, on the canonical (v1.0 JSON) form every binding and version is
translated to, only when the route has a guard (`guarded(ctx)`):

- `guard_params` before `SendMessage` / `SendStreamingMessage` goes to the agent: the message's
  text parts and the string leaves of its data parts (file parts, names and URLs are not
  content; metadata is not scanned);
- `guard_result` on a result (`SendMessage`'s task or message, `GetTask`, `CancelTask`,
  `ListTasks`), and `guard_events` on each event of a stream (`SendStreamingMessage`,
  `SubscribeToTask`): returned messages, task status messages, history and artifacts. Every
  SSE event carries whole JSON, so each is guarded whole as it passes, with no hold-back (an
  entity split across two `append` artifact chunks is not seen whole).

A mask rewrites the content in place before it is forwarded or rendered. A block becomes the
A2A error -32602 (`A2aError`, rendered in the caller's version and binding, with the guard and
detector in its data); the agent never sees a blocked message, and a blocked stream event ends
the stream with an error event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

from crossway.a2a import errors as codes
from crossway.a2a.errors import A2aError
from crossway.config.guardrails import Direction
from crossway.guard.content import Slot, string_slots
from crossway.policy.guardrails import GuardBlocked, guard_content
from crossway.server.context import RequestContext

MESSAGE_METHODS: Final = frozenset({"SendMessage", "SendStreamingMessage"})
"""Canonical methods whose `params.message` is guarded on the way to the agent."""
TASK_METHODS: Final = frozenset({"GetTask", "CancelTask"})
"""Canonical methods whose result is one task."""
BLOCKED_CODE: Final = codes.INVALID_PARAMS
"""The A2A error code of content a guard refused (either direction)."""


async def guard_params(ctx: RequestContext, method: str, params: dict[str, Any]) -> None:
    """Guard the message a send carries (masked in `params` in place, or `A2aError`)."""
    if method not in MESSAGE_METHODS:
        return
    slots: list[Slot] = []
    _message_slots(params.get("message"), "message", slots)
    await _guard(ctx, slots, "request")


async def guard_result(ctx: RequestContext, method: str, result: Any) -> Any:
    """Guard a non-streamed result on its way to the caller (masked in place, or `A2aError`)."""
    slots: list[Slot] = []
    if method == "SendMessage":
        _event_slots(result, slots)
    elif method in TASK_METHODS:
        _task_slots(result, slots)
    elif method == "ListTasks" and isinstance(result, dict):
        tasks = result.get("tasks")
        if isinstance(tasks, list):
            for task in tasks:
                _task_slots(task, slots)
    await _guard(ctx, slots, "response")
    return result


async def guard_events(
    ctx: RequestContext, events: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """A stream's canonical events, each guarded whole before it is passed on."""
    try:
        async for event in events:
            slots: list[Slot] = []
            _event_slots(event, slots)
            await _guard(ctx, slots, "response")
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _guard(ctx: RequestContext, slots: list[Slot], direction: Direction) -> None:
    if not slots:
        return
    try:
        await guard_content(ctx, slots, direction)
    except GuardBlocked as exc:
        raise A2aError(BLOCKED_CODE, exc.message, exc.detail, status=exc.status_code) from None


def _event_slots(event: Any, out: list[Slot]) -> None:
    """A `StreamResponse` (also `SendMessage`'s result): `task`, `message`, `statusUpdate` or
    `artifactUpdate`."""
    if not isinstance(event, dict):
        return
    _task_slots(event.get("task"), out)
    _message_slots(event.get("message"), "message", out)
    update = event.get("statusUpdate")
    if isinstance(update, dict):
        _status_slots(update.get("status"), out)
    update = event.get("artifactUpdate")
    if isinstance(update, dict):
        _artifact_slots(update.get("artifact"), out)


def _task_slots(task: Any, out: list[Slot]) -> None:
    if not isinstance(task, dict):
        return
    _status_slots(task.get("status"), out)
    for key, walk in (("artifacts", _artifact_slots), ("history", _history_slots)):
        items = task.get(key)
        if isinstance(items, list):
            for item in items:
                walk(item, out)


def _history_slots(message: Any, out: list[Slot]) -> None:
    _message_slots(message, "history", out)


def _status_slots(status: Any, out: list[Slot]) -> None:
    if isinstance(status, dict):
        _message_slots(status.get("message"), "status", out)


def _artifact_slots(artifact: Any, out: list[Slot]) -> None:
    if isinstance(artifact, dict):
        _parts_slots(artifact.get("parts"), "artifact", out)


def _message_slots(message: Any, kind: str, out: list[Slot]) -> None:
    if isinstance(message, dict):
        _parts_slots(message.get("parts"), kind, out)


def _parts_slots(parts: Any, kind: str, out: list[Slot]) -> None:
    """Text parts (`{"text": ...}`) and the string leaves of data parts (`{"data": ...}`)."""
    if not isinstance(parts, list):
        return
    for part in parts:
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str):
            if text:
                out.append(Slot(text, kind, part, "text"))
            continue
        data = part.get("data")
        if isinstance(data, str):
            if data:
                out.append(Slot(data, kind, part, "data"))
        elif isinstance(data, dict | list):
            string_slots(data, kind, out)


__all__ = ["BLOCKED_CODE", "guard_events", "guard_params", "guard_result"]
