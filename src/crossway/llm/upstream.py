"""The upstream side of one attempt: which request a (client API, provider) pair sends, and how
a non-streamed answer comes back.

    client API   provider speaks it natively         otherwise
    chat         the client's bytes (usage spliced)  canonical chat -> provider's format
    messages     the client's bytes (Anthropic)      canonical chat -> provider's format
    responses    the client's bytes (OpenAI)         canonical chat -> provider's format
    embeddings   the client's bytes (OpenAI-style)   `crossway.llm.embeddings`

Streams get a `crossway.llm.answers.Relay` matching the pair. A non-streamed answer is read
with `read_answer`, which stops at the backend's `max_response_bytes`.
"""

from __future__ import annotations

from crossway.config.common import Timeouts
from crossway.errors import BadRequest, GatewayError
from crossway.llm import answers
from crossway.llm.api.anthropic_messages import MessagesStreamWriter
from crossway.llm.api.responses import ResponsesStreamWriter
from crossway.llm.calls import (
    CHAT,
    EMBEDDINGS,
    MESSAGES,
    RESPONSES,
    LlmCall,
    chat_body,
    speaks_natively,
    with_model,
)
from crossway.llm.embeddings import embeddings_answer, embeddings_request
from crossway.llm.errors import ResponseTooLarge
from crossway.llm.providers.base import Provider, UpstreamRequest
from crossway.llm.usage import Usage, usage_from_body
from crossway.proxy import client


async def read_answer(resp: client.UpstreamResponse, timeouts: Timeouts, limit: int) -> bytes:
    """A whole non-streamed upstream body, at most `limit` bytes: a larger one (by its
    Content-Length, or counted as it arrives) raises `ResponseTooLarge` and closes the
    connection, never holding more than `limit` + 1 bytes."""
    length = resp.content_length
    if length is not None and length > limit:
        await client.discard(resp)
        raise ResponseTooLarge(limit)
    data = await client.read_body(resp, timeouts, limit)
    if len(data) > limit:
        raise ResponseTooLarge(limit)
    return data


async def upstream_request(
    call: LlmCall, provider: Provider, model: str
) -> tuple[UpstreamRequest, answers.Relay | None]:
    """The upstream request for one attempt and, for streams, the relay that turns the
    upstream's stream into the client's."""
    stream = call.stream
    cap = provider.max_event_bytes
    try:
        if call.api == CHAT and provider.native_api == "openai_chat":
            hide = stream and not call.wants_usage
            request = await provider.chat_request({}, model, stream)
            request.body = chat_body(call, model)
            return request, answers.ChatPassthrough(hide, cap) if stream else None
        if call.api == EMBEDDINGS:
            return await embeddings_request(call, provider, model), None
        if call.api == RESPONSES and speaks_natively(call, provider):
            request = await provider.chat_request({}, model, stream)
            request.url = provider.url("/responses")  # type: ignore[attr-defined]
            request.body = with_model(call.raw, call.source or {}, call.model, model)
            return request, answers.ResponsesPassthrough(cap) if stream else None
        if call.api == MESSAGES and speaks_natively(call, provider):
            request = await provider.chat_request(
                {"messages": [{"role": "user", "content": "-"}]}, model, stream
            )
            request.body = with_model(call.raw, call.source or {}, call.model, model)
            request.headers.update(call.headers)
            return request, answers.MessagesPassthrough(cap) if stream else None
        request = await provider.chat_request(call.canonical(), model, stream)
    except GatewayError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadRequest(
            f"the request cannot be translated for provider {provider.name!r}: {exc}"
        ) from exc
    if not stream:
        return request, None
    translator = provider.chat_stream(call.model)
    if call.api == CHAT:
        return request, answers.ChatTranslated(translator, call.model, not call.wants_usage)
    if call.api == MESSAGES:
        return request, answers.WriterRelay(translator, MessagesStreamWriter(call.model))
    writer = ResponsesStreamWriter(call.source or {}, call.model)
    return request, answers.WriterRelay(translator, writer)


def answer_body(call: LlmCall, provider: Provider, data: bytes) -> tuple[bytes, Usage | None]:
    """A non-streamed upstream answer as the client's body, and its usage."""
    if call.api == EMBEDDINGS:
        return embeddings_answer(call, provider, data)
    if not speaks_natively(call, provider):
        return answers.translate_answer(call.api, provider, data, call.model, call.source)
    if call.api == MESSAGES:
        return data, answers.anthropic_body_usage(data)
    return data, usage_from_body(data)  # Chat and Responses name usage alike
