"""Vertex AI provider: service-account tokens, Gemini and Claude publisher routes, against the mock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import orjson
import pytest

from crossway.config.llm import ProviderConfig
from crossway.errors import GatewayError, RateLimited, UpstreamError
from crossway.llm.providers import build_provider
from crossway.llm.providers.google_auth import ServiceAccount
from crossway.llm.providers.vertex import VertexProvider, publisher_of
from tests.mocks import vertex as mock
from tests.mocks.base import Reply, ToolCall
from tests.mocks.client import call, joined


@pytest.fixture
async def vertex_mock() -> AsyncIterator[mock.VertexMock]:
    async with mock.start_vertex_mock() as server:
        yield server


async def provider(server: mock.VertexMock, tmp_path: Path, **extra: object) -> VertexProvider:
    key_file = tmp_path / "sa.json"
    key_file.write_bytes(orjson.dumps(server.service_account()))
    cfg = ProviderConfig.model_validate(
        {
            "type": "vertex",
            "base_url": server.url,
            "location": "europe-west4",
            "service_account_file": str(key_file),
            **extra,
        }
    )
    p = build_provider("vertex", cfg)
    assert isinstance(p, VertexProvider)
    await p.start()
    return p


def test_publisher_and_urls() -> None:
    assert publisher_of("claude-sonnet-4-5@20250929") == ("anthropic", "claude-sonnet-4-5@20250929")
    assert publisher_of("gemini-2.5-pro") == ("google", "gemini-2.5-pro")
    assert publisher_of("anthropic/x") == ("anthropic", "x")
    p = build_provider(
        "v",
        ProviderConfig.model_validate(
            {"type": "vertex", "project": "p1", "location": "us-east5", "api_key": "tok"}
        ),
    )
    assert isinstance(p, VertexProvider)
    assert p.model_url("claude-opus-4-1@20250805", True) == (
        "https://us-east5-aiplatform.googleapis.com/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-opus-4-1@20250805:streamRawPredict"
    )
    g = build_provider(
        "v",
        ProviderConfig.model_validate(
            {"type": "vertex", "project": "p1", "location": "global", "api_key": "tok"}
        ),
    )
    assert isinstance(g, VertexProvider)
    assert g.model_url("gemini-2.5-flash", False) == (
        "https://aiplatform.googleapis.com/v1/projects/p1/locations/global/publishers/google/models/gemini-2.5-flash:generateContent"
    )


def test_assertion_claims(vertex_mock: mock.VertexMock) -> None:
    account = ServiceAccount(vertex_mock.service_account())
    claims = jwt.decode(
        account.assertion(now=time.time()),
        vertex_mock.key.public_key(),
        algorithms=["RS256"],
        audience=account.token_uri,
    )
    assert (
        claims["iss"] == mock.CLIENT_EMAIL
        and claims["scope"] == mock.SCOPE
        and claims["exp"] - claims["iat"] == 3600
    )
    assert jwt.get_unverified_header(account.assertion())["kid"] == "mockkeyid0001"


async def test_gemini_on_vertex_with_cached_token(
    vertex_mock: mock.VertexMock, tmp_path: Path
) -> None:
    p = await provider(vertex_mock, tmp_path)
    try:
        vertex_mock.script(
            Reply(text="Hallo"), Reply(text="Again", tool_calls=[ToolCall("f", {"a": 1})])
        )
        out = await call(p, {"messages": [{"role": "user", "content": "hi"}]}, "gemini-2.5-flash")
        assert out["choices"][0]["message"]["content"] == "Hallo"
        result = joined(
            await call(
                p,
                {"messages": [{"role": "user", "content": "hi"}], "stream": True},
                "gemini-2.5-flash",
            )
        )
        assert result["text"] == "Again" and result["finish_reason"] == "tool_calls"
        assert vertex_mock.token_requests == 1  # one token, cached for both calls
        paths = [r.path for r in vertex_mock.requests if r.path != "/token"]
        assert (
            paths[0]
            == "/v1/projects/mock-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
        )
        assert paths[1].endswith(":streamGenerateContent")
    finally:
        await p.close()


async def test_claude_on_vertex(vertex_mock: mock.VertexMock, tmp_path: Path) -> None:
    p = await provider(vertex_mock, tmp_path, default_max_tokens=256)
    try:
        vertex_mock.script(
            Reply(text="Bonjour", cached_tokens=4), Reply(text="Streamed", thinking="t", pieces=2)
        )
        out = await call(
            p,
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]},
            "claude-sonnet-4-5@20250929",
        )
        assert out["choices"][0]["message"]["content"] == "Bonjour"
        assert out["usage"]["prompt_tokens"] == 16
        sent = vertex_mock.requests[-1].json
        assert (
            sent["anthropic_version"] == "vertex-2023-10-16"
            and "model" not in sent
            and sent["max_tokens"] == 256
        )
        result = joined(
            await call(
                p,
                {"messages": [{"role": "user", "content": "hi"}], "stream": True},
                "claude-sonnet-4-5@20250929",
            )
        )
        assert result["text"] == "Streamed" and result["reasoning"] == "t"
        assert vertex_mock.requests[-1].path.endswith(
            "/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"
        )
    finally:
        await p.close()


async def test_token_refresh_and_errors(tmp_path: Path) -> None:
    # A token valid for less than the refresh margin is fetched again on the next call.
    async with mock.start_vertex_mock(token_lifetime=60) as server:
        p = await provider(server, tmp_path)
        try:
            await call(p, {"messages": [{"role": "user", "content": "hi"}]}, "gemini-2.5-flash")
            await call(p, {"messages": [{"role": "user", "content": "hi"}]}, "gemini-2.5-flash")
            assert server.token_requests == 2
            server.script(
                Reply(
                    status=429,
                    error_message="Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute",
                )
            )
            with pytest.raises(RateLimited):
                await call(p, {"messages": [{"role": "user", "content": "hi"}]}, "gemini-2.5-flash")
            server.script(
                Reply(status=529, error_type="overloaded_error", error_message="Overloaded")
            )
            with pytest.raises(GatewayError) as info:
                await call(p, {"messages": [{"role": "user", "content": "hi"}]}, "claude-haiku-4-5")
            assert info.value.status_code == 529 and info.value.message == "Overloaded"
        finally:
            await p.close()


async def test_bad_key_is_a_502_naming_the_account(
    vertex_mock: mock.VertexMock, tmp_path: Path
) -> None:
    other = mock.VertexMock()
    info = vertex_mock.service_account()
    info["private_key"] = other.service_account()["private_key"]
    cfg = ProviderConfig.model_validate(
        {
            "type": "vertex",
            "base_url": vertex_mock.url,
            "service_account_json": orjson.dumps(info).decode(),
        }
    )
    p = build_provider("v", cfg)
    try:
        with pytest.raises(UpstreamError, match="refused the service account crossway-test@"):
            await call(p, {"messages": [{"role": "user", "content": "hi"}]}, "gemini-2.5-flash")
    finally:
        await p.close()


async def test_missing_key_file_fails_requests_not_start(tmp_path: Path) -> None:
    cfg = ProviderConfig.model_validate(
        {"type": "vertex", "project": "p", "service_account_file": str(tmp_path / "none.json")}
    )
    p = build_provider("v", cfg)
    await p.start()
    with pytest.raises(UpstreamError, match="cannot read service_account_file"):
        await p.chat_request(
            {"messages": [{"role": "user", "content": "x"}]}, "gemini-2.5-flash", False
        )
