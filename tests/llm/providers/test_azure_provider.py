"""Azure OpenAI provider: deployment URLs, api-version, api-key, and Azure's stream quirks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from crossway.config.llm import ProviderConfig
from crossway.errors import GatewayError, NotFound, RateLimited
from crossway.llm.providers import build_provider
from crossway.llm.providers.azure import AzureOpenAIProvider
from tests.mocks import azure as mock
from tests.mocks.base import Reply, ToolCall
from tests.mocks.client import call, joined


@pytest.fixture
async def azure_mock() -> AsyncIterator[mock.AzureMock]:
    async with mock.start_azure_mock() as server:
        yield server


def provider(server: mock.AzureMock, **extra: object) -> AzureOpenAIProvider:
    cfg = ProviderConfig.model_validate(
        {"type": "azure", "base_url": server.url, "api_key": mock.API_KEY, **extra}
    )
    p = build_provider("azure", cfg)
    assert isinstance(p, AzureOpenAIProvider)
    return p


def test_urls() -> None:
    cfg = ProviderConfig.model_validate(
        {"type": "azure", "base_url": "https://r.openai.azure.com/openai/", "api_key": "k"}
    )
    p = build_provider("a", cfg)
    assert isinstance(p, AzureOpenAIProvider)
    assert p.deployment_url("gpt-4o", "/chat/completions") == (
        "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    )
    v1 = build_provider("a", cfg.model_copy(update={"api_version": "v1"}))
    assert isinstance(v1, AzureOpenAIProvider)
    assert (
        v1.deployment_url("gpt-4o", "/chat/completions")
        == "https://r.openai.azure.com/openai/v1/chat/completions"
    )
    assert "authorization" not in p.headers and p.headers["api-key"] == "k"


async def test_plain_and_usage(azure_mock: mock.AzureMock) -> None:
    azure_mock.script(Reply(text="Hi from Azure", input_tokens=3, output_tokens=4))
    out = await call(
        provider(azure_mock, api_version="2025-04-01-preview"),
        {"messages": [{"role": "user", "content": "hi"}]},
        "gpt-4o",
    )
    assert out["choices"][0]["message"]["content"] == "Hi from Azure"
    assert out["usage"]["total_tokens"] == 7
    sent = azure_mock.requests[0]
    assert sent.path == "/openai/deployments/gpt-4o/chat/completions"
    assert (
        sent.query == {"api-version": "2025-04-01-preview"}
        and sent.headers["api-key"] == mock.API_KEY
    )


async def test_stream_drops_filter_only_chunk(azure_mock: mock.AzureMock) -> None:
    azure_mock.script(Reply(text="", tool_calls=[ToolCall("f", {"x": 1})]))
    chunks = await call(
        provider(azure_mock, deployment="gpt-4o-mini"),
        {
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "alias",
    )
    assert all(c["choices"] or c.get("usage") for c in chunks)
    result = joined(chunks)
    assert orjson.loads(result["tool_calls"][0]["arguments"]) == {"x": 1}
    assert result["usage"]["total_tokens"] == 19
    assert azure_mock.requests[0].path == "/openai/deployments/gpt-4o-mini/chat/completions"


async def test_v1_api_and_embeddings(azure_mock: mock.AzureMock) -> None:
    p = provider(azure_mock, api_version="v1")
    out = await call(p, {"model": "x", "messages": [{"role": "user", "content": "hi"}]}, "gpt-4o")
    assert out["choices"][0]["finish_reason"] == "stop"
    assert (
        azure_mock.requests[0].path == "/openai/v1/chat/completions"
        and azure_mock.requests[0].json["model"] == "gpt-4o"
    )
    req = await provider(azure_mock).embeddings_request(
        {"model": "e", "input": ["a", "b"]}, "text-embedding-3-small"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(req.url, data=req.body, headers=req.headers) as resp,
    ):
        assert resp.status == 200
        data = provider(azure_mock).embeddings_response(await resp.read(), {})
    assert len(data["data"]) == 2
    assert azure_mock.requests[1].path == "/openai/deployments/text-embedding-3-small/embeddings"


async def test_errors(azure_mock: mock.AzureMock) -> None:
    with pytest.raises(NotFound, match="deployment for this resource does not exist"):
        await call(provider(azure_mock), {"messages": [{"role": "user", "content": "hi"}]}, "nope")
    with pytest.raises(GatewayError) as info:
        await call(
            provider(azure_mock, api_key="bad"),
            {"messages": [{"role": "user", "content": "hi"}]},
            "gpt-4o",
        )
    assert info.value.status_code == 401
    azure_mock.script(
        Reply(
            status=429,
            error_message="Requests to the ChatCompletions_Create Operation have exceeded the call rate limit.",
            retry_after="12",
        )
    )
    with pytest.raises(RateLimited) as info2:
        await call(
            provider(azure_mock), {"messages": [{"role": "user", "content": "hi"}]}, "gpt-4o"
        )
    assert info2.value.headers.get("retry-after") == "12"
