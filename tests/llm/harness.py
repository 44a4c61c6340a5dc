"""A whole LLM gateway for end-to-end tests: mock providers on a background event loop (so sync
SDK clients work too) and one `crossway serve` process in front of them."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from tests.helpers import Gateway, free_port, start_gateway
from tests.llm.openai_mock import API_KEY as OPENAI_KEY
from tests.llm.openai_mock import openai_mock
from tests.mocks import anthropic as anthropic_mock
from tests.mocks import azure as azure_mock
from tests.mocks import bedrock as bedrock_mock
from tests.mocks import gemini as gemini_mock
from tests.mocks import vertex as vertex_mock
from tests.mocks.base import MockServer, Reply


class MockLoop:
    """Runs mock servers on an event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[MockServer] = []

    def start(self, server: MockServer) -> MockServer:
        asyncio.run_coroutine_threadsafe(server.start(), self.loop).result(10)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            asyncio.run_coroutine_threadsafe(server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class LlmStack:
    """The gateway and the mocks behind it: `oa`, `ob`, `oc` (OpenAI), `ant` (Anthropic), `gem`
    (Gemini), `bed` (Bedrock, SigV4), `az` (Azure OpenAI), `vx` (Vertex AI)."""

    gateway: Gateway
    oa: MockServer
    ob: MockServer
    oc: MockServer
    ant: MockServer
    gem: MockServer
    bed: MockServer
    az: MockServer
    vx: MockServer

    @property
    def mocks(self) -> list[MockServer]:
        return [self.oa, self.ob, self.oc, self.ant, self.gem, self.bed, self.az, self.vx]

    def reset(self) -> None:
        for mock in self.mocks:
            mock.replies.clear()
            mock.requests.clear()
            mock.default = Reply()

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.gateway.admin_url + "/metrics") as resp:
            return str(resp.read().decode())


