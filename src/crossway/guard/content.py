"""The text a guard looks at: slots a protocol backend makes from its messages.

A backend turns what it carries (chat messages, tool arguments, an A2A message's parts) into
`Slot`s; a guard reads `slot.text` and, to mask, calls `slot.set(new)`, which writes the text
back into the JSON container it came from. The backend then re-encodes the body if any slot
changed. Nothing here knows a protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

MAX_DEPTH: Final = 32
"""JSON nesting deeper than this is not walked (a body cannot make the walk recurse forever)."""


@dataclass(slots=True)
class Slot:
    """One string of a request or response, and where it lives.

    `kind` says what it is, for logs and for detectors that care (`system`, `user`,
    `assistant`, `tool_result`, `tool_arguments`, `content`, `message`, `artifact`...).
    `container[key]` is where the string sits in its decoded JSON (None: nowhere to write,
    the backend reads `text` back itself)."""

    text: str
    kind: str
    container: Any = None
    key: Any = None
    changed: bool = False

    def set(self, text: str) -> None:
        """Replace the text (masking), in the slot and in its container."""
        if text == self.text:
            return
        self.text = text
        self.changed = True
        if self.container is not None:
            self.container[self.key] = text


def string_slots(
    value: Any,
    kind: str,
    out: list[Slot],
    skip_keys: frozenset[str] = frozenset(),
    depth: int = 0,
) -> list[Slot]:
    """Every string inside a JSON value (object values, list items) as a slot of `kind`,
    appended to `out`; object keys named in `skip_keys` are not entered. A bare string
    `value` has no container to write to: wrap it in a list or dict first."""
    if depth > MAX_DEPTH:
        return out
    if isinstance(value, dict):
        for key, item in value.items():
            if key in skip_keys:
                continue
            if isinstance(item, str):
                if item:
                    out.append(Slot(item, kind, value, key))
            elif isinstance(item, dict | list):
                string_slots(item, kind, out, skip_keys, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                if item:
                    out.append(Slot(item, kind, value, i))
            elif isinstance(item, dict | list):
                string_slots(item, kind, out, skip_keys, depth + 1)
    return out


def any_changed(slots: Iterable[Slot]) -> bool:
    """Whether a guard rewrote any of these slots."""
    return any(s.changed for s in slots)


__all__ = ["Slot", "any_changed", "string_slots"]
