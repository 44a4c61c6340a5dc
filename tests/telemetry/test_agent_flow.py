"""The issue's first "done when" line: an agent flow — an LLM call (openai SDK), an MCP tool call
(mcp SDK) and an A2A call, all sent with the same `traceparent` — exports spans that form ONE
trace with the right parents and attributes, every upstream received that trace's context, and
`/metrics` shows the right counts, tokens and cost. Spans go to a real OTLP receiver."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from prometheus_client.parser import text_string_to_metric_families

from mcp import Client
from tests.a2a.agents import RunningAgent, run_agent
from tests.helpers import ROOT, start_gateway
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks.base import MockServer, Reply
from tests.telemetry.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"

CONFIG = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
  - name: mcp
    match: {{path: {{prefix: /mcp}}}}
    backend: tools
  - name: a2a
    match: {{path: {{prefix: /a2a}}}}
    backend: agents
backends:
  llm:
    type: llm
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
    models:
      - name: gpt-4o-mini
        targets: [{{provider: oa}}]
  tools:
    type: mcp
    servers:
      echo: {{type: stdio, command: "{python}", args: ["-m", "tests.telemetry.trace_echo_server", "stdio"], cwd: "{root}"}}
  agents:
    type: a2a
    task_store: {{type: memory}}
    agents:
      writer: {{url: "{writer}"}}
"""


@pytest.fixture
def upstreams() -> Iterator[tuple[MockServer, RunningAgent]]:
    mocks = MockLoop()
    oa = mocks.start(openai_mock())
    try:
        with run_agent("writer") as writer:
            yield oa, writer
    finally:
        mocks.close()


def _by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


def _root_of(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> ReceivedSpan:
    """The span's ancestor whose parent is outside Crossway (the caller's span)."""
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
    return span


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_one_trace_across_a_model_a_tool_and_an_agent(
    upstreams: tuple[MockServer, RunningAgent],
) -> None:
    oa, writer = upstreams
    oa.default = Reply(input_tokens=1000, output_tokens=500)
    config = CONFIG.format(
        oa=oa.url, okey=API_KEY, python=sys.executable, root=ROOT, writer=writer.url
    )
    receiver: OtlpReceiver
    with otlp_receiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "crossway-agent-flow",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        with start_gateway(config, env=env) as gw:
            headers = {"traceparent": TRACEPARENT}
            # 1. the model
            llm = openai.AsyncOpenAI(
                base_url=gw.url + "/v1", api_key="unused", default_headers=headers, max_retries=0
            )
            answer = await llm.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "plan"}]
            )
            assert answer.choices[0].message.content
            await llm.close()
            # 2. a tool
            http = create_mcp_http_client(headers=headers)
            async with Client(
                streamable_http_client(gw.url + "/mcp", http_client=http), mode="legacy"
            ) as mcp:
                result = await mcp.call_tool("echo_trace_context", {})
                tool_saw = json.loads(result.content[0].text)  # type: ignore[union-attr]
            # 3. another agent
            message = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendMessage",
                "params": {
                    "message": {
                        "messageId": str(uuid.uuid4()),
                        "role": "ROLE_USER",
                        "parts": [{"text": "Summarize the plan."}],
                    }
                },
            }
            async with httpx.AsyncClient(timeout=30) as client:
                sent = await client.post(
                    gw.url + "/a2a/writer/",
                    json=message,
                    headers={**headers, "a2a-version": "1.0"},
                )
                assert "result" in sent.json(), sent.text
                metrics_text = (await client.get(gw.admin_url + "/metrics")).text

            def complete(spans: list[ReceivedSpan]) -> bool:
                ours = [s for s in spans if s.trace_id == TRACE_ID]
                names = {s.name for s in ours}
                routes = {s.attributes.get("crossway.route") for s in ours if s.kind == "server"}
                return {
                    "chat gpt-4o-mini",
                    "tools/call trace_context",
                    "a2a SendMessage writer",
                } <= names and {"llm", "mcp", "a2a"} <= routes

            spans = receiver.wait_for(complete)

    ours = [s for s in spans if s.trace_id == TRACE_ID]
    by_id = _by_id(ours)
    servers = [s for s in ours if s.kind == "server"]
    routes = {s.attributes.get("crossway.route") for s in servers}
    assert {"llm", "mcp", "a2a"} <= routes
    # Every span of the flow hangs off the caller's span: one trace, three requests.
    assert {_root_of(s, by_id).parent_id for s in ours} == {CALLER_SPAN}
    assert all(s.parent_id == CALLER_SPAN for s in servers)

    # The model call: a CLIENT attempt span under the llm server span, GenAI attributes.
    attempt = next(s for s in ours if s.name == "chat gpt-4o-mini")
    assert attempt.kind == "client"
    assert _root_of(attempt, by_id).attributes["crossway.route"] == "llm"
    assert attempt.attributes["gen_ai.operation.name"] == "chat"
    assert attempt.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["gen_ai.usage.input_tokens"] == 1000
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 500
    upstream_parent = oa.requests[-1].headers["traceparent"].split("-")
    assert upstream_parent[1] == TRACE_ID and upstream_parent[2] == attempt.span_id

    # The tool call: the stdio server got the context in `_meta`, naming its CLIENT span.
    tool_client = next(s for s in ours if s.name == "tools/call trace_context")
    assert tool_client.kind == "client"
    assert tool_client.attributes["gen_ai.tool.name"] == "trace_context"
    assert tool_client.attributes["mcp.method.name"] == "tools/call"
    assert _root_of(tool_client, by_id).attributes["crossway.route"] == "mcp"
    tool_parent = tool_saw["meta"]["traceparent"].split("-")
    assert tool_parent[1] == TRACE_ID and tool_parent[2] == tool_client.span_id

    # The agent call: the agent got the context in its headers, naming the CLIENT span.
    agent_client = next(s for s in ours if s.name == "a2a SendMessage writer")
    assert agent_client.attributes["a2a.agent"] == "writer"
    assert _root_of(agent_client, by_id).attributes["crossway.route"] == "a2a"
    calls = [c for c in writer.calls if c.rpc_method == "SendMessage"]
    agent_parent = calls[-1].headers["traceparent"].split("-")
    assert agent_parent[1] == TRACE_ID and agent_parent[2] == agent_client.span_id

    # /metrics: the three requests, the model's tokens and cost, the tool and agent calls.
    for route in ("llm", "mcp", "a2a"):
        assert _metric(metrics_text, "crossway_requests_total", route=route) >= 1
    tokens = {
        kind: _metric(
            metrics_text,
            "gen_ai_client_token_usage_sum",
            gen_ai_token_type=kind,
            model="gpt-4o-mini",
        )
        for kind in ("input", "output")
    }
    assert tokens == {"input": 1000, "output": 500}
    # gpt-4o-mini: $0.15 in / $0.60 out per 1M tokens
    assert _metric(metrics_text, "gen_ai_client_cost_total", model="gpt-4o-mini") == pytest.approx(
        (1000 * 0.15 + 500 * 0.60) / 1e6
    )
    assert (
        _metric(metrics_text, "crossway_mcp_calls_total", server="echo", tool="trace_context") == 1
    )
    assert (
        _metric(metrics_text, "crossway_a2a_calls_total", agent="writer", method="SendMessage") >= 1
    )
