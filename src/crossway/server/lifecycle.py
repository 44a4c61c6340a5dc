"""Shutdown notices for requests that would otherwise never end on their own.

Streams that only wait for server events (an MCP session's GET stream, a legacy SSE stream)
register a callback; when the worker starts shutting down, the callbacks end those streams at
once (clients resume elsewhere with `Last-Event-ID`), so the drain waits only for real work.
"""

from __future__ import annotations

from collections.abc import Callable

_callbacks: dict[int, Callable[[], None]] = {}
_next_id = 0
_shutting_down = False


def on_shutdown(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` when shutdown starts (at once if it already has); returns the undo."""
    global _next_id
    if _shutting_down:
        callback()
        return lambda: None
    _next_id += 1
    key = _next_id
    _callbacks[key] = callback
    return lambda: _callbacks.pop(key, None) and None


def begin_shutdown() -> None:
    """Tell every registered stream to end."""
    global _shutting_down
    _shutting_down = True
    for callback in list(_callbacks.values()):
        callback()
    _callbacks.clear()
