"""Guardrails on A2A routes: a real `crossway serve` in front of a2a-sdk sample agents, called
with the a2a-sdk client (JSON-RPC and REST) and raw HTTP in both protocol versions: a message
with a card number is refused before the agent sees it; e-mail addresses in artifacts, task
statuses, history and streamed events are masked. One guard config on the listener covers an
MCP route and an A2A route alike.
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.client import Client as A2aClient
from a2a.types.a2a_pb2 import GetTaskRequest, Message, Part, Role, SendMessageRequest
from a2a.utils.constants import TransportProtocol
from google.protobuf.json_format import MessageToDict
from mcp.shared.exceptions import MCPError

from mcp import Client as McpClient
from tests.a2a.agents import RunningAgent, run_agent
from tests.helpers import ROOT, Gateway, free_port, start_gateway

BINDINGS = [TransportProtocol.JSONRPC, TransportProtocol.HTTP_JSON]
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
GUARD_POLICY: dict[str, Any] = {
    "type": "guardrails",
    "name": "pii",
    "detectors": [
        {"type": "pii", "entities": ["email", "phone"], "response": "mask"},
        {"type": "pii", "entities": ["credit_card"], "request": "block"},
        {"type": "regex", "name": "chunks", "pattern": "chunk [2-9]", "response": "block"},
    ],
}
"""The issue's guard (e-mails and phones masked in answers, card numbers refused in requests),
and a rule the streamer's second artifact chunk trips (a block in the middle of a stream)."""


def _agents_block(agents: dict[str, RunningAgent]) -> str:
    return "\n".join(f"      {name}: {{url: {a.url}}}" for name, a in agents.items())


def _config(agents: dict[str, RunningAgent], *, guard: bool = True) -> str:
    return f"""
routes:
  - name: a2a
    match: {{path: {{prefix: /a2a}}}}
    backend: agents
    policies: {json.dumps([GUARD_POLICY] if guard else [])}
backends:
  agents:
    type: a2a
    task_store: {{type: memory}}
    timeouts: {{call: 10, card: 2}}
    agents:
{_agents_block(agents)}
"""


@pytest.fixture(scope="module")
def agents() -> Iterator[dict[str, RunningAgent]]:
    with run_agent("writer", "both") as writer, run_agent("streamer", "1.0") as streamer:
        yield {"writer": writer, "streamer": streamer}


@pytest.fixture(scope="module")
def gateway(agents: dict[str, RunningAgent]) -> Iterator[Gateway]:
    with start_gateway(_config(agents)) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


@contextlib.asynccontextmanager
async def _client(url: str, binding: str, *, streaming: bool = False) -> AsyncIterator[A2aClient]:
    http = httpx.AsyncClient(timeout=20)
    try:
        config = ClientConfig(
            streaming=streaming, httpx_client=http, supported_protocol_bindings=[binding]
        )
        yield await ClientFactory(config).create_from_url(url)
    finally:
        await http.aclose()


def _message(text: str) -> Message:
    return Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])


def _seen(agent: RunningAgent, needle: str, since: int) -> bool:
    """Whether a request that reached the agent after its first `since` calls carried `needle`."""
    return any(needle in json.dumps(c.body) for c in agent.calls[since:])


def _texts(value: Any) -> list[str]:
    """Every `text` string in a JSON value."""
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                out.append(item)
            else:
                out.extend(_texts(item))
    elif isinstance(value, list):
        for item in value:
            out.extend(_texts(item))
    return out


def _v10(text: str, method: str = "SendMessage") -> dict[str, Any]:
    message = {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": text}]}
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"message": message}}


def _v03(text: str, method: str = "message/send") -> dict[str, Any]:
    message = {
        "kind": "message",
        "messageId": str(uuid.uuid4()),
        "role": "user",
        "parts": [{"kind": "text", "text": text}],
    }
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"message": message}}


def _sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


# -- request direction: refused before the agent sees it ------------------------------------


