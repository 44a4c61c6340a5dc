"""MCP and A2A spans exported over OTLP by a real gateway, and the trace context each upstream
received (the OTLP receiver of `tests.telemetry.otlp_receiver`; MCP over OTLP/HTTP, A2A over
OTLP/gRPC): an MCP SDK client through Crossway to MCP servers over stdio (`params._meta`) and
Streamable HTTP (headers), and A2A calls to the sample agents (headers)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from crossway.mcp.upstream.rpc import with_trace_meta
from crossway.telemetry import tracing
from mcp import Client
from tests.a2a.agents import RunningAgent, run_agent
from tests.helpers import ROOT, free_port, start_gateway
from tests.mcp.conftest import mcp_config, spawn, stop
from tests.telemetry.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as made:
        yield made


@pytest.fixture
def echo_http() -> Iterator[str]:
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "tests.telemetry.trace_echo_server", "http", str(port)], port
    )
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


def _env(receiver: OtlpReceiver, protocol: str = "http/protobuf") -> dict[str, str]:
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


def _named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def _one(
    spans: list[ReceivedSpan], name: str, kind: str | None = None, **attributes: Any
) -> ReceivedSpan:
    found = [
        s
        for s in _named(spans, name)
        if (kind is None or s.kind == kind)
        and all(s.attributes.get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, (name, attributes, [(s.name, s.attributes) for s in spans])
    return found[0]


def _parent(spans: list[ReceivedSpan], child: ReceivedSpan) -> ReceivedSpan:
    by_id = {s.span_id: s for s in spans}
    assert child.parent_id in by_id, (child.name, child.parent_id)
    return by_id[child.parent_id]


async def test_mcp_spans_and_the_context_each_server_received(
    receiver: OtlpReceiver, echo_http: str
) -> None:
    echo_stdio = (
        f'{{type: stdio, command: "{sys.executable}", '
        f'args: ["-m", "tests.telemetry.trace_echo_server", "stdio"], cwd: "{ROOT}"}}'
    )
    config = mcp_config(
        {"local": echo_stdio, "web": f"{{type: streamable_http, url: {echo_http}}}"}
    )
    with start_gateway(config, env=_env(receiver)) as gw:
        http = create_mcp_http_client(headers={"traceparent": TRACEPARENT})
        client = Client(streamable_http_client(gw.url + "/mcp", http_client=http), mode="legacy")
        async with client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"local_trace_context", "web_trace_context"} <= tools
            local = json.loads((await client.call_tool("local_trace_context", {})).content[0].text)  # type: ignore[union-attr]
            # A context the client forwarded in `_meta` is replaced by Crossway's own.
            stale = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}
            web = json.loads(
                (await client.call_tool("web_trace_context", {}, meta=stale)).content[0].text  # type: ignore[arg-type,union-attr]
            )

        def complete(spans: list[ReceivedSpan]) -> bool:
            names = [s.name for s in spans]
            return (
                "tools/call local_trace_context" in names
                and "tools/call web_trace_context" in names
                and names.count("tools/call trace_context") >= 2
                and "tools/list local" in names
                and "tools/list web" in names
            )

        spans = receiver.wait_for(complete)

    ours = [s for s in spans if s.trace_id == TRACE_ID]
    # The stdio server got the trace context in params._meta, the HTTP one in its headers;
    # each names the CLIENT span of its own call as the parent.
    local_parent = local["meta"]["traceparent"].split("-")
    web_parent = web["headers"]["traceparent"].split("-")
    assert local_parent[1] == TRACE_ID and web_parent[1] == TRACE_ID
    assert web["meta"]["traceparent"] == web["headers"]["traceparent"]
    local_client = _one(ours, "tools/call trace_context", **{"crossway.mcp.server": "local"})
    web_client = _one(ours, "tools/call trace_context", **{"crossway.mcp.server": "web"})
    assert local_parent[2] == local_client.span_id
    assert web_parent[2] == web_client.span_id
    assert local_client.kind == web_client.kind == "client"
    assert local_client.attributes["gen_ai.tool.name"] == "trace_context"
    assert local_client.attributes["mcp.method.name"] == "tools/call"

    # tools/call: the server span -> the MCP request span -> the CLIENT span.
    for server, client_span in (("local", local_client), ("web", web_client)):
        request = _parent(ours, client_span)
        assert request.name == f"tools/call {server}_trace_context"
        assert request.attributes["mcp.method.name"] == "tools/call"
        assert request.attributes["gen_ai.tool.name"] == f"{server}_trace_context"
        assert request.attributes["crossway.mcp.server"] == server
        assert request.attributes["mcp.session.id"]
        http_span = _parent(ours, request)
        assert http_span.kind == "server"
        assert http_span.parent_id == CALLER_SPAN

    # tools/list fans out: one child span per server under the request span, each with the
    # CLIENT span of its upstream call.
    listing = _one(ours, "tools/list", "internal")
    assert listing.attributes["mcp.method.name"] == "tools/list"
    for server in ("local", "web"):
        fan = _one(ours, f"tools/list {server}")
        assert fan.parent_id == listing.span_id
        assert fan.attributes["crossway.mcp.server"] == server
        upstream = [s for s in ours if s.parent_id == fan.span_id]
        assert [(s.name, s.kind) for s in upstream] == [("tools/list", "client")]
    assert _parent(ours, listing).kind == "server"


@pytest.fixture(scope="module")
def agents() -> Iterator[dict[str, RunningAgent]]:
    with run_agent("writer", "1.0") as writer, run_agent("streamer", "1.0") as streamer:
        yield {"writer": writer, "streamer": streamer}


def _a2a_config(agents: dict[str, RunningAgent]) -> str:
    lines = "\n".join(f"      {n}: {{url: {a.url}}}" for n, a in agents.items())
    return f"""
