"""`/v1/embeddings` through the gateway with the official `openai` SDK, against every provider:
bytes passed through to OpenAI-style ones, translated for Gemini and Bedrock, a 400 naming the
provider type for those without an embeddings API."""

from __future__ import annotations

import base64
import struct

import openai
import pytest

from tests.llm.harness import LlmStack
from tests.mocks import bedrock as bedrock_mock
from tests.mocks import gemini as gemini_mock
from tests.mocks.base import Reply


def oai(stack: LlmStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key="x", max_retries=0)


def test_openai_bytes_pass_through(stack: LlmStack) -> None:
    stack.oa.default = Reply(input_tokens=3)
    resp = oai(stack).embeddings.create(model="embed", input=["a", "b"], dimensions=4)
    assert [d.index for d in resp.data] == [0, 1] and len(resp.data[0].embedding) == 4
    sent = stack.oa.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.json["model"] == "text-embedding-3-small" and sent.json["dimensions"] == 4
    assert resp.usage.prompt_tokens == 6


def test_azure_deployment_url(stack: LlmStack) -> None:
    resp = oai(stack).embeddings.create(model="embed-azure", input="hello")
    assert len(resp.data) == 1 and len(resp.data[0].embedding) == 4
    sent = stack.az.requests[-1]
    assert sent.path == "/openai/deployments/text-embedding-3-small/embeddings"
    assert sent.query["api-version"] and sent.headers["api-key"]


def test_gemini_batch_embed_contents(stack: LlmStack) -> None:
    resp = oai(stack).embeddings.create(model="embed-gemini", input=["hello", "world!"])
    assert resp.data[0].embedding == pytest.approx(gemini_mock.vector("hello", 8))
    assert resp.data[1].embedding == pytest.approx(gemini_mock.vector("world!", 8))
    assert resp.model == "embed-gemini"
    assert stack.gem.requests[-1].path.endswith("/models/gemini-embedding-001:batchEmbedContents")


def test_gemini_base64_and_dimensions(stack: LlmStack) -> None:
    # The SDK asks for base64 by default when the caller did not choose, and decodes it.
    resp = oai(stack).embeddings.create(model="embed-gemini", input="hello", dimensions=3)
    assert resp.data[0].embedding == pytest.approx(gemini_mock.vector("hello", 3))
    raw = oai(stack).embeddings.with_raw_response.create(
        model="embed-gemini", input="hello", dimensions=3, encoding_format="base64"
    )
    packed = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(packed, str)
    values = struct.unpack("<3f", base64.b64decode(packed))
    assert list(values) == pytest.approx(gemini_mock.vector("hello", 3))


def test_bedrock_titan_and_cohere(stack: LlmStack) -> None:
    stack.bed.default = Reply(input_tokens=5)
    resp = oai(stack).embeddings.create(model="embed-titan", input="hi there", dimensions=5)
    assert resp.data[0].embedding == pytest.approx(bedrock_mock.vector("hi there", 5))
    assert resp.usage.prompt_tokens == 5
    resp = oai(stack).embeddings.create(model="embed-cohere", input=["a", "b", "c"])
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert [r.path for r in stack.bed.requests] == [
        "/model/amazon.titan-embed-text-v2:0/invoke",
        "/model/cohere.embed-english-v3/invoke",
    ]
    with pytest.raises(openai.BadRequestError, match="one input"):
        oai(stack).embeddings.create(model="embed-titan", input=["a", "b"])


def test_providers_without_embeddings_get_a_400_naming_the_type(stack: LlmStack) -> None:
    for model, kind in (("claude-embed", "anthropic"), ("embed-vertex", "vertex")):
        with pytest.raises(openai.BadRequestError) as info:
            oai(stack).embeddings.create(model=model, input="a")
        assert f"provider type {kind}" in info.value.message
        assert info.value.code == "embeddings_not_supported"
    assert stack.ant.requests == [] and stack.vx.requests == []


def test_embedding_providers_fail_over_and_skip_those_without(stack: LlmStack) -> None:
    stack.gem.script(Reply(status=503))
    resp = oai(stack).embeddings.create(model="embed-failover", input="x")
    assert len(resp.data[0].embedding) == 4  # the OpenAI mock's size: the third target served
    assert stack.ant.requests == []
    assert len(stack.gem.requests) == 1
    assert stack.oc.requests[-1].json["model"] == "text-embedding-3-large"