@pytest.mark.parametrize("binding", BINDINGS)
async def test_card_number_in_a_message_is_refused(
    gateway: Gateway, agents: dict[str, RunningAgent], binding: str
) -> None:
    since = len(agents["writer"].calls)
    async with _client(f"{gateway.url}/a2a/writer", binding) as client:
        with pytest.raises(Exception) as caught:
            _ = [e async for e in client.send_message(SendMessageRequest(message=_message(CARD)))]
        assert "guardrail 'pii'" in str(caught.value) and "credit_card" in str(caught.value)
        assert "4111" not in str(caught.value)
    assert not _seen(agents["writer"], "4111", since)


async def test_card_number_in_a_data_part_or_a_stream_is_refused(
    gateway: Gateway, agents: dict[str, RunningAgent], http: httpx.AsyncClient
) -> None:
    since = len(agents["writer"].calls)
    body = _v10("pay this", "SendStreamingMessage")
    body["params"]["message"]["parts"].append({"data": {"payment": {"card": CARD}}})
    resp = await http.post(f"{gateway.url}/a2a/writer", json=body, headers={"A2A-Version": "1.0"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == -32602
    assert error["data"][0]["metadata"] == {
        "guard": "pii",
        "detector": "credit_card",
        "direction": "request",
    }
    assert not _seen(agents["writer"], "4111", since)


async def test_errors_in_each_version_and_binding(
    gateway: Gateway, agents: dict[str, RunningAgent], http: httpx.AsyncClient
) -> None:
    since = len(agents["writer"].calls)
    url = f"{gateway.url}/a2a/writer"
    resp = await http.post(url, json=_v03(f"card {CARD}"))  # v0.3 JSON-RPC
    error = resp.json()["error"]
    assert error["code"] == -32602 and "guardrail 'pii'" in error["message"]
    assert error["data"] == {"guard": "pii", "detector": "credit_card", "direction": "request"}
    message = _v10(CARD)["params"]
    resp = await http.post(f"{url}/message:send", json=message, headers={"A2A-Version": "1.0"})
    assert resp.status_code == 400  # REST v1.0
    assert resp.json()["error"]["details"][0]["metadata"]["guard"] == "pii"
    v03_rest = {"request": {"messageId": "m", "role": "ROLE_USER", "content": [{"text": CARD}]}}
    resp = await http.post(f"{url}/v1/message:send", json=v03_rest)  # REST v0.3 (proto JSON)
    assert resp.status_code == 400 and "guardrail 'pii'" in resp.json()["message"]
    assert not _seen(agents["writer"], "4111", since)


# -- response direction: masked on the way back ---------------------------------------------


@pytest.mark.parametrize("binding", BINDINGS)
async def test_email_in_an_artifact_is_masked(
    gateway: Gateway, agents: dict[str, RunningAgent], binding: str
) -> None:
    since = len(agents["writer"].calls)
    async with _client(f"{gateway.url}/a2a/writer", binding) as client:
        message = _message(f"Mail {EMAIL} about the launch")
        events = [e async for e in client.send_message(SendMessageRequest(message=message))]
        task = events[-1].task
        assert [p.text for p in task.artifacts[0].parts] == [
            "Summary: Mail <EMAIL> about the launch"
        ]
        assert EMAIL not in json.dumps(MessageToDict(task))  # history too
        got = await client.get_task(GetTaskRequest(id=task.id))
        assert EMAIL not in json.dumps(MessageToDict(got))
        assert got.artifacts[0].parts[0].text == "Summary: Mail <EMAIL> about the launch"
    assert _seen(agents["writer"], EMAIL, since)  # masking is for answers only: the agent got it


async def test_streamed_events_are_masked_each(gateway: Gateway) -> None:
    async with _client(
        f"{gateway.url}/a2a/writer", TransportProtocol.JSONRPC, streaming=True
    ) as client:
        message = _message(f"Translate: write to {EMAIL}")
        events = [e async for e in client.send_message(SendMessageRequest(message=message))]
    dumped = [MessageToDict(e) for e in events]
    assert len(dumped) >= 3 and not any(EMAIL in json.dumps(e) for e in dumped)
    assert "Translation: TRANSLATE: WRITE TO <EMAIL>" in _texts(dumped)


async def test_v03_client_gets_masked_answers(gateway: Gateway, http: httpx.AsyncClient) -> None:
    url = f"{gateway.url}/a2a/writer"
    resp = await http.post(url, json=_v03(f"Mail {EMAIL} today"))
    task = resp.json()["result"]
    assert task["kind"] == "task" and EMAIL not in resp.text
    assert task["artifacts"][0]["parts"][0]["text"] == "Summary: Mail <EMAIL> today"
    resp = await http.post(url, json=_v03(f"Mail {EMAIL} today", "message/stream"))
    events = _sse_events(resp.text)
    assert events and all("result" in e for e in events) and EMAIL not in resp.text
    assert "Summary: Mail <EMAIL> today" in _texts(events)


async def test_a_block_in_the_middle_of_a_stream_ends_it_with_an_error_event(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    body = _v10("go", "SendStreamingMessage")
    body["params"]["message"]["metadata"] = {"steps": 3, "delay": 0.01}
    resp = await http.post(f"{gateway.url}/a2a/streamer", json=body, headers={"A2A-Version": "1.0"})
    events = _sse_events(resp.text)
    assert "chunk 1 " in _texts(events)  # the events before the match went out
    assert not any("chunk 2" in t for t in _texts(events))
    last = events[-1]
    assert last["error"]["code"] == -32602 and "guardrail 'pii'" in last["error"]["message"]
    assert last["error"]["data"][0]["metadata"]["detector"] == "chunks"


async def test_without_a_guard_nothing_is_touched(
    agents: dict[str, RunningAgent], http: httpx.AsyncClient
) -> None:
    with start_gateway(_config(agents, guard=False)) as gw:
        resp = await http.post(f"{gw.url}/a2a/writer", json=_v03(f"Mail {EMAIL} and {CARD}"))
        assert f"Mail {EMAIL} and {CARD}" in resp.text


# -- one guard config, both layers ----------------------------------------------------------


async def test_one_listener_guard_blocks_an_mcp_tool_argument_and_an_a2a_message(
    agents: dict[str, RunningAgent], http: httpx.AsyncClient
) -> None:
    since = len(agents["writer"].calls)
    server = (
        f'{{type: stdio, command: "{sys.executable}", '
        f'args: ["-m", "tests.mcp.servers.guarded", "stdio"], cwd: "{ROOT}"}}'
    )
    port = free_port()
    config = f"""
listen:
  port: {port}
  policies: {json.dumps([GUARD_POLICY])}
routes:
  - {{name: mcp, match: {{path: {{prefix: /mcp}}}}, backend: tools}}
  - {{name: a2a, match: {{path: {{prefix: /a2a}}}}, backend: agents}}
backends:
  tools:
    type: mcp
    servers:
      data: {server}
  agents:
    type: a2a
    task_store: {{type: memory}}
    agents:
{_agents_block(agents)}
"""
    with start_gateway(config, port=port) as gw:
        async with McpClient(gw.url + "/mcp", mode="legacy") as mcp:
            with pytest.raises(MCPError, match="guardrail 'pii'") as info:
                await mcp.call_tool("data_pay", {"card": CARD, "amount": 3})
            assert info.value.error.data["detector"] == "credit_card"
            seen = await mcp.call_tool("data_received", {})
            assert json.loads(seen.content[0].text) == []  # type: ignore[union-attr]
            echoed = await mcp.call_tool("data_echo", {"text": EMAIL})
            assert echoed.content[0].text == "<EMAIL>"  # type: ignore[union-attr]
        resp = await http.post(f"{gw.url}/a2a/writer", json=_v03(f"pay with {CARD}"))
        assert resp.json()["error"]["data"]["detector"] == "credit_card"
        resp = await http.post(f"{gw.url}/a2a/writer", json=_v03(f"Mail {EMAIL} now"))
        assert "Summary: Mail <EMAIL> now" in _texts(resp.json())
    assert not _seen(agents["writer"], "4111", since)
