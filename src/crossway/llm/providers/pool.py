"""`type: inference_pool`: a pool of OpenAI-compatible model servers (vLLM, SGLang, TGI,
TensorRT-LLM) behind one provider name. Requests are built as for any OpenAI-compatible
server; the backend asks the pool (`crossway.inference.pool`) which endpoint to send each one
to, and sends it there (`LlmBackend._attempt_pool`)."""

from __future__ import annotations

from typing import Final

from crossway.config.llm import ProviderConfig
from crossway.inference.pool import InferencePool
from crossway.llm.providers.openai import OpenAIProvider

POOL_BASE: Final = "pool:"
"""The base URL requests are built with; the chosen endpoint's base URL replaces it."""


class InferencePoolProvider(OpenAIProvider):
    """An OpenAI-compatible provider whose base URL is chosen per request."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        assert config.pool is not None  # the config validator requires it
        self.base_url = POOL_BASE
        self.pool = self.endpoints_pool = InferencePool(
            name,
            config.pool,
            endpoint_cooldown=config.pool.scheduler.endpoint_cooldown,
            failures_to_cool=3,
        )

    def url(self, path: str) -> str:
        if path == "/models":  # a listing: any ready endpoint answers it
            endpoints = self.endpoints_pool.endpoints
            ready = [e for e in endpoints if e.ready] or endpoints
            if ready:
                return ready[0].base_url + path
        return POOL_BASE + path

    async def start(self) -> None:
        await self.endpoints_pool.start()

    async def close(self) -> None:
        await self.endpoints_pool.close()
