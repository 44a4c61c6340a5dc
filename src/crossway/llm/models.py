"""`GET /v1/models` and `GET /v1/models/{id}`: the model names a backend serves.

With `models:` configured, the configured names (wildcards cannot be listed); without, the
single provider's own list when it is OpenAI-style, else an empty list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson

from crossway.llm.providers.base import Json, Provider
from crossway.llm.routing import ModelRouter
from crossway.llm.upstream import read_answer
from crossway.proxy import client
from crossway.server.asgi import JSON_HEADERS, send_response
from crossway.types import Send


def model_entry(name: str, owner: str) -> Json:
    """One model in OpenAI's list shape."""
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


async def send_models(
    send: Send,
    backend: str,
    router: ModelRouter,
    providers: dict[str, Provider],
    configured: bool,
    model_id: str | None,
    max_response_bytes: int,
    authorize: Callable[[str], Awaitable[None]] | None = None,
    visible: Callable[[str], bool] | None = None,
) -> None:
    """Answer a models request: one model (404 when unknown) or the list.

    `authorize(model)` runs the route's policies for one model (raising when the caller may not
    use it); `visible(model)` filters lists, so a caller sees only the models it may use.
    """
    if model_id is not None:
        router.resolve(model_id)
        if authorize is not None:
            await authorize(model_id)
        await send_response(send, 200, orjson.dumps(model_entry(model_id, backend)))
        return
    if configured:
        listing = [model_entry(n, backend) for n in router.names() if visible is None or visible(n)]
        await send_response(send, 200, orjson.dumps({"object": "list", "data": listing}))
        return
    provider = next(iter(providers.values()))
    url_of = getattr(provider, "url", None)
    if provider.native_api != "openai_chat" or url_of is None:
        await send_response(send, 200, orjson.dumps({"object": "list", "data": []}))
        return
    timeouts = provider.config.timeouts
    request = await provider.chat_request({}, "", False)
    resp = await client.send(
        "GET", url_of("/models"), request.headers, b"", timeouts, provider.config.tls, stream=False
    )
    data = await read_answer(resp, timeouts, max_response_bytes)
    if resp.status >= 400:
        raise provider.error(resp.status, resp.headers, data)
    if visible is not None:
        data = _filtered(data, visible)
    await send_response(send, 200, data, JSON_HEADERS)


def _filtered(data: bytes, visible: Callable[[str], bool]) -> bytes:
    """An upstream's model list with only the models the caller may use."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return orjson.dumps({"object": "list", "data": []})
    entries = document.get("data") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return orjson.dumps({"object": "list", "data": []})
    document["data"] = [
        e
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("id"), str) and visible(e["id"])
    ]
    return orjson.dumps(document)
