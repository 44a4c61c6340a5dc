"""MCP and A2A metrics on `/metrics` after real calls: an MCP SDK client through Crossway to
real MCP servers (stdio and Streamable HTTP), and A2A calls to the sample agents."""

from __future__ import annotations

import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from crossway.telemetry import metrics_mcp_a2a
from mcp import Client
from tests.a2a.agents import RunningAgent, run_agent
from tests.helpers import ROOT, Gateway, start_gateway
from tests.mcp.conftest import mcp_config, notes_server, notes_stdio, stop

ECHO_STDIO = (
    f'{{type: stdio, command: "{sys.executable}", '
    f'args: ["-m", "tests.telemetry.trace_echo_server", "stdio"], cwd: "{ROOT}"}}'
)


def scrape(gw: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on the admin plane's `/metrics`: (name, sorted labels) -> value."""
    with urllib.request.urlopen(gw.admin_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def notes_http() -> Iterator[str]:
    proc, url = notes_server("streamable-http")
    try:
        yield url
    finally:
        stop(proc)


def test_tool_labels_are_bounded() -> None:
    seen = {metrics_mcp_a2a.tool_label(f"bounded-{i}") for i in range(2000)}
    assert "other" in seen
    assert len(seen) <= metrics_mcp_a2a.MAX_TOOL_LABELS + 1
    assert metrics_mcp_a2a.tool_label("x" * 1000) == "other"
    assert metrics_mcp_a2a.tool_label(None) == "-"
    assert metrics_mcp_a2a.mcp_method_label("made/up") == "other"


async def test_mcp_calls_errors_durations_pinning_and_denials(notes_http: str) -> None:
    config = mcp_config(
        {
            "echo": ECHO_STDIO,
            "notes": notes_stdio(),
            "web": f"{{type: streamable_http, url: {notes_http}}}",
        }
    ).replace(
        "  - {name: mcp, backend: tools}",
        "  - name: mcp\n    backend: tools\n    policies:\n"
        "      - {type: authorization, deny: ['mcp.tool.name == \"web_whoami\"']}",
    )
    with start_gateway(config) as gw:
        async with Client(gw.url + "/mcp", mode="legacy") as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"echo_add", "notes_fail", "web_add"} <= tools
            for _ in range(3):
                assert (await client.call_tool("echo_add", {"a": 1, "b": 2})).content[0].text == "3"  # type: ignore[union-attr]
            assert (await client.call_tool("web_add", {"a": 2, "b": 2})).content[0].text == "4"  # type: ignore[union-attr]
            failed = await client.call_tool("notes_fail", {})
            assert failed.is_error
            with pytest.raises(MCPError, match="not allowed"):
                await client.call_tool("web_whoami", {})
        samples = scrape(gw)

    calls = "crossway_mcp_calls_total"
    assert value(samples, calls, server="echo", method="tools/call", tool="add") == 3
    assert value(samples, calls, server="web", method="tools/call", tool="add") == 1
    assert value(samples, calls, server="notes", method="tools/call", tool="fail") == 1
    assert value(samples, calls, server="web", method="tools/call", tool="whoami") == 0
    for server in ("echo", "notes", "web"):  # one fanned-out list: one call per server
        assert value(samples, calls, server=server, method="tools/list", tool="-") == 1
    errors = "crossway_mcp_errors_total"
    assert (
        value(samples, errors, server="notes", method="tools/call", tool="fail", error="tool_error")
        == 1
    )
    assert (
        value(samples, errors, server="echo", method="tools/call", tool="add", error="tool_error")
        == 0
    )
    duration = "crossway_mcp_call_duration_seconds_count"
    assert value(samples, duration, server="echo", method="tools/call", tool="add") == 3
    assert (
        value(
            samples,
            "crossway_mcp_call_duration_seconds_sum",
            server="echo",
            method="tools/call",
            tool="add",
        )
        > 0
    )

    pinning = "crossway_mcp_pinning_decisions_total"
    assert value(samples, pinning, server="echo", decision="allowed", stage="list") >= 2
    assert value(samples, pinning, server="echo", decision="allowed", stage="call") == 3
    assert value(samples, pinning, server="echo", decision="blocked", stage="call") == 0

    denials = "crossway_authorization_denials_total"
    assert value(samples, denials, policy="authorization", route="mcp", target="mcp") == 1
    for family_name in (calls, errors, pinning, denials):
        for (name, labels), _ in samples.items():
            if name == family_name:
                assert all(len(v) <= 128 for _, v in labels), labels


@pytest.fixture(scope="module")
def writer() -> Iterator[RunningAgent]:
    with run_agent("writer", "1.0") as agent:
        yield agent


def _a2a_config(agent: RunningAgent) -> str:
    return f"""
routes:
  - name: a2a
    match: {{path: {{prefix: /a2a}}}}
    backend: agents
    policies:
      - type: authorization
        deny: ['a2a.agent == "closed"']
backends:
  agents:
    type: a2a
    task_store: {{type: memory}}
    timeouts: {{call: 10, card: 2}}
    agents:
      writer: {{url: {agent.url}}}
      closed: {{url: {agent.url}}}
"""


async def _send(http: aiohttp.ClientSession, url: str, text: str) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": {
                "messageId": str(uuid.uuid4()),
                "role": "ROLE_USER",
                "parts": [{"text": text}],
            }
        },
    }
    async with http.post(url, json=body, headers={"a2a-version": "1.0"}) as resp:
        answer: dict[str, Any] = await resp.json()
        return answer


async def test_a2a_calls_tasks_and_denials(writer: RunningAgent) -> None:
    with start_gateway(_a2a_config(writer)) as gw:
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                answer = await _send(http, gw.url + "/a2a/writer", "write a haiku")
                assert "result" in answer, answer
            denied = await _send(http, gw.url + "/a2a/closed", "hello")
            assert "error" in denied
            task = answer["result"]["task"]  # the writer answers with a task
            async with http.post(
                gw.url + "/a2a/writer",
                json={
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "GetTask",
                    "params": {"id": task["id"]},
                },
                headers={"a2a-version": "1.0"},
            ) as resp:
                assert "result" in await resp.json()
        samples = scrape(gw)
    assert value(samples, "crossway_a2a_calls_total", agent="writer", method="SendMessage") == 2
    assert value(samples, "crossway_a2a_calls_total", agent="closed", method="SendMessage") == 0
    assert value(samples, "crossway_a2a_errors_total", agent="writer", method="SendMessage") == 0
    assert (
        value(
            samples,
            "crossway_a2a_call_duration_seconds_count",
            agent="writer",
            method="SendMessage",
        )
        == 2
    )
    assert value(samples, "crossway_a2a_calls_total", agent="writer", method="GetTask") == 1
    states = {
        dict(labels)["state"]: v
        for (name, labels), v in samples.items()
        if name == "crossway_a2a_tasks_total" and dict(labels).get("agent") == "writer"
    }
    assert states, samples
    assert (
        value(
            samples,
            "crossway_authorization_denials_total",
            policy="authorization",
            route="a2a",
            target="a2a",
        )
        == 1
    )
