"""Provider config keys: presets, per-type keys, validation messages, and the AWS credential chain."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from crossway.config.llm import PRESET_BASE_URLS, ProviderConfig
from crossway.config.loader import ConfigError, parse_config
from crossway.llm.providers import PROVIDER_CLASSES, build_provider, provider_class
from crossway.llm.providers.bedrock import BedrockProvider
from tests.mocks import bedrock as bedrock_mock
from tests.mocks.client import call

CONFIG = """
routes:
  - name: llm
    backend: llm
backends:
  llm:
    type: llm
    providers:
      p:
{provider}
"""


def load(provider: str) -> ProviderConfig:
    text = CONFIG.format(
        provider="\n".join("        " + line for line in provider.strip().splitlines())
    )
    backend = parse_config(text, env={}).backends["llm"]
    return backend.providers["p"]  # type: ignore[union-attr]


@pytest.mark.parametrize("preset", sorted(PRESET_BASE_URLS))
def test_presets_fill_the_base_url(preset: str) -> None:
    cfg = load(f"type: openai_compatible\npreset: {preset}")
    assert cfg.base_url == PRESET_BASE_URLS[preset]
    assert type(build_provider("p", cfg)).__name__ == "OpenAIProvider"


def test_explicit_base_url_beats_the_preset() -> None:
    assert (
        load("type: openai_compatible\npreset: vllm\nbase_url: http://gpu-box:9000/v1").base_url
        == "http://gpu-box:9000/v1"
    )


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (
            "type: anthropic\nregion: us-east-1",
            "region applies only to type bedrock, not anthropic",
        ),
        ("type: gemini\npreset: groq", "preset applies only to type openai_compatible"),
        (
            "type: openai\nservice_account_file: /x.json",
            "service_account_file applies only to type vertex",
        ),
        ("type: openai_compatible", "openai_compatible needs base_url or preset"),
        ("type: openai_compatible\npreset: nope", "preset"),
        ("type: azure\napi_key: k", "azure needs base_url"),
        (
            "type: bedrock\naws_access_key_id: AKIA",
            "set both aws_access_key_id and aws_secret_access_key",
        ),
        ("type: anthropic\nbase_url: api.anthropic.com", "base_url must start with http"),
        ("type: anthropic\ndefault_max_tokens: 0", "default_max_tokens"),
        ("type: vertex\nservice_account_file: a\nservice_account_json: b", "not both"),
        ("type: bedrock\nregoin: us-east-1", "regoin"),
    ],
)
def test_bad_provider_keys_are_named(provider: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(provider)
    text = str(info.value)
    assert "backends.llm.providers.p" in text and message in text


def test_empty_values_mean_unset() -> None:
    cfg = load(
        'type: bedrock\nregion: ""\naws_access_key_id: ""\naws_secret_access_key: ""\nbase_url: ""'
    )
    assert cfg.region is None and cfg.aws_access_key_id is None and cfg.base_url is None


def test_every_type_has_a_class() -> None:
    for kind in PROVIDER_CLASSES:
        assert provider_class(kind).__name__.endswith("Provider")
    with pytest.raises(ValueError, match="unknown provider type"):
        provider_class("nope")


@pytest.fixture
async def bedrock_server() -> AsyncIterator[bedrock_mock.BedrockMock]:
    async with bedrock_mock.start_bedrock_mock(session_token=bedrock_mock.SESSION_TOKEN) as server:
        yield server


async def test_bedrock_takes_region_and_credentials_from_the_environment(
    bedrock_server: bedrock_mock.BedrockMock, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", bedrock_mock.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bedrock_mock.SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", bedrock_mock.SESSION_TOKEN)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    provider = build_provider(
        "b", ProviderConfig.model_validate({"type": "bedrock", "base_url": bedrock_server.url})
    )
    assert isinstance(provider, BedrockProvider)
    await provider.start()
    assert provider.region == "eu-west-3"
    out = await call(provider, {"messages": [{"role": "user", "content": "hi"}]}, "m")
    assert out["choices"][0]["message"]["content"]
    auth = bedrock_server.requests[0].headers["authorization"]
    assert "/eu-west-3/bedrock/aws4_request" in auth


async def test_bedrock_without_region_fails_requests_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    provider = build_provider(
        "b", ProviderConfig.model_validate({"type": "bedrock", "api_key": "k"})
    )
    await provider.start()
    from crossway.errors import UpstreamError

    with pytest.raises(UpstreamError, match="no AWS region"):
        await provider.chat_request({"messages": [{"role": "user", "content": "x"}]}, "m", False)
