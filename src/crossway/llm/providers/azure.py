"""Azure OpenAI: the OpenAI wire format on deployment URLs, with `api-version` and `api-key`.

    {base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}
    {base_url}/openai/v1/chat/completions                       (api_version: v1)

`base_url` is the resource endpoint (`https://RESOURCE.openai.azure.com`); the deployment is
the provider's `deployment`, else the target's model name. Bodies pass through untouched, as
for OpenAI. Azure's content-filter annotations are kept in non-streamed answers; in streams,
the leading chunk that only carries `prompt_filter_results` (no choices, no usage) is dropped
when Crossway translates the stream for another API.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from crossway.config.llm import DEFAULT_AZURE_API_VERSION, ProviderConfig
from crossway.llm.providers.base import Json, StreamTranslator, UpstreamRequest
from crossway.llm.providers.openai import OpenAIProvider

V1_API: Final = "v1"


class AzureOpenAIProvider(OpenAIProvider):
    """An Azure OpenAI resource (or Azure AI Foundry OpenAI endpoint)."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        base = (config.base_url or "").rstrip("/")
        self.resource_url = base.removesuffix("/openai/v1").removesuffix("/openai")
        self.api_version = config.api_version or DEFAULT_AZURE_API_VERSION
        self.deployment = config.deployment
        headers = {k: v for k, v in self.headers.items() if k != "authorization"}
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["api-key"] = config.api_key.get_secret_value()
        headers.update({k.lower(): v.get_secret_value() for k, v in config.headers.items()})
        self.headers = headers
        self.base_url = (
            self.resource_url + "/openai/v1"
            if self.api_version == V1_API
            else self.resource_url + "/openai"
        )

    def url(self, path: str) -> str:
        """URL of an API path not tied to a deployment (the v1 API, or `/models`)."""
        if self.api_version == V1_API:
            return f"{self.resource_url}/openai/v1{path}"
        return f"{self.resource_url}/openai{path}?api-version={self.api_version}"

    def deployment_url(self, model: str, path: str) -> str:
        """URL of `path` (`/chat/completions`, `/embeddings`) on the deployment serving `model`."""
        if self.api_version == V1_API:
            return f"{self.resource_url}/openai/v1{path}"
        deployment = quote(self.deployment or model, safe="")
        return f"{self.resource_url}/openai/deployments/{deployment}{path}?api-version={self.api_version}"

    async def chat_request(self, body: Json, model: str, stream: bool) -> UpstreamRequest:
        request = await super().chat_request(body, model, stream)
        request.url = self.deployment_url(model, "/chat/completions")
        return request

    async def embeddings_request(self, body: Json, model: str) -> UpstreamRequest:
        """The upstream request for an OpenAI embeddings body on `model`'s deployment."""
        request = await super().chat_request(body, model, False)
        request.url = self.deployment_url(model, "/embeddings")
        return request

    def chat_stream(self, model: str) -> StreamTranslator:
        return _AzureStreamDecoder(super().chat_stream(model))


class _AzureStreamDecoder(StreamTranslator):
    """OpenAI stream decoding minus Azure's filter-only chunks (no choices and no usage)."""

    def __init__(self, inner: StreamTranslator) -> None:
        self._inner = inner

    def feed(self, data: bytes) -> list[Json]:
        return [c for c in self._inner.feed(data) if c.get("choices") or c.get("usage")]

    def close(self) -> list[Json]:
        return [c for c in self._inner.close() if c.get("choices") or c.get("usage")]