routes:
  - name: a2a
    match: {{path: {{prefix: /a2a}}}}
    backend: agents
backends:
  agents:
    type: a2a
    task_store: {{type: memory}}
    timeouts: {{call: 10, card: 2}}
    agents:
{lines}
"""


def _message(method: str, text: str, skill: str | None = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": method,
        "params": {
            "message": {
                "messageId": str(uuid.uuid4()),
                "role": "ROLE_USER",
                "parts": [{"text": text}],
                "metadata": {"skillId": skill} if skill else {},
            }
        },
    }


async def test_a2a_hop_spans_and_the_agent_got_the_context(
    receiver: OtlpReceiver, agents: dict[str, RunningAgent]
) -> None:
    headers = {"a2a-version": "1.0", "traceparent": TRACEPARENT}
    with start_gateway(_a2a_config(agents), env=_env(receiver, "grpc")) as gw:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                gw.url + "/a2a/writer",
                json=_message("SendMessage", "a haiku", "summarize"),
                headers=headers,
            ) as resp:
                answer = await resp.json()
            assert "result" in answer, answer
            task = answer["result"]["task"]
            async with http.post(
                gw.url + "/a2a/streamer",
                json=_message("SendStreamingMessage", "count"),
                headers=headers,
            ) as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                streamed = await resp.read()
            assert b"data:" in streamed

        def complete(spans: list[ReceivedSpan]) -> bool:
            names = [s.name for s in spans]
            return all(
                name in names
                for name in (
                    "a2a SendMessage",
                    "a2a SendMessage writer",
                    "a2a SendStreamingMessage",
                    "a2a SendStreamingMessage streamer",
                )
            )

        spans = receiver.wait_for(complete)

    ours = [s for s in spans if s.trace_id == TRACE_ID]
    hop = _one(ours, "a2a SendMessage")
    assert hop.attributes["a2a.method"] == "SendMessage"
    assert hop.attributes["a2a.agent"] == "writer"
    assert hop.attributes["a2a.skill"] == "summarize"
    assert hop.attributes["a2a.task.id"] == task["id"]
    assert hop.attributes["a2a.context.id"] == task["contextId"]
    assert hop.attributes["a2a.task.state"]
    assert _parent(ours, hop).kind == "server"
    call = _one(ours, "a2a SendMessage writer")
    assert call.kind == "client" and call.parent_id == hop.span_id
    assert call.attributes["a2a.agent"] == "writer"

    sent = [c for c in agents["writer"].calls if c.rpc_method == "SendMessage"]
    parent = sent[-1].headers["traceparent"].split("-")
    assert parent[1] == TRACE_ID and parent[2] == call.span_id

    stream_hop = _one(ours, "a2a SendStreamingMessage")
    assert stream_hop.attributes["a2a.agent"] == "streamer"
    assert stream_hop.attributes["a2a.task.state"] == "completed"
    stream_call = _one(ours, "a2a SendStreamingMessage streamer")
    assert stream_call.parent_id == stream_hop.span_id
    streamed_to = [c for c in agents["streamer"].calls if c.rpc_method == "SendStreamingMessage"]
    assert streamed_to[-1].headers["traceparent"].split("-")[2] == stream_call.span_id


def test_tracing_off_adds_nothing_to_upstream_requests() -> None:
    assert not tracing.enabled()
    params: dict[str, Any] = {"name": "add", "_meta": {"progressToken": 1}}
    assert with_trace_meta(params) is params  # no current span: the params as they are
    with tracing.span("anything") as span:
        assert span is None


async def test_without_tracing_no_trace_context_reaches_the_server() -> None:
    echo_stdio = (
        f'{{type: stdio, command: "{sys.executable}", '
        f'args: ["-m", "tests.telemetry.trace_echo_server", "stdio"], cwd: "{ROOT}"}}'
    )
    with start_gateway(mcp_config({"local": echo_stdio})) as gw:
        http = create_mcp_http_client(headers={"traceparent": TRACEPARENT})
        client = Client(streamable_http_client(gw.url + "/mcp", http_client=http), mode="legacy")
        async with client:
            seen = json.loads((await client.call_tool("local_trace_context", {})).content[0].text)  # type: ignore[union-attr]
    assert seen["meta"] == {}
