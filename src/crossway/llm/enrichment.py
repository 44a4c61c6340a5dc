"""Prompt enrichment: system messages and default / forced parameters configured per model."""

from __future__ import annotations

from typing import Any

from crossway.config.llm import ModelRoute

Json = dict[str, Any]


def enrich(body: Json, route: ModelRoute) -> Json:
    """Apply `route`'s enrichment to a canonical chat body, in place, and return it.

    `system_prepend` goes first of all; `system_append` right after the client's leading
    system / developer messages, so it still reads as part of the instructions. Defaults fill
    what the client left out; overrides win over what it sent.
    """
    messages = body.get("messages")
    if isinstance(messages, list):
        if route.system_append:
            at = 0
            while (
                at < len(messages)
                and isinstance(messages[at], dict)
                and (messages[at].get("role") in ("system", "developer"))
            ):
                at += 1
            messages.insert(at, {"role": "system", "content": route.system_append})
        if route.system_prepend:
            messages.insert(0, {"role": "system", "content": route.system_prepend})
    for key, value in route.defaults.items():
        body.setdefault(key, value)
    body.update(route.overrides)
    return body
