"""Upstream LLM providers: each turns canonical (OpenAI Chat) requests into its own wire format
and its answers back, streams included.

    openai, openai_compatible   crossway.llm.providers.openai.OpenAIProvider
    azure                       crossway.llm.providers.azure.AzureOpenAIProvider
    anthropic                   crossway.llm.providers.anthropic.AnthropicProvider
    gemini                      crossway.llm.providers.gemini.GeminiProvider
    vertex                      crossway.llm.providers.vertex.VertexProvider
    bedrock                     crossway.llm.providers.bedrock.BedrockProvider
    inference_pool              crossway.llm.providers.pool.InferencePoolProvider

`build_provider` is the one place a provider type becomes a class; modules are imported only
when a config uses them. Below the providers:

    base            the Provider / StreamTranslator interface
    common          canonical shapes, request pieces, upstream errors -> the error tree
    eventstream     AWS event-stream framing (Bedrock streams), decoded incrementally
    converse        the Bedrock Converse wire format
    gemini_schema   JSON Schema -> the subset Gemini accepts
    aws_auth        SigV4 signing (botocore) and AWS credentials
    google_auth     service-account keys -> OAuth access tokens
"""

from __future__ import annotations

import importlib
from typing import Final

from crossway.config.llm import DEFAULT_MAX_EVENT_BYTES, ProviderConfig
from crossway.llm.providers.base import Provider, StreamTranslator, UpstreamRequest

PROVIDER_CLASSES: Final[dict[str, str]] = {
    "openai": "crossway.llm.providers.openai:OpenAIProvider",
    "openai_compatible": "crossway.llm.providers.openai:OpenAIProvider",
    "azure": "crossway.llm.providers.azure:AzureOpenAIProvider",
    "anthropic": "crossway.llm.providers.anthropic:AnthropicProvider",
    "gemini": "crossway.llm.providers.gemini:GeminiProvider",
    "vertex": "crossway.llm.providers.vertex:VertexProvider",
    "bedrock": "crossway.llm.providers.bedrock:BedrockProvider",
    "inference_pool": "crossway.llm.providers.pool:InferencePoolProvider",
}
"""Provider type -> `module:Class` implementing it."""


def provider_class(kind: str) -> type[Provider]:
    """The class implementing provider type `kind`."""
    try:
        target = PROVIDER_CLASSES[kind]
    except KeyError:
        raise ValueError(f"unknown provider type {kind!r}") from None
    module_name, _, class_name = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls


def build_provider(
    name: str, cfg: ProviderConfig, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> Provider:
    """A provider instance for config `cfg`, named `name` (not started yet); its stream
    translators refuse events larger than `max_event_bytes`."""
    provider = provider_class(cfg.type)(name, cfg)
    provider.max_event_bytes = max_event_bytes
    return provider


__all__ = [
    "PROVIDER_CLASSES",
    "Provider",
    "StreamTranslator",
    "UpstreamRequest",
    "build_provider",
    "provider_class",
]
