"""What a request's cache entry is: whether it may be cached, its tenant partition, its exact
key and, for the semantic cache, its partition and prompt text.

Requests are compared in canonical chat form (`LlmCall.canonical()`), so OpenAI Chat, Anthropic
Messages and Responses requests asking the same thing share an entry, streamed or not:

    exact key      sha256(tenant, normalized body)       normalized: `stream`, `stream_options`,
                                                         `user`, `metadata`, `store`,
                                                         `service_tier` dropped; `max_tokens` ->
                                                         `max_completion_tokens`; text-only
                                                         content parts -> one string
    semantic key   sha256(tenant, normalized body with the last user message's text blanked),
                   then the nearest cached embedding of that text in the partition
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

import orjson

from crossway.config.llm_cache import LlmCacheConfig
from crossway.errors import GatewayError
from crossway.llm.calls import LlmCall
from crossway.server.context import RequestContext

Json = dict[str, Any]

_DROPPED: Final = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier"}
)
"""Request keys that do not change the answer (or are about the caller, which the partition
already holds)."""
_ANONYMOUS: Final = "anonymous"
_BLANK: Final = "\x00"  # what stands for the last user message's text in the semantic partition


@dataclass(slots=True)
class Considered:
    """A request the cache looks at: its keys, and whether to look up and to store."""

    exact: str
    partition: str
    semantic_partition: str
    prompt: str | None  # the last user message's text (None: not text, no semantic lookup)
    lookup: bool  # False with `Cache-Control: no-cache` (still stored)


def tenant(ctx: RequestContext, scope: str) -> str:
    """The partition entries are shared in: `team:T`, `key:K`, `sub:S`, `anonymous` or `*`."""
    if scope == "global":
        return "*"
    key = ctx.key
    if key is not None:
        team = key.get("team")
        if scope == "team" and team:
            return f"team:{team}"
        name = key.get("id") or key.get("name")
        if name:
            return f"key:{name}"
    identity = ctx.identity
    if identity is not None:
        team = identity.get("team")
        if scope == "team" and team:
            return f"team:{team}"
        sub = identity.get("sub")
        if sub:
            return f"sub:{identity.get('method', '')}:{sub}"
    return _ANONYMOUS


def cache_control(call: LlmCall) -> tuple[bool, bool]:
    """`(no_cache, no_store)` from the request's `Cache-Control` (and `Pragma: no-cache`)."""
    no_cache = no_store = False
    for name, value in call.scope_headers or ():
        if name == b"cache-control" or name == b"pragma":
            for token in value.lower().split(b","):
                token = token.strip()
                if token == b"no-store":
                    no_store = True
                elif token == b"no-cache":
                    no_cache = True
    return no_cache, no_store


def bypass_reason(body: Json, config: LlmCacheConfig) -> str | None:
    """Why a (canonical) request is not cached by the rules, or None when it may be."""
    if not config.allow_tools and (body.get("tools") or body.get("functions")):
        return "tools"
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and temperature > config.max_temperature:
        return "temperature"
    n = body.get("n")
    if n is not None and n != 1:
        return "n"
    users = assistants = 0
    for message in body.get("messages") or ():
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            users += 1
        elif role in ("assistant", "tool", "function"):
            assistants += 1
    turns = max(users, 2) if assistants else users
    if turns > config.max_user_turns:
        return "turns"
    return None


def consider(
    call: LlmCall, ctx: RequestContext, config: LlmCacheConfig
) -> tuple[Considered | None, str]:
    """The request's keys, or None with the reason it is not cached."""
    no_cache, no_store = cache_control(call)
    if no_store:
        return None, "no_store"
    try:
        body = call.canonical()
    except GatewayError:
        return None, "untranslatable"
    reason = bypass_reason(body, config)
    if reason is not None:
        return None, reason
    normalized = normalize(body, call.model)
    who = tenant(ctx, config.scope)
    exact = _digest(who, normalized)
    prompt, blanked = _last_user_text(normalized)
    semantic = _digest(who, blanked) if prompt is not None else ""
    return Considered(exact, who, semantic, prompt, not no_cache), ""


def normalize(body: Json, model: str) -> Json:
    """The request as far as its answer depends on it (a new dict; `body` is not changed)."""
    out: Json = {k: v for k, v in body.items() if k not in _DROPPED}
    out["model"] = model
    if "max_tokens" in out and "max_completion_tokens" not in out:
        out["max_completion_tokens"] = out.pop("max_tokens")
    if not out.get("tools"):
        out.pop("tools", None)
        out.pop("parallel_tool_calls", None)
    messages = []
    for message in out.get("messages") or ():
        if isinstance(message, dict):
            message = dict(message)
            message["content"] = _text_content(message.get("content"))
            if message.get("role") == "developer":
                message["role"] = "system"
        messages.append(message)
    out["messages"] = messages
    return out


def _text_content(content: Any) -> Any:
    """Text-only content parts as one string (how Messages and Responses requests arrive)."""
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" for p in content
    ):
        return "".join(str(p.get("text", "")) for p in content)
    return content


def _last_user_text(normalized: Json) -> tuple[str | None, Json]:
    """The last user message's text, and the body with that text blanked."""
    messages = normalized["messages"]
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            text = message.get("content")
            if not isinstance(text, str) or not text.strip():
                return None, normalized
            blanked = [*messages[:i], {**message, "content": _BLANK}, *messages[i + 1 :]]
            return text, {**normalized, "messages": blanked}
    return None, normalized


def _digest(who: str, body: Json) -> str:
    data = orjson.dumps([who, body], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(data).hexdigest()
