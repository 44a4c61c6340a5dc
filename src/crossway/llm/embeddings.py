"""`POST /v1/embeddings` in front of every provider that has an embeddings API.

    openai, openai_compatible, azure   the client's bytes pass through (`/embeddings`, or the
                                       Azure deployment's), the answer comes back untouched
    gemini                             `batchEmbedContents`
    bedrock                            InvokeModel: Titan Text Embeddings, Cohere Embed
    anthropic, vertex                  no embeddings API: a 400 naming the provider type

A provider serves embeddings when it implements `Provider.embeddings_request`; translated
providers answer through `embeddings_response` in OpenAI's shape. Retries, failover and
cooldown are the chat path's (`LlmBackend.attempt_all`).
"""

from __future__ import annotations

import orjson

from crossway.errors import BadRequest
from crossway.llm.calls import EMBEDDINGS, LlmCall, model_of, speaks_natively, with_model
from crossway.llm.providers.base import Provider, UpstreamRequest
from crossway.llm.routing import Deployment, ModelRouter, Resolved
from crossway.llm.usage import Usage, usage_from_body, usage_from_chat

EMBEDDINGS_NOT_SUPPORTED = "embeddings_not_supported"


def serves_embeddings(provider: Provider) -> bool:
    """Whether the provider has an embeddings API Crossway speaks."""
    return type(provider).embeddings_request is not Provider.embeddings_request


def embeddings_call(raw: bytes) -> LlmCall:
    """An embeddings request: only `model` is decoded, for routing."""
    return LlmCall(EMBEDDINGS, model_of(raw), False, raw=raw)


def embeddings_plan(call: LlmCall, router: ModelRouter) -> list[tuple[Resolved, Deployment]]:
    """The deployments to try, in order, skipping providers without embeddings (a 400 naming
    their types when none is left)."""
    resolved = router.resolve(call.model)
    ordered = router.order(resolved.deployments, resolved.strategy)
    plan = [(resolved, d) for d in ordered if serves_embeddings(d.provider)]
    if not plan:
        kinds = sorted({d.provider.config.type for d in resolved.deployments})
        raise BadRequest(
            f"model {call.model!r} is served by provider type {', '.join(kinds)}, which has no "
            "embeddings API; embeddings are served from openai, openai_compatible, azure, "
            "gemini and bedrock providers",
            param="model",
            code=EMBEDDINGS_NOT_SUPPORTED,
        )
    return plan


async def embeddings_request(call: LlmCall, provider: Provider, model: str) -> UpstreamRequest:
    """The upstream request for one attempt: OpenAI-style providers get the client's bytes."""
    if speaks_natively(call, provider):
        request = await provider.embeddings_request({}, model)
        if model != call.model:
            request.body = with_model(call.raw, call.canonical(), call.model, model)
        else:
            request.body = call.raw
        return request
    return await provider.embeddings_request(call.canonical(), model)


def embeddings_answer(call: LlmCall, provider: Provider, data: bytes) -> tuple[bytes, Usage | None]:
    """The client's answer body and its usage."""
    if speaks_natively(call, provider):
        return data, usage_from_body(data)
    answer = provider.embeddings_response(data, call.canonical())
    answer["model"] = call.model
    return orjson.dumps(answer), usage_from_chat(answer.get("usage"))
