"""The A2A backend end to end: a real `crossway serve` in front of real a2a-sdk agents, called
with the a2a-sdk client (JSON-RPC and REST) and with raw HTTP for the error cases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from a2a.client import ClientConfig, ClientFactory
from a2a.client.client import Client
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)
from a2a.utils.constants import TransportProtocol
from pydantic import TypeAdapter

from crossway.a2a import cards
from crossway.a2a.registry import AgentRegistry
from crossway.config.a2a import A2aBackendConfig
from crossway.config.policy import PolicyConfig
from crossway.policy import build_chain
from crossway.server.context import RequestContext
from crossway.server.forwarded import FORWARDED, Forwarded
from tests.a2a.agents import RunningAgent, run_agent
from tests.helpers import Gateway, free_port, start_gateway, wait_for

API_KEY = "writer-key-0123456789abcdef"
BINDINGS = [TransportProtocol.JSONRPC, TransportProtocol.HTTP_JSON]


def _rest_only_card(url: str) -> str:
    """An inline card for the writer that declares only HTTP+JSON (Crossway calls it over REST)."""
    card = {
        "name": "REST writer",
        "description": "The writer, over REST only.",
        "version": "1.0.0",
        "supportedInterfaces": [
            {"url": url, "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"}
        ],
        "capabilities": {"streaming": True},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [],
    }
    return json.dumps(card)


def _config(
    agents: dict[str, RunningAgent],
    down_port: int,
    policies: str = "",
    bad: BadAgent | None = None,
) -> str:
    lines = [f"      {n}: {{url: {a.url}}}" for n, a in agents.items()]
    lines.append(f"      down: {{url: http://127.0.0.1:{down_port}}}")
    lines.append(f"      rest-writer: {{card: {_rest_only_card(agents['writer'].url)}}}")
    if bad is not None:
        for kind in ("garbage", "cut", "hang"):
            lines.append(
                f"      {kind}: {{url: {bad.url}/{kind}, timeouts: {{call: 0.5, card: 2}}}}"
            )
    agent_block = "\n".join(lines)
    return f"""
routes:
  - name: a2a
    match: {{path: {{prefix: /a2a}}}}
    backend: agents
{policies}
backends:
  agents:
    type: a2a
    task_store: {{type: memory}}
    timeouts: {{call: 10, card: 2}}
    agents:
{agent_block}
"""


class BadAgent:
    """One loopback server playing three broken agents, each under its own path: `garbage`
    (answers bytes that are not JSON-RPC), `cut` (a stream that stops after one event),
    `hang` (never answers until the test ends)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.release = threading.Event()
        self.flaky_down = False
        """`flaky`'s card answers 503 while set."""

    def card(self, kind: str) -> bytes:
        return json.dumps(
            {
                "name": kind,
                "description": f"a broken agent ({kind})",
                "version": "1.0.0",
                "supportedInterfaces": [
                    {
                        "url": f"{self.url}/{kind}",
                        "protocolBinding": "JSONRPC",
                        "protocolVersion": "1.0",
                    }
                ],
                "capabilities": {"streaming": True},
                "defaultInputModes": ["text/plain"],
                "defaultOutputModes": ["text/plain"],
                "skills": [],
            }
        ).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        kind, _, rest = scope["path"].lstrip("/").partition("/")
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            if (kind == "flaky" and self.flaky_down) or (
                kind == "legacy" and rest != ".well-known/agent.json"
            ):
                await _send(send, 503, "text/plain", b"no")
            else:
                await _send(send, 200, "application/json", self.card(kind))
        elif kind == "garbage":
            await _send(send, 200, "application/json", b"<html>surprise</html>")
        elif kind == "cut":
            event = {
                "jsonrpc": "2.0",
                "id": 1,
                "result": {
                    "task": {
                        "id": "cut-task",
                        "contextId": "cut-ctx",
                        "status": {"state": "TASK_STATE_WORKING"},
                    }
                },
            }
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            data = b"data: " + json.dumps(event).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 20)
            await _send(send, 200, "application/json", b"{}")


