"""`POST /v1/messages/count_tokens`: Anthropic's token count, estimated locally.

No provider round trip: the Messages body is translated to canonical chat and estimated like
the context-window check does (`crossway.llm.routing.estimate_prompt_tokens`, about four
characters per token). The model must still exist (404 otherwise).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson

from crossway.llm.api.anthropic_messages import messages_to_chat
from crossway.llm.calls import loads
from crossway.llm.routing import ModelRouter, estimate_prompt_tokens
from crossway.server.asgi import send_response
from crossway.types import Send


async def send_token_count(
    raw: bytes,
    router: ModelRouter,
    send: Send,
    authorize: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """Answer `{"input_tokens": N}` for a Messages body (after `authorize(model)`, the route's
    policies for that model)."""
    body = loads(raw)
    body.setdefault("max_tokens", 1)  # count_tokens takes no max_tokens; the translator wants one
    chat = messages_to_chat(body)
    chat.pop("max_completion_tokens", None)
    router.resolve(chat["model"])
    if authorize is not None:
        await authorize(str(chat["model"]))
    tokens = estimate_prompt_tokens(chat)
    await send_response(send, 200, orjson.dumps({"input_tokens": tokens}))