CONFIG = """
routes:
  - name: llm
    match:
      path:
        prefix: /v1
    backend: llm
  - name: tight
    match:
      path:
        prefix: /tight/v1
    backend: tight
  - name: patient
    match:
      path:
        prefix: /patient/v1
    backend: patient
backends:
  tight:
    type: llm
    routing:
      deadline: 1.5
      retry: {{retries: 3, backoff_base: 0.01, backoff_max: 0.05, max_retry_after: 30}}
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
    models:
      - name: tight-one
        targets: [{{provider: oa, model: tight-a}}]
  patient:
    type: llm
    routing:
      retry: {{retries: 2, backoff_base: 6, backoff_max: 6}}
    providers:
      oc: {{type: openai, base_url: "{oc}/v1", api_key: {okey}}}
    models:
      - name: patient-one
        targets: [{{provider: oc, model: patient-c}}]
  llm:
    type: llm
    routing:
      retry:
        retries: 2
        backoff_base: 0.01
        backoff_max: 0.05
        max_retry_after: 5
      cooldown:
        failures: 2
        seconds: 60
    prices:
      priced-model: {{input: 1.0, output: 2.0, cached_input: 0.5}}
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
      ob: {{type: openai, base_url: "{ob}/v1", api_key: {okey}}}
      oc: {{type: openai, base_url: "{oc}/v1", api_key: {okey}}}
      ant: {{type: anthropic, base_url: "{ant}", api_key: {akey}}}
      gem: {{type: gemini, base_url: "{gem}/v1beta", api_key: {gem_key}}}
      bed:
        type: bedrock
        base_url: "{bed}"
        region: us-east-1
        aws_access_key_id: {aws_id}
        aws_secret_access_key: {aws_secret}
      az: {{type: azure, base_url: "{az}", api_key: {az_key}}}
      vx: {{type: vertex, base_url: "{vx}", location: us-east5, service_account_file: "{sa_file}"}}
      dead:
        type: openai
        base_url: "http://127.0.0.1:{dead}/v1"
        api_key: x
        timeouts: {{connect: 0.5}}
    models:
      - name: gpt-4o
        targets: [{{provider: oa}}]
      - name: gemini-2.5-flash
        targets: [{{provider: gem}}]
      - name: bedrock-haiku
        targets: [{{provider: bed, model: "anthropic.claude-3-haiku-20240307-v1:0"}}]
      - name: azure-gpt
        targets: [{{provider: az, model: gpt-4o}}]
      - name: vertex-gemini
        targets: [{{provider: vx, model: gemini-2.5-pro}}]
      - name: vertex-claude
        targets: [{{provider: vx, model: "claude-sonnet-4-5@20250929"}}]
      - name: gpt-alias
        targets: [{{provider: oa, model: gpt-4o-mini}}]
      - name: claude-3-5-sonnet-20241022
        targets: [{{provider: ant}}]
      - name: anthropic/*
        targets: [{{provider: ant}}]
      - name: openai/*
        targets: [{{provider: oa}}]
      - name: failover
        targets:
          - {{provider: oa, model: fo-a, priority: 0}}
          - {{provider: ob, model: fo-b, priority: 1}}
      - name: split
        targets:
          - {{provider: oa, model: split-a, weight: 3}}
          - {{provider: ob, model: split-b, weight: 1}}
      - name: least
        strategy: least_in_flight
        targets:
          - {{provider: oa, model: least-a}}
          - {{provider: ob, model: least-b}}
      - name: retry-one
        targets: [{{provider: oc, model: retry-one}}]
      - name: dead-then-live
        targets:
          - {{provider: dead, model: x, priority: 0}}
          - {{provider: ob, model: dl-b, priority: 1}}
      - name: slow
        timeouts: {{connect: 1, first_byte: 0.5, idle: 5}}
        targets:
          - {{provider: oa, model: slow-a, priority: 0}}
          - {{provider: ob, model: slow-b, priority: 1}}
      - name: cooldown
        targets:
          - {{provider: oa, model: cd-a, priority: 0}}
          - {{provider: ob, model: cd-b, priority: 1}}
      - name: cut
        targets:
          - {{provider: oa, model: cut-a, priority: 0}}
          - {{provider: ob, model: cut-b, priority: 1}}
      - name: stream-reset
        targets:
          - {{provider: oa, model: sr-a, priority: 0}}
          - {{provider: ob, model: sr-b, priority: 1}}
      - name: midstream
        targets:
          - {{provider: oa, model: mid-a, priority: 0}}
          - {{provider: ob, model: mid-b, priority: 1}}
      - name: midstream-responses
        targets:
          - {{provider: oa, model: midr-a, priority: 0}}
          - {{provider: ob, model: midr-b, priority: 1}}
      - name: small
        context_fallbacks: [big]
        targets: [{{provider: oc, model: small, context_window: 300}}]
      - name: big
        targets: [{{provider: ob, model: big, context_window: 100000}}]
      - name: tiny-only
        targets: [{{provider: oc, model: tiny, context_window: 50}}]
      - name: enriched
        system_prepend: "You work for ACME."
        system_append: "Answer in French."
        defaults: {{temperature: 0.1, seed: 7}}
        overrides: {{max_tokens: 99}}
        targets: [{{provider: oa, model: enriched}}]
      - name: priced
        targets: [{{provider: oa, model: priced-model}}]
      - name: embed
        targets: [{{provider: oa, model: text-embedding-3-small}}]
      - name: claude-embed
        targets: [{{provider: ant, model: claude-3-5-haiku-20241022}}]
      - name: embed-azure
        targets: [{{provider: az, model: text-embedding-3-small}}]
      - name: embed-gemini
        targets: [{{provider: gem, model: gemini-embedding-001}}]
      - name: embed-titan
        targets: [{{provider: bed, model: "amazon.titan-embed-text-v2:0"}}]
      - name: embed-cohere
        targets: [{{provider: bed, model: "cohere.embed-english-v3"}}]
      - name: embed-vertex
        targets: [{{provider: vx, model: text-embedding-005}}]
      - name: embed-failover
        targets:
          - {{provider: ant, model: claude-3-5-haiku-20241022, priority: 0}}
          - {{provider: gem, model: gemini-embedding-001, priority: 1}}
          - {{provider: oc, model: text-embedding-3-large, priority: 2}}
"""


@contextmanager
def llm_stack() -> Iterator[LlmStack]:
    loop = MockLoop()
    try:
        oa, ob, oc = (loop.start(openai_mock()) for _ in range(3))
        ant = loop.start(MockServer(anthropic_mock.handle))
        gem = loop.start(MockServer(gemini_mock.handle))
        bed = loop.start(bedrock_mock.BedrockMock())
        az = loop.start(azure_mock.AzureMock({"gpt-4o", "text-embedding-3-small"}))
        vx = loop.start(vertex_mock.VertexMock())
        sa_file = Path(tempfile.mkdtemp(prefix="crossway-vertex-")) / "sa.json"
        sa_file.write_bytes(orjson.dumps(vx.service_account()))  # type: ignore[attr-defined]
        config = CONFIG.format(
            gem=gem.url,
            gem_key=gemini_mock.API_KEY,
            bed=bed.url,
            aws_id=bedrock_mock.ACCESS_KEY,
            aws_secret=bedrock_mock.SECRET_KEY,
            az=az.url,
            az_key=azure_mock.API_KEY,
            vx=vx.url,
            sa_file=sa_file,
            oa=oa.url,
            ob=ob.url,
            oc=oc.url,
            ant=ant.url,
            dead=free_port(),
            okey=OPENAI_KEY,
            akey=anthropic_mock.API_KEY,
        )
        with start_gateway(config) as gateway:
            yield LlmStack(gateway, oa, ob, oc, ant, gem, bed, az, vx)
    finally:
        loop.close()
