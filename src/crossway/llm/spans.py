"""The spans and per-stream metrics of LLM upstream attempts (OpenTelemetry GenAI conventions).

Each attempt is a CLIENT span "{gen_ai.operation.name} {gen_ai.request.model}" (a retry or a
failover is another span, with its own `crossway.attempt`); the backend calls `attempt_span`
only while tracing is on, and ends the span when the answer (or the stream) is over.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import msgspec

from crossway.llm.calls import EMBEDDINGS, LlmCall
from crossway.llm.providers.base import Provider
from crossway.llm.usage import Usage
from crossway.proxy.client import url_host
from crossway.telemetry import metrics, tracing

if TYPE_CHECKING:
    from crossway.llm.backend import Answer

GEN_AI_PROVIDERS: Final = {
    "openai": "openai",
    "openai_compatible": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
}
"""Provider type -> `gen_ai.provider.name` (the conventions' well-known values)."""


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _AnswerHead(msgspec.Struct):
    """What a span reads from a non-streamed answer (OpenAI Chat or Anthropic Messages)."""

    model: str | None = None
    choices: list[_Choice] | None = None
    stop_reason: str | None = None


_HEAD: Final = msgspec.json.Decoder(_AnswerHead)


def attempt_span(call: LlmCall, provider: Provider, model: str, url: str, attempt: int) -> Any:
    """Start the CLIENT span of one attempt (a child of the current span)."""
    operation = "embeddings" if call.api == EMBEDDINGS else "chat"
    host, _, port = url_host(url).rpartition(":")
    if not host or not port.isdigit():
        host, port = url_host(url), ""
    span = tracing.start_span(
        f"{operation} {model}",
        {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": GEN_AI_PROVIDERS.get(
                provider.config.type, provider.config.type
            ),
            "gen_ai.request.model": model,
            "server.address": host,
            "server.port": int(port) if port else None,
            "crossway.attempt": attempt,
            "crossway.provider": provider.name,
            "crossway.llm.api": call.api,
            "crossway.llm.stream": call.stream,
        },
        kind="client",
    )
    if span is not None and tracing.capture_content():
        tracing.capture(span, "gen_ai.content.prompt", "gen_ai.prompt", call.raw)
    return span


def _usage_attributes(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {}
    attributes: dict[str, Any] = {
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
    }
    if usage.cached_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
    if usage.reasoning_tokens:
        attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
    return attributes


def end_attempt_span(span: Any, model: str, usage: Usage | None, body: bytes) -> None:
    """End a non-streamed attempt's span with the answer's model, usage and finish reasons."""
    attributes = _usage_attributes(usage)
    attributes["gen_ai.response.model"] = model
    if span.is_recording():
        try:
            head = _HEAD.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            head = None
        if head is not None:
            if head.model:
                attributes["gen_ai.response.model"] = head.model
            reasons = [c.finish_reason for c in head.choices or () if c.finish_reason]
            if head.stop_reason:
                reasons.append(head.stop_reason)
            if reasons:
                attributes["gen_ai.response.finish_reasons"] = reasons
        if tracing.capture_content():
            tracing.capture(span, "gen_ai.content.completion", "gen_ai.completion", body)
    tracing.end_span(span, None, attributes)


def stream_ended(answer: Answer, usage: Usage | None, broke: BaseException | None) -> None:
    """A stream is over: its time per output token, and its attempt's span ended."""
    if broke is None and usage is not None and usage.output_tokens > 1 and answer.first_at:
        per_token = (time.perf_counter() - answer.first_at) / (usage.output_tokens - 1)
        metrics.observe_time_per_output_token(
            answer.resolved.route_name, answer.deployment.provider.name, per_token
        )
    span = answer.span
    if span is not None:
        answer.span = None
        attributes = _usage_attributes(usage)
        attributes["gen_ai.response.model"] = answer.resolved.upstream_model(answer.deployment)
        tracing.end_span(span, broke, attributes)