async def _send(send: Any, status: int, content_type: str, body: bytes) -> None:
    headers = [(b"content-type", content_type.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def bad_agent() -> Iterator[BadAgent]:
    bad = BadAgent()
    config = uvicorn.Config(bad, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [bad.sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the broken agent")
    yield bad
    bad.release.set()
    server.should_exit = True
    thread.join(10)
    bad.sock.close()


@pytest.fixture(scope="module")
def agents() -> Iterator[dict[str, RunningAgent]]:
    with (
        run_agent("writer", "both") as writer,
        run_agent("vision", "1.0") as vision,
        run_agent("streamer", "1.0") as streamer,
        run_agent("asker", "1.0") as asker,
        run_agent("streamer", "0.3") as legacy,
    ):
        yield {
            "writer": writer,
            "vision": vision,
            "streamer": streamer,
            "asker": asker,
            "legacy": legacy,
        }


@pytest.fixture(scope="module")
def gateway(agents: dict[str, RunningAgent], bad_agent: BadAgent) -> Iterator[Gateway]:
    with start_gateway(_config(agents, free_port(), bad=bad_agent)) as gw:
        yield gw


POLICIES = f"""    policies:
      - type: api_key
        keys: {{team: {API_KEY}}}
      - type: authorization
        allow: ['a2a.agent == "writer"']"""


@pytest.fixture(scope="module")
def guarded(agents: dict[str, RunningAgent]) -> Iterator[Gateway]:
    with start_gateway(_config(agents, free_port(), POLICIES)) as gw:
        yield gw


def _message(text: str, **fields: Any) -> Message:
    return Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_USER,
        parts=[Part(text=text)],
        **fields,
    )


@contextlib.asynccontextmanager
async def _client(
    url: str, binding: str, *, streaming: bool = False, headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """An a2a-sdk client for the agent at `url` (its card fetched through Crossway)."""
    http = httpx.AsyncClient(timeout=20, headers=headers or {})
    try:
        config = ClientConfig(
            streaming=streaming, httpx_client=http, supported_protocol_bindings=[binding]
        )
        yield await ClientFactory(config).create_from_url(url)
    finally:
        await http.aclose()


async def _events(client: Client, message: Message) -> list[StreamResponse]:
    return [e async for e in client.send_message(SendMessageRequest(message=message))]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


# -- cards ----------------------------------------------------------------------------------


async def test_card_points_only_at_crossway(
    gateway: Gateway, agents: dict[str, RunningAgent], http: httpx.AsyncClient
) -> None:
    for path in (".well-known/agent-card.json", ".well-known/agent.json"):
        for version in (None, "1.0", "0.3"):
            headers = {"A2A-Version": version} if version else {}
            resp = await http.get(f"{gateway.url}/a2a/writer/{path}", headers=headers)
            assert resp.status_code == 200, resp.text
            text = resp.text
            for agent in agents.values():
                assert f"127.0.0.1:{agent.port}" not in text
            card = resp.json()
            assert card["name"]
            if version != "0.3":
                urls = {i["url"] for i in card["supportedInterfaces"]}
                assert urls == {f"{gateway.url}/a2a/writer"}
            if version != "1.0":
                assert card["url"] == f"{gateway.url}/a2a/writer"
            assert "securitySchemes" not in card  # no policy on this route


async def test_card_security_is_crossways(guarded: Gateway, http: httpx.AsyncClient) -> None:
    resp = await http.get(
        f"{guarded.url}/a2a/writer/.well-known/agent-card.json", headers={"x-api-key": API_KEY}
    )
    assert resp.status_code == 200, resp.text
    card = resp.json()
    assert card["securitySchemes"]["apiKey"]["apiKeySecurityScheme"]["location"] == "header"
    assert card["securityRequirements"] == [{"schemes": {"apiKey": {"list": []}}}]
    assert card["security"] == [{"apiKey": []}]  # the v0.3 fields merged in


async def test_forwarded_host_only_from_trusted_proxies(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    resp = await http.get(
        f"{gateway.url}/a2a/writer/.well-known/agent-card.json",
        headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    )
    assert "evil.example" not in resp.text


# -- calls through the a2a-sdk client -------------------------------------------------------


@pytest.mark.parametrize("binding", BINDINGS)
async def test_send_get_list_cancel(
    gateway: Gateway, agents: dict[str, RunningAgent], binding: str
) -> None:
    async with _client(f"{gateway.url}/a2a/writer", binding) as client:
        events = await _events(client, _message("Summarize: Crossway proxies agents."))
        assert len(events) == 1 and events[0].HasField("task")
        task = events[0].task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        got = await client.get_task(GetTaskRequest(id=task.id))
        assert got.id == task.id
        listed = await client.list_tasks(ListTasksRequest(context_id=task.context_id))
        assert task.id in [t.id for t in listed.tasks]
        with pytest.raises(Exception) as caught:  # a completed task is not cancelable
            await client.cancel_task(CancelTaskRequest(id=task.id))
        assert "cancel" in str(caught.value).lower()
    calls = agents["writer"].protocol_calls()
    assert calls and all("authorization" not in c.headers for c in calls)


@pytest.mark.parametrize("binding", BINDINGS)
async def test_stream_and_cancel(gateway: Gateway, binding: str) -> None:
    async with _client(f"{gateway.url}/a2a/streamer", binding, streaming=True) as client:
        message = _message("stream please")
        message.metadata.update({"steps": 3, "delay": 0.01})
        events = await _events(client, message)
        assert len(events) >= 4
        last = events[-1]
        state = (
            last.status_update.status.state
            if last.HasField("status_update")
            else (last.task.status.state)
        )
        assert state == TaskState.TASK_STATE_COMPLETED
        # a slow one, canceled while it runs
        slow = _message("slow")
        slow.metadata.update({"steps": 200, "delay": 0.05})
        stream = client.send_message(SendMessageRequest(message=slow))
        first = await anext(stream)
        task_id = first.task.id if first.HasField("task") else first.status_update.task_id
        canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        await stream.aclose()


async def test_router_picks_and_follow_ups_reach_the_owner(
    gateway: Gateway, agents: dict[str, RunningAgent], http: httpx.AsyncClient
) -> None:
    before = len(agents["writer"].protocol_calls())
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "SendMessage",
        "params": {
            "message": {
                "messageId": "m1",
                "role": "ROLE_USER",
                "parts": [{"text": "Please summarize this report about summaries"}],
            }
        },
    }
    resp = await http.post(f"{gateway.url}/a2a/", json=body, headers={"A2A-Version": "1.0"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-crossway-route"].startswith("agent=writer")
    task = resp.json()["result"]["task"]
    assert task["metadata"]["crossway/route"]["agent"] == "writer"
    # a follow-up through the router reaches the owner (the a2a-sdk client at the router)
    async with _client(f"{gateway.url}/a2a", TransportProtocol.JSONRPC) as client:
        got = await client.get_task(GetTaskRequest(id=task["id"]))
        assert got.id == task["id"]
    rpc = [c.rpc_method for c in agents["writer"].protocol_calls()[before:]]
    assert rpc == ["SendMessage", "GetTask"]
    assert not any(c.rpc_method == "GetTask" for c in agents["vision"].protocol_calls())


async def test_catalog(gateway: Gateway, http: httpx.AsyncClient) -> None:
    resp = await http.get(f"{gateway.url}/a2a/agents")
    assert resp.status_code == 200
    names = {a["name"] for a in resp.json()["agents"]}
    assert {"writer", "vision", "streamer"} <= names
    resp = await http.get(f"{gateway.url}/a2a/agents", params={"mode": "image/png"})
    assert [a["name"] for a in resp.json()["agents"]] == ["vision"]
    entry = resp.json()["agents"][0]
    assert entry["url"] == f"{gateway.url}/a2a/vision"


# -- policies -------------------------------------------------------------------------------


async def test_policy_hides_and_refuses_other_agents(
    guarded: Gateway, agents: dict[str, RunningAgent], http: httpx.AsyncClient
) -> None:
    key = {"x-api-key": API_KEY, "A2A-Version": "1.0"}
    resp = await http.get(f"{guarded.url}/a2a/agents", headers=key)
    assert [a["name"] for a in resp.json()["agents"]] == ["writer"]
    resp = await http.get(f"{guarded.url}/a2a/.well-known/agent-card.json", headers=key)
    assert {s["id"].split("/")[0] for s in resp.json()["skills"]} == {"writer"}
    vision_calls = len(agents["vision"].protocol_calls())
    image = {
        "jsonrpc": "2.0",
        "id": "x",
        "method": "SendMessage",
        "params": {
            "message": {
                "messageId": "m2",
                "role": "ROLE_USER",
                "parts": [{"raw": "iVBORw0KGgo=", "mediaType": "image/png"}],
            }
        },
    }
    # the router never considers vision: no agent for an image
    resp = await http.post(f"{guarded.url}/a2a/", json=image, headers=key)
    assert resp.json()["error"]["code"] == -32005, resp.text
    # a direct call is refused before the agent sees it
    resp = await http.post(f"{guarded.url}/a2a/vision/", json=image, headers=key)
    assert resp.status_code in (403, 404), resp.text
    assert resp.json()["id"] in ("x", None)
    assert "error" in resp.json()
    resp = await http.get(f"{guarded.url}/a2a/vision/.well-known/agent-card.json", headers=key)
    assert resp.status_code == 404
    assert len(agents["vision"].protocol_calls()) == vision_calls
    # no key at all: 401 in JSON-RPC shape
    resp = await http.post(f"{guarded.url}/a2a/writer/", json=image)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == -32600
    # the caller's key is consumed, never forwarded
    text = {
        **image,
        "params": {"message": {**image["params"]["message"], "parts": [{"text": "hi"}]}},
    }  # type: ignore[dict-item]
    resp = await http.post(f"{guarded.url}/a2a/writer/", json=text, headers=key)
    assert "result" in resp.json(), resp.text
    assert all("x-api-key" not in c.headers for c in agents["writer"].calls)


# -- errors ---------------------------------------------------------------------------------


async def _rpc(
    http: httpx.AsyncClient, url: str, method: str, params: dict[str, Any], version: str = "1.0"
) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    return await http.post(url, json=body, headers={"A2A-Version": version})


async def test_unknown_agent_and_task(gateway: Gateway, http: httpx.AsyncClient) -> None:
    resp = await _rpc(http, f"{gateway.url}/a2a/nobody/", "GetTask", {"id": "t"})
    assert resp.status_code == 404 and "nobody" in resp.json()["error"]["message"]
    resp = await http.get(f"{gateway.url}/a2a/nobody/tasks/t", headers={"A2A-Version": "1.0"})
    assert resp.status_code == 404 and "error" in resp.json()
    resp = await _rpc(http, f"{gateway.url}/a2a/", "GetTask", {"id": "no-such-task"})
    assert resp.json()["error"]["code"] == -32001
    resp = await _rpc(http, f"{gateway.url}/a2a/writer/", "GetTask", {"id": "no-such-task"})
    assert resp.json()["error"]["code"] == -32001
    resp = await _rpc(http, f"{gateway.url}/a2a/", "tasks/get", {"id": "nope"}, version="")
    assert resp.json()["error"]["code"] == -32001


async def test_bad_requests(gateway: Gateway, http: httpx.AsyncClient) -> None:
    url = f"{gateway.url}/a2a/writer/"
    resp = await http.post(url, content=b"{not json")
    assert resp.json()["error"]["code"] == -32700
    resp = await http.post(url, json=[1, 2])
    assert resp.json()["error"]["code"] == -32600
    resp = await _rpc(http, url, "NoSuchMethod", {})
    assert resp.json()["error"]["code"] == -32601
    resp = await _rpc(http, url, "GetTask", {"id": "t"}, version="9.9")
    assert resp.json()["error"]["code"] == -32009
    resp = await http.delete(f"{url}message:send", headers={"A2A-Version": "1.0"})
    assert resp.status_code == 405


async def test_agent_down(gateway: Gateway, http: httpx.AsyncClient) -> None:
    message = {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}
    resp = await _rpc(http, f"{gateway.url}/a2a/down/", "SendMessage", message)
    error = resp.json()["error"]
    assert error["code"] == -32603 and "down" in error["message"]
    resp = await http.post(
        f"{gateway.url}/a2a/down/message:send", json=message, headers={"A2A-Version": "1.0"}
    )
    assert resp.status_code == 502
    resp = await http.get(f"{gateway.url}/a2a/down/.well-known/agent-card.json")
    assert resp.status_code == 502


def test_v03_client_to_v10_agent(gateway: Gateway) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": "v03",
        "method": "message/send",
        "params": {
            "message": {
                "kind": "message",
                "messageId": "m03",
                "role": "user",
                "parts": [{"kind": "text", "text": "describe nothing"}],
            }
        },
    }
    resp = httpx.post(f"{gateway.url}/a2a/vision/", json=body, timeout=20)
    result = resp.json()["result"]
    assert result["kind"] == "task", json.dumps(result)
    assert result["status"]["state"] == "completed"


async def test_garbage_cut_and_hanging_agents(gateway: Gateway, http: httpx.AsyncClient) -> None:
    message = {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}
    resp = await _rpc(http, f"{gateway.url}/a2a/garbage/", "SendMessage", message)
    assert resp.json()["error"]["code"] == -32006, resp.text
    resp = await _rpc(http, f"{gateway.url}/a2a/hang/", "SendMessage", message)
    error = resp.json()["error"]
    assert error["code"] == -32603 and "in time" in error["message"], error
    resp = await http.post(
        f"{gateway.url}/a2a/hang/message:send", json=message, headers={"A2A-Version": "1.0"}
    )
    assert resp.status_code == 504
    # a stream that stops before its task settled ends with an error event
    body = {"jsonrpc": "2.0", "id": 3, "method": "SendStreamingMessage", "params": message}
    async with http.stream(
        "POST", f"{gateway.url}/a2a/cut/", json=body, headers={"A2A-Version": "1.0"}
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        data = [
            json.loads(line[5:]) async for line in stream.aiter_lines() if line.startswith("data:")
        ]
    assert data[0]["result"]["task"]["id"] == "cut-task"
    assert data[-1]["error"]["code"] == -32603 and data[-1]["id"] == 3


@pytest.mark.parametrize("binding", BINDINGS)
async def test_rest_only_agent(
    gateway: Gateway, agents: dict[str, RunningAgent], binding: str
) -> None:
    before = len(agents["writer"].calls)
    async with _client(f"{gateway.url}/a2a/rest-writer", binding) as client:
        events = await _events(client, _message("Summarize: REST is enough."))
        task = events[0].task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        got = await client.get_task(GetTaskRequest(id=task.id))
        assert got.id == task.id
    calls = agents["writer"].calls[before:]
    assert [(c.http_method, c.path) for c in calls] == [
        ("POST", "/message:send"),
        ("GET", f"/tasks/{task.id}"),
    ]


async def test_v10_client_to_v03_agent_streams(
    gateway: Gateway, agents: dict[str, RunningAgent]
) -> None:
    async with _client(
        f"{gateway.url}/a2a/legacy", TransportProtocol.JSONRPC, streaming=True
    ) as client:
        message = _message("stream please")
        message.metadata.update({"steps": 2, "delay": 0.01})
        events = await _events(client, message)
        assert len(events) >= 3
        task_id = (
            events[0].task.id if events[0].HasField("task") else (events[0].status_update.task_id)
        )
        got = await client.get_task(GetTaskRequest(id=task_id))
        assert got.status.state == TaskState.TASK_STATE_COMPLETED
    methods = agents["legacy"].rpc_methods()
    assert "message/stream" in methods and "tasks/get" in methods


async def test_context_follow_up_through_the_router(
    gateway: Gateway, agents: dict[str, RunningAgent]
) -> None:
    async with _client(f"{gateway.url}/a2a/asker", TransportProtocol.JSONRPC) as client:
        first = (await _events(client, _message("What is the answer?")))[0].task
        assert first.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    before = len(agents["asker"].protocol_calls())
    async with _client(f"{gateway.url}/a2a", TransportProtocol.HTTP_JSON) as router:
        follow = _message("French", context_id=first.context_id, task_id=first.id)
        done = (await _events(router, follow))[0].task
        assert done.id == first.id
        assert done.status.state == TaskState.TASK_STATE_COMPLETED
    assert len(agents["asker"].protocol_calls()) == before + 1


def test_no_tracebacks_in_the_log(gateway: Gateway) -> None:
    assert "Traceback" not in gateway.log()


async def _until(predicate: Any, what: str) -> None:
    """Poll `predicate` with a short backoff (never a fixed sleep)."""
    delay = 0.01
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise TimeoutError(what)


async def test_registry_marks_agents_down_and_up(bad_agent: BadAgent) -> None:
    config = A2aBackendConfig.model_validate(
        {
            "type": "a2a",
            "card_refresh_seconds": 0.05,
            "task_store": {"type": "memory"},
            "agents": {
                "flaky": {"url": f"{bad_agent.url}/flaky"},
                "legacy": {"url": f"{bad_agent.url}/legacy"},
            },
        }
    )
    bad_agent.flaky_down = True
    registry = AgentRegistry(config)
    await registry.start()
    try:
        flaky = registry.get("flaky")
        assert flaky is not None and not flaky.up
        assert "503" in registry.down_reason["flaky"]
        legacy = registry.get("legacy")  # found at the legacy agent.json
        assert legacy is not None and legacy.up
        assert legacy.interfaces[0].url == f"{bad_agent.url}/legacy"
        bad_agent.flaky_down = False
        await _until(lambda: registry.agents["flaky"].up, "flaky up")
        assert registry.agents["flaky"].card["name"] == "flaky"
        bad_agent.flaky_down = True
        await _until(lambda: not registry.agents["flaky"].up, "flaky down")
    finally:
        bad_agent.flaky_down = False
        await registry.close()


def test_card_security_for_jwt() -> None:
    config = TypeAdapter(PolicyConfig).validate_python(
        {
            "type": "jwt",
            "issuer": "https://idp.example",
            "jwks_url": "https://idp.example/jwks",
            "required_scopes": ["a2a"],
            "protected_resource": {
                "resource": "https://gw.example/a2a",
                "authorization_servers": ["https://idp.example"],
            },
        }
    )
    ctx = RequestContext("r", "b", "id", "/", chain=build_chain([config]))
    schemes, requirements = cards.security_v10(ctx)
    bearer = schemes["bearer"]["httpAuthSecurityScheme"]
    assert bearer["bearerFormat"] == "JWT"
    assert "https://gw.example/.well-known/oauth-protected-resource/a2a" in bearer["description"]
    assert requirements == [{"schemes": {"bearer": {"list": ["a2a"]}}}]
    legacy, security = cards.security_v03(ctx)
    assert legacy["bearer"]["type"] == "http" and security == [{"bearer": ["a2a"]}]
    assert cards.security_v10(RequestContext("r", "b", "id", "/")) == ({}, [])


def test_public_base_believes_forwarded_only_when_trusted() -> None:
    scope = {"scheme": "http", "headers": [(b"host", b"gw.local:8080")], "server": None}
    ctx = RequestContext("r", "b", "id", "/")
    assert cards.public_base(scope, ctx) == "http://gw.local:8080"
    ctx.attrs[FORWARDED] = Forwarded("1.2.3.4", "https", "agents.example")
    assert cards.public_base(scope, ctx) == "https://agents.example"


PUSH_AND_CARD_CALLS = [
    ("CreateTaskPushNotificationConfig", {"taskId": "t-1", "url": "https://hooks.example/x"}),
    ("GetTaskPushNotificationConfig", {"taskId": "t-1", "id": "c-1"}),
    ("ListTaskPushNotificationConfigs", {"taskId": "t-1"}),
    ("DeleteTaskPushNotificationConfig", {"taskId": "t-1", "id": "c-1"}),
    ("GetExtendedAgentCard", {}),
]


@pytest.mark.parametrize(("method", "params"), PUSH_AND_CARD_CALLS, ids=lambda v: str(v)[:40])
async def test_push_config_and_extended_card_answer_as_the_agent_does(
    gateway: Gateway,
    agents: dict[str, RunningAgent],
    http: httpx.AsyncClient,
    method: str,
    params: dict[str, Any],
) -> None:
    """The push-config methods and GetExtendedAgentCard reach the agent and come back with the
    agent's own answer (the same error code as calling it directly), never pointing past
    Crossway."""
    writer = agents["writer"]
    direct = (await _rpc(http, writer.url + "/", method, params)).json()
    through = await _rpc(http, f"{gateway.url}/a2a/writer/", method, params)
    answer = through.json()
    if "error" in direct:
        assert answer["error"]["code"] == direct["error"]["code"], (direct, answer)
    else:
        assert "result" in answer, answer
        assert writer.url not in through.text
