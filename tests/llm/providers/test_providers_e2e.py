"""Every translated provider end to end: the official `openai` and `anthropic` SDKs talk to a real
`crossway serve`, which talks to each provider's mock (Anthropic, Gemini, Bedrock with SigV4,
Azure OpenAI, Vertex AI with service-account tokens). Plain, streamed, tools, usage, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai
import orjson
import pytest

from tests.helpers import start_gateway
from tests.llm.harness import MockLoop
from tests.mocks import anthropic as anthropic_mock
from tests.mocks import azure as azure_mock
from tests.mocks import bedrock as bedrock_mock
from tests.mocks import gemini as gemini_mock
from tests.mocks import vertex as vertex_mock
from tests.mocks.base import MockServer, Reply, ToolCall

CONFIG = """
routes:
  - name: llm
    match:
      path:
        prefix: /v1
    backend: llm
backends:
  llm:
    type: llm
    routing:
      retry:
        retries: 0
    providers:
      ant: {{type: anthropic, base_url: "{ant}", api_key: {ant_key}}}
      gem: {{type: gemini, base_url: "{gem}/v1beta", api_key: {gem_key}}}
      bed:
        type: bedrock
        base_url: "{bed}"
        region: us-east-1
        aws_access_key_id: {aws_id}
        aws_secret_access_key: {aws_secret}
      az: {{type: azure, base_url: "{az}", api_key: {az_key}}}
      vx: {{type: vertex, base_url: "{vx}", location: us-east5, service_account_file: "{sa_file}"}}
    models:
      - name: claude
        targets: [{{provider: ant, model: claude-sonnet-4-5}}]
      - name: gemini
        targets: [{{provider: gem, model: gemini-2.5-flash}}]
      - name: bedrock
        targets: [{{provider: bed, model: "anthropic.claude-3-haiku-20240307-v1:0"}}]
      - name: azure
        targets: [{{provider: az, model: gpt-4o}}]
      - name: vertex-gemini
        targets: [{{provider: vx, model: gemini-2.5-pro}}]
      - name: vertex-claude
        targets: [{{provider: vx, model: "claude-sonnet-4-5@20250929"}}]
      - name: claude-anywhere
        timeouts: {{connect: 0.5, first_byte: 0.5, idle: 5}}
        targets:
          - {{provider: ant, model: claude-sonnet-4-5, priority: 0}}
          - {{provider: bed, model: "anthropic.claude-sonnet-4-5-v1:0", priority: 1}}
          - {{provider: vx, model: "claude-sonnet-4-5@20250929", priority: 2}}
