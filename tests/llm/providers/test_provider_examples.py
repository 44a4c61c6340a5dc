"""Each provider example in examples/ really serves: `crossway serve` runs the file as shipped,
with only its environment variables pointing at the provider's mock, and the OpenAI SDK gets an
answer through it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import orjson
import pytest

from tests.helpers import ROOT, start_gateway
from tests.llm.harness import MockLoop
from tests.mocks import anthropic as anthropic_mock
from tests.mocks import azure as azure_mock
from tests.mocks import bedrock as bedrock_mock
from tests.mocks import gemini as gemini_mock
from tests.mocks import vertex as vertex_mock
from tests.mocks.base import MockServer, Reply


@pytest.fixture(scope="module")
def loop() -> Iterator[MockLoop]:
    mock_loop = MockLoop()
    yield mock_loop
    mock_loop.close()


def _anthropic(server: MockServer, tmp: Path) -> dict[str, str]:
    return {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": anthropic_mock.API_KEY}


def _gemini(server: MockServer, tmp: Path) -> dict[str, str]:
    return {"GEMINI_BASE_URL": server.url + "/v1beta", "GEMINI_API_KEY": gemini_mock.API_KEY}


def _bedrock(server: MockServer, tmp: Path) -> dict[str, str]:
    return {
        "BEDROCK_BASE_URL": server.url,
        "AWS_ACCESS_KEY_ID": bedrock_mock.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": bedrock_mock.SECRET_KEY,
        "AWS_REGION": "us-west-2",
    }


def _azure(server: MockServer, tmp: Path) -> dict[str, str]:
    return {
        "AZURE_OPENAI_ENDPOINT": server.url,
        "AZURE_OPENAI_API_KEY": azure_mock.API_KEY,
        "AZURE_OPENAI_DEPLOYMENT": "prod-4o",
    }


def _vertex(server: MockServer, tmp: Path) -> dict[str, str]:
    assert isinstance(server, vertex_mock.VertexMock)
    key = tmp / "sa.json"
    key.write_bytes(orjson.dumps(server.service_account()))
    return {"VERTEX_BASE_URL": server.url, "GOOGLE_APPLICATION_CREDENTIALS": str(key)}


CASES: dict[
    str, tuple[Callable[[], MockServer], Callable[[MockServer, Path], dict[str, str]], str, str]
] = {
    # example: (mock factory, env for the example, model the client asks for, upstream path it must hit)
    "anthropic.yaml": (
        lambda: MockServer(anthropic_mock.handle),
        _anthropic,
        "claude-sonnet-4-5",
        "/v1/messages",
    ),
    "gemini.yaml": (
        lambda: MockServer(gemini_mock.handle),
        _gemini,
        "gemini-2.5-flash",
        "/v1beta/models/gemini-2.5-flash:generateContent",
    ),
    "bedrock.yaml": (
        bedrock_mock.BedrockMock,
        _bedrock,
        "claude-haiku",
        "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
    ),
    "azure.yaml": (
        lambda: azure_mock.AzureMock({"prod-4o"}),
        _azure,
        "gpt-4o",
        "/openai/deployments/prod-4o/chat/completions",
    ),
    "vertex.yaml": (
        vertex_mock.VertexMock,
        _vertex,
        "gemini-2.5-pro",
        "/v1/projects/mock-project/locations/us-east5/publishers/google/models/gemini-2.5-pro:generateContent",
    ),
}


@pytest.mark.parametrize("example", sorted(CASES))
def test_example_serves(example: str, loop: MockLoop, tmp_path: Path) -> None:
    factory, env_for, model, path = CASES[example]
    server = loop.start(factory())
    server.script(Reply(text=f"served by {example}"))
    with start_gateway(
        (ROOT / "examples" / example).read_text(), env=env_for(server, tmp_path)
    ) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        resp = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    assert resp.choices[0].message.content == f"served by {example}"
    assert [r.path for r in server.requests if r.path != "/token"] == [path]
