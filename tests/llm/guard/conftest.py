"""One gateway with guardrails in front of a mock of every provider kind, for the LLM guard tests.

Routes: `/v1` has the issue's guard (e-mail and phone numbers masked in answers, payment card
numbers refused in requests); `/masked/v1` masks e-mail addresses in requests too. Besides the
shared mocks (`tests.mocks`, `tests.llm.openai_mock`), two OpenAI-compatible ones: `chunky`
writes its streams a few bytes at a time (events split across network chunks) and `gated`
stops in the middle of a stream until the test opens its gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.helpers import start_gateway
from tests.llm import openai_mock
from tests.llm.harness import MockLoop
from tests.mocks import anthropic as anthropic_mock
from tests.mocks import azure as azure_mock
from tests.mocks import bedrock as bedrock_mock
from tests.mocks import gemini as gemini_mock
from tests.mocks import vertex as vertex_mock
from tests.mocks.base import MockServer, RecordedRequest, Reply

GUARD = """
      - type: guardrails
        name: pii
        detectors:
          - {type: pii, entities: [email, phone], response: mask}
          - {type: pii, entities: [credit_card], request: block}
"""
MASKING_GUARD = """
      - type: guardrails
        name: scrub
        detectors:
          - {type: pii, entities: [email], action: mask}
          - {type: pii, entities: [credit_card], request: block}