"""

MODELS = ["claude", "gemini", "bedrock", "azure", "vertex-gemini", "vertex-claude"]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]


@dataclass
class ProviderStack:
    url: str
    mocks: dict[str, MockServer]

    def mock(self, model: str) -> MockServer:
        return self.mocks[model]

    def reset(self) -> None:
        for server in set(self.mocks.values()):
            server.replies.clear()
            server.requests.clear()
            server.default = Reply()


@pytest.fixture(scope="module")
def _provider_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderStack]:
    loop = MockLoop()

    def started(factory: object) -> MockServer:
        server = factory  # a not-yet-started MockServer
        assert isinstance(server, MockServer)
        return loop.start(server)

    try:
        ant = started(MockServer(anthropic_mock.handle))
        gem = started(MockServer(gemini_mock.handle))
        bed = started(bedrock_mock.BedrockMock())
        az = started(azure_mock.AzureMock({"gpt-4o"}))
        vx = started(vertex_mock.VertexMock())
        sa_file = Path(tmp_path_factory.mktemp("vertex")) / "sa.json"
        sa_file.write_bytes(orjson.dumps(vx.service_account()))  # type: ignore[attr-defined]
        config = CONFIG.format(
            ant=ant.url,
            ant_key=anthropic_mock.API_KEY,
            gem=gem.url,
            gem_key=gemini_mock.API_KEY,
            bed=bed.url,
            aws_id=bedrock_mock.ACCESS_KEY,
            aws_secret=bedrock_mock.SECRET_KEY,
            az=az.url,
            az_key=azure_mock.API_KEY,
            vx=vx.url,
            sa_file=sa_file,
        )
        mocks = {
            "claude": ant,
            "gemini": gem,
            "bedrock": bed,
            "azure": az,
            "vertex-gemini": vx,
            "vertex-claude": vx,
        }
        with start_gateway(config) as gateway:
            yield ProviderStack(gateway.url, mocks)
    finally:
        loop.close()


@pytest.fixture
def stack(_provider_stack: ProviderStack) -> Iterator[ProviderStack]:
    _provider_stack.reset()
    yield _provider_stack
    _provider_stack.reset()


def oai(stack: ProviderStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)


def upstream_requests(server: MockServer) -> list[object]:
    return [r for r in server.requests if r.path != "/token"]


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_plain(stack: ProviderStack, model: str) -> None:
    stack.mock(model).script(Reply(text=f"Hello from {model}", input_tokens=11, output_tokens=5))
    resp = oai(stack).chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    )
    # Translated answers carry the client's model name; passed-through ones (Azure) the upstream's.
    assert resp.model == ("gpt-4o" if model == "azure" else model)
    assert resp.choices[0].message.content == f"Hello from {model}"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        11,
        5,
        16,
    )
    assert len(upstream_requests(stack.mock(model))) == 1


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_stream_with_usage(stack: ProviderStack, model: str) -> None:
    stack.mock(model).script(
        Reply(text="one two three four", pieces=4, input_tokens=8, output_tokens=4)
    )
    stream = oai(stack).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    usage = None
    finish = None
    for chunk in stream:
        if model != "azure":  # Azure's leading filter-results chunk has model ""
            assert chunk.model == model
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "one two three four"
    assert finish == "stop"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (8, 4)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("streamed", [False, True])
def test_openai_sdk_tools_round_trip(stack: ProviderStack, model: str, streamed: bool) -> None:
    server = stack.mock(model)
    server.script(
        Reply(
            text="",
            tool_calls=[
                ToolCall("get_weather", {"city": "Paris"}),
                ToolCall("get_weather", {"city": "Rome"}),
            ],
        ),
        Reply(text="Paris is sunny, Rome is rainy."),
    )
    client = oai(stack)
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    if streamed:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for chunk in client.chat.completions.create(
            model=model, messages=messages, tools=TOOLS, stream=True
        ):  # type: ignore[arg-type]
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for tc in choice.delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = tc.id or slot["id"]
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += tc.function.arguments or ""
        tool_calls = [calls[i] for i in sorted(calls)]
        assert finish == "tool_calls"
    else:
        resp = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
        assert resp.choices[0].finish_reason == "tool_calls"
        tool_calls = [
            {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
            for tc in resp.choices[0].message.tool_calls or []
            if tc.type == "function"
        ]
    assert [(t["name"], orjson.loads(t["arguments"])) for t in tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert all(t["id"] for t in tool_calls)
    # Send both results back; each mock checks they answer the calls as its API requires.
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": t["id"],
                    "type": "function",
                    "function": {"name": t["name"], "arguments": t["arguments"]},
                }
                for t in tool_calls
            ],
        }
    )
    messages += [
        {"role": "tool", "tool_call_id": tool_calls[0]["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": tool_calls[1]["id"], "content": "rainy"},
    ]
    final = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    assert final.choices[0].message.content == "Paris is sunny, Rome is rainy."


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_sees_rate_limit_with_retry_after(stack: ProviderStack, model: str) -> None:
    stack.mock(model).default = Reply(status=429, error_message="slow down please", retry_after="9")
    with pytest.raises(openai.RateLimitError) as info:
        oai(stack).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}]
        )
    assert info.value.status_code == 429
    assert "slow down please" in str(info.value.message)
    assert info.value.response.headers.get("retry-after") == "9"


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_stream_cut_ends_with_error(stack: ProviderStack, model: str) -> None:
    stack.mock(model).script(Reply(text="a b c d e f g h", pieces=8, cut_after=4))
    with pytest.raises(openai.APIError):
        for _ in oai(stack).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], stream=True
        ):
            pass


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_plain_and_stream(stack: ProviderStack, model: str) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="unused", max_retries=0)
    stack.mock(model).script(
        Reply(text="Plain answer", input_tokens=6, output_tokens=2),
        Reply(text="Streamed answer", pieces=3),
    )
    msg = client.messages.create(
        model=model,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "Plain answer"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (6, 2)
    with client.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Streamed answer"
    assert final.usage.output_tokens == 7


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_tool_use(stack: ProviderStack, model: str) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="unused", max_retries=0)
    stack.mock(model).script(Reply(text="", tool_calls=[ToolCall("get_weather", {"city": "Oslo"})]))
    msg = client.messages.create(
        model=model,
        max_tokens=100,
        tools=[
            {
                "name": "get_weather",
                "description": "Weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    )
    assert msg.stop_reason == "tool_use"
    (use,) = [b for b in msg.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Oslo"}


def test_bedrock_requests_were_signed(stack: ProviderStack) -> None:
    oai(stack).chat.completions.create(
        model="bedrock", messages=[{"role": "user", "content": "Hi"}]
    )
    (req,) = stack.mock("bedrock").requests
    assert req.path == "/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
    assert req.headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=" + bedrock_mock.ACCESS_KEY
    )


async def test_concurrent_streams_through_every_provider(stack: ProviderStack) -> None:
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)

    async def one(model: str) -> str:
        text = ""
        async for chunk in await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], stream=True
        ):
            for choice in chunk.choices:
                text += choice.delta.content or ""
        return text

    try:
        results = await asyncio.gather(*(one(m) for m in MODELS for _ in range(3)))
    finally:
        await client.close()
    assert set(results) == {"Hello from the mock!"}


def test_failover_across_providers(stack: ProviderStack) -> None:
    """Anthropic overloaded (529) -> Bedrock resets the connection -> Vertex serves, in one call."""
    ant, bed, vx = stack.mock("claude"), stack.mock("bedrock"), stack.mock("vertex-claude")
    ant.script(Reply(status=529, error_type="overloaded_error", error_message="Overloaded"))
    bed.script(Reply(reset=True))
    vx.script(Reply(text="served by vertex"))
    resp = oai(stack).chat.completions.create(
        model="claude-anywhere", messages=[{"role": "user", "content": "Hi"}]
    )
    assert resp.choices[0].message.content == "served by vertex"
    assert len(ant.requests) == 1 and len(bed.requests) == 1 and len(upstream_requests(vx)) == 1


def test_stream_fails_over_on_slow_first_byte(stack: ProviderStack) -> None:
    """Anthropic sends nothing within connect + first_byte (1 s): Bedrock serves the stream."""
    ant, bed = stack.mock("claude"), stack.mock("bedrock")
    ant.script(Reply(delay=3.0, text="too late"))
    bed.script(Reply(text="fast bedrock", pieces=2))
    text = ""
    for chunk in oai(stack).chat.completions.create(
        model="claude-anywhere", messages=[{"role": "user", "content": "Hi"}], stream=True
    ):
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert text == "fast bedrock"
    assert bed.requests[0].path.endswith("/converse-stream")


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_structured_output(stack: ProviderStack, model: str) -> None:
    """`chat.completions.parse` with a pydantic model: JSON mode on every provider (a forced tool
    call on Claude models, responseSchema on Gemini, the client's own format on Azure)."""
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        temp: float

    answer = {"city": "Paris", "temp": 21.5}
    if "claude" in model or model == "bedrock":
        stack.mock(model).script(
            Reply(text="", tool_calls=[ToolCall("crossway_json_response", answer)])
        )
    else:
        stack.mock(model).script(Reply(text=orjson.dumps(answer).decode()))
    resp = oai(stack).chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "Weather?"}], response_format=Weather
    )
    assert resp.choices[0].message.parsed == Weather(city="Paris", temp=21.5)
    sent = upstream_requests(stack.mock(model))[-1].json
    if model == "gemini" or model == "vertex-gemini":
        assert sent["generationConfig"]["responseMimeType"] == "application/json"
        assert sent["generationConfig"]["responseSchema"]["required"] == ["city", "temp"]
    elif model == "azure":
        assert sent["response_format"]["type"] == "json_schema"
    else:
        assert "crossway_json_response" in orjson.dumps(sent).decode()
