"""Provider registry: one class per `type` of provider config."""

from __future__ import annotations

from crossway.config.llm import ProviderConfig
from crossway.llm.providers.base import Provider


def build_provider(name: str, config: ProviderConfig) -> Provider:
    """Build the runtime provider for one configured provider account."""
    if config.type in ("openai", "openai_compatible"):
        from crossway.llm.providers.openai import OpenAIProvider

        return OpenAIProvider(name, config)
    raise ValueError(f"provider type {config.type!r} is not supported yet")
