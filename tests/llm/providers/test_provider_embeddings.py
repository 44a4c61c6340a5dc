"""Embeddings on the translated providers: Gemini batchEmbedContents, Bedrock Titan / Cohere."""

from __future__ import annotations

import base64
import struct

import aiohttp
import pytest

from crossway.config.llm import ProviderConfig
from crossway.errors import BadRequest
from crossway.llm.providers import build_provider
from crossway.llm.providers.base import Json, Provider
from tests.mocks import anthropic as anthropic_mock
from tests.mocks import bedrock as bedrock_mock
from tests.mocks import gemini as gemini_mock
from tests.mocks.base import Reply


async def embed(provider: Provider, body: Json, model: str) -> Json:
    req = await provider.embeddings_request(body, model)
    async with (
        aiohttp.ClientSession() as session,
        session.post(req.url, data=req.body, headers=req.headers) as resp,
    ):
        data = await resp.read()
        if resp.status != 200:
            raise provider.error(resp.status, dict(resp.headers), data)
        return provider.embeddings_response(data, body)


async def test_gemini_batch_embeddings_float_and_base64() -> None:
    async with gemini_mock.start_gemini_mock() as server:
        p = build_provider(
            "g",
            ProviderConfig.model_validate(
                {
                    "type": "gemini",
                    "base_url": server.url + "/v1beta",
                    "api_key": gemini_mock.API_KEY,
                }
            ),
        )
        body = {"model": "emb", "input": ["hello", "world!"], "dimensions": 4}
        out = await embed(p, body, "gemini-embedding-001")
        assert [d["embedding"] for d in out["data"]] == [
            gemini_mock.vector("hello", 4),
            gemini_mock.vector("world!", 4),
        ]
        assert out["model"] == "emb" and out["usage"]["prompt_tokens"] == 2
        packed = await embed(p, {**body, "encoding_format": "base64"}, "gemini-embedding-001")
        raw = base64.b64decode(packed["data"][0]["embedding"])
        assert list(struct.unpack("<4f", raw)) == pytest.approx(gemini_mock.vector("hello", 4))
        assert server.requests[0].path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"


async def test_bedrock_titan_and_cohere_embeddings() -> None:
    async with bedrock_mock.start_bedrock_mock() as server:
        cfg = {
            "type": "bedrock",
            "base_url": server.url,
            "region": "us-east-1",
            "aws_access_key_id": bedrock_mock.ACCESS_KEY,
            "aws_secret_access_key": bedrock_mock.SECRET_KEY,
        }
        p = build_provider("b", ProviderConfig.model_validate(cfg))
        server.script(Reply(input_tokens=3))
        out = await embed(
            p, {"model": "t", "input": "hi there", "dimensions": 5}, "amazon.titan-embed-text-v2:0"
        )
        assert out["data"][0]["embedding"] == bedrock_mock.vector("hi there", 5)
        assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
        out = await embed(p, {"model": "c", "input": ["a", "b", "c"]}, "cohere.embed-english-v3")
        assert len(out["data"]) == 3 and out["data"][2]["index"] == 2
        assert [r.path for r in server.requests] == [
            "/model/amazon.titan-embed-text-v2:0/invoke",
            "/model/cohere.embed-english-v3/invoke",
        ]
        with pytest.raises(BadRequest, match="one input"):
            await p.embeddings_request({"input": ["a", "b"]}, "amazon.titan-embed-text-v2:0")
        with pytest.raises(BadRequest, match="not a Bedrock embeddings model"):
            await p.embeddings_request({"input": "a"}, "anthropic.claude-3-haiku-20240307-v1:0")


async def test_providers_without_embeddings_say_so() -> None:
    p = build_provider(
        "a", ProviderConfig.model_validate({"type": "anthropic", "api_key": anthropic_mock.API_KEY})
    )
    with pytest.raises(BadRequest, match="does not serve embeddings"):
        await p.embeddings_request({"input": "x"}, "claude")
    with pytest.raises(BadRequest, match="token arrays"):
        await build_provider(
            "g", ProviderConfig.model_validate({"type": "gemini", "api_key": "k"})
        ).embeddings_request({"input": [[1, 2]]}, "e")