"""

CONFIG = """
routes:
  - name: guarded
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
{guard}
  - name: masked
    match: {{path: {{prefix: /masked/v1}}}}
    backend: llm
    policies:
{masking}
  - name: plain
    match: {{path: {{prefix: /plain/v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    routing:
      retry: {{retries: 0}}
    providers:
      compat: {{type: openai_compatible, base_url: "{chunky}/v1", api_key: {okey}}}
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
      gated: {{type: openai_compatible, base_url: "{gated}/v1", api_key: {okey}}}
      az: {{type: azure, base_url: "{az}", api_key: {az_key}}}
      ant: {{type: anthropic, base_url: "{ant}", api_key: {ant_key}}}
      bed:
        type: bedrock
        base_url: "{bed}"
        region: us-east-1
        aws_access_key_id: {aws_id}
        aws_secret_access_key: {aws_secret}
      gem: {{type: gemini, base_url: "{gem}/v1beta", api_key: {gem_key}}}
      vx: {{type: vertex, base_url: "{vx}", location: us-east5, service_account_file: "{sa_file}"}}
    models:
      - name: openai-compatible
        targets: [{{provider: compat, model: compat-model}}]
      - name: openai
        targets: [{{provider: oa, model: gpt-4o}}]
      - name: gated
        targets: [{{provider: gated, model: gated-model}}]
      - name: azure
        targets: [{{provider: az, model: gpt-4o}}]
      - name: anthropic
        targets: [{{provider: ant, model: claude-sonnet-4-5}}]
      - name: bedrock
        targets: [{{provider: bed, model: "anthropic.claude-3-haiku-20240307-v1:0"}}]
      - name: gemini
        targets: [{{provider: gem, model: gemini-2.5-flash}}]
      - name: vertex-gemini
        targets: [{{provider: vx, model: gemini-2.5-pro}}]
      - name: vertex-claude
        targets: [{{provider: vx, model: "claude-sonnet-4-5@20250929"}}]
"""

PROVIDERS = [
    "openai-compatible",
    "openai",
    "azure",
    "anthropic",
    "bedrock",
    "gemini",
    "vertex-gemini",
    "vertex-claude",
]
"""Every provider kind (Vertex serves Gemini and Claude models, each translated its own way)."""
CHUNK_BYTES = 5
"""How many bytes the `chunky` mock writes at a time."""
GATE_TIMEOUT = 10.0
"""How long the `gated` mock waits for its gate (a test failing to open it fails, not hangs)."""


class ChunkyMock(MockServer):
    """OpenAI's API whose streams are written `CHUNK_BYTES` at a time."""

    def __init__(self) -> None:
        super().__init__(self._serve)

    async def _serve(
        self, server: MockServer, request: web.Request, recorded: RecordedRequest
    ) -> web.StreamResponse:
        body = _json(recorded.body)
        if not (isinstance(body, dict) and body.get("stream")):
            return await openai_mock.handle(server, request, recorded)
        reply = self.next_reply()
        if recorded.path.endswith("/responses"):
            events = openai_mock.response_events(reply, body["model"])
        else:
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = openai_mock.stream_events(reply, body["model"], usage)
        data = b"".join(events)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for at in range(0, len(data), CHUNK_BYTES):
            await response.write(data[at : at + CHUNK_BYTES])
        await response.write_eof()
        return response


class GatedMock(MockServer):
    """OpenAI Chat streams that stop after `before` content events until `gate` is set."""

    def __init__(self) -> None:
        super().__init__(self._serve)
        self.gate: asyncio.Event | None = None
        self.before = 0
        self.timed_out = False
        self.finished = False

    async def _serve(
        self, server: MockServer, request: web.Request, recorded: RecordedRequest
    ) -> web.StreamResponse:
        body = _json(recorded.body)
        if not (isinstance(body, dict) and body.get("stream")):
            return await openai_mock.handle(server, request, recorded)
        reply = self.next_reply()
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = openai_mock.stream_events(reply, body["model"], usage)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        cut = 1 + self.before  # the role chunk, then the content chunks before the gate
        for event in events[:cut]:
            await response.write(event)
        assert self.gate is not None
        try:
            await asyncio.wait_for(self.gate.wait(), GATE_TIMEOUT)
        except TimeoutError:
            self.timed_out = True
        for event in events[cut:]:
            await response.write(event)
        await response.write_eof()
        self.finished = True
        return response


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


@dataclass
class GuardStack:
    """The gateway and its mocks, by model name."""

    url: str
    loop: MockLoop
    mocks: dict[str, MockServer]

    def mock(self, model: str) -> MockServer:
        return self.mocks[model]

    def upstream_requests(self, model: str) -> list[RecordedRequest]:
        """What the model's mock received (Vertex's token requests left out)."""
        return [r for r in self.mock(model).requests if r.path != "/token"]

    def reset(self) -> None:
        for server in set(self.mocks.values()):
            server.replies.clear()
            server.requests.clear()
            server.default = Reply()


@pytest.fixture(scope="session")
def _guard_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardStack]:
    loop = MockLoop()
    try:
        chunky = loop.start(ChunkyMock())
        oa = loop.start(openai_mock.openai_mock())
        gated = loop.start(GatedMock())
        az = loop.start(azure_mock.AzureMock({"gpt-4o"}))
        ant = loop.start(MockServer(anthropic_mock.handle))
        bed = loop.start(bedrock_mock.BedrockMock())
        gem = loop.start(MockServer(gemini_mock.handle))
        vx = loop.start(vertex_mock.VertexMock())
        sa_file = Path(tmp_path_factory.mktemp("vertex")) / "sa.json"
        sa_file.write_bytes(orjson.dumps(vx.service_account()))  # type: ignore[attr-defined]
        config = CONFIG.format(
            guard=GUARD.rstrip("\n"),
            masking=MASKING_GUARD.rstrip("\n"),
            chunky=chunky.url,
            oa=oa.url,
            gated=gated.url,
            okey=openai_mock.API_KEY,
            az=az.url,
            az_key=azure_mock.API_KEY,
            ant=ant.url,
            ant_key=anthropic_mock.API_KEY,
            bed=bed.url,
            aws_id=bedrock_mock.ACCESS_KEY,
            aws_secret=bedrock_mock.SECRET_KEY,
            gem=gem.url,
            gem_key=gemini_mock.API_KEY,
            vx=vx.url,
            sa_file=sa_file,
        )
        mocks = {
            "openai-compatible": chunky,
            "openai": oa,
            "gated": gated,
            "azure": az,
            "anthropic": ant,
            "bedrock": bed,
            "gemini": gem,
            "vertex-gemini": vx,
            "vertex-claude": vx,
        }
        with start_gateway(config) as gateway:
            yield GuardStack(gateway.url, loop, mocks)
    finally:
        loop.close()


@pytest.fixture
def stack(_guard_stack: GuardStack) -> Iterator[GuardStack]:
    """The shared gateway, with every mock's script and recordings cleared."""
    _guard_stack.reset()
    yield _guard_stack
    _guard_stack.reset()


class Tee:
    """Keeps every byte of the responses an SDK reads (`raw`), so a test sees what the SDK
    parsed and the wire bytes it parsed it from. `client(httpx)` for the openai SDK,
    `client(httpx2)` for the anthropic SDK (each wants its own package's client)."""

    def __init__(self) -> None:
        self.raw = bytearray()

    def client(self, module: Any) -> Any:
        raw = self.raw

        class TeeStream(module.SyncByteStream):  # type: ignore[misc, name-defined]
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def __iter__(self) -> Iterator[bytes]:
                for chunk in self._inner:
                    raw.extend(chunk)
                    yield chunk

            def close(self) -> None:
                self._inner.close()

        class TeeTransport(module.HTTPTransport):  # type: ignore[misc, name-defined]
            def handle_request(self, request: Any) -> Any:
                response = super().handle_request(request)
                response.stream = TeeStream(response.stream)
                return response

        return module.Client(transport=TeeTransport())
