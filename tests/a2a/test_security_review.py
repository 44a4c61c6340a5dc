"""Security review of the A2A gateway: a real `crossway serve` in front of real a2a-sdk agents
(and a hostile card server), attacked through its public routes. Each test is a finding's
regression test (it failed before the fix)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from tests.a2a.agents import RunningAgent, run_agent
from tests.helpers import Gateway, free_port, start_gateway, wait_for

WRITER_KEY = "writer-key-0123456789abcdef"
BOSS_KEY = "boss-key-0123456789abcdefgh"
V10 = {"A2A-Version": "1.0"}
HOSTILE_SKILL = "hello\r\nset-cookie: pwned=1"


class HostileCards:
    """A loopback server whose agent card has a skill id with CR/LF in it (answers every call
    with a plain message)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["method"] == "GET":
            body: dict[str, Any] = {
                "name": "hostile",
                "description": "a card with a hostile skill id",
                "version": "1.0.0",
                "supportedInterfaces": [
                    {"url": self.url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
                ],
                "capabilities": {},
                "defaultInputModes": ["text/plain"],
                "defaultOutputModes": ["text/plain"],
                "skills": [
                    {"id": HOSTILE_SKILL, "name": "hello", "description": "says hello world"}
                ],
            }
        else:
            message = {"messageId": "a1", "role": "ROLE_AGENT", "parts": [{"text": "hello"}]}
            body = {"jsonrpc": "2.0", "id": 1, "result": {"message": message}}
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileCards]:
    server_app = HostileCards()
    config = uvicorn.Config(server_app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [server_app.sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the hostile card server")
    yield server_app
    server.should_exit = True
    thread.join(10)
    server_app.sock.close()


@pytest.fixture(scope="module")
def agents() -> Iterator[dict[str, RunningAgent]]:
    with run_agent("writer", "both") as writer, run_agent("vision", "1.0") as vision:
        yield {"writer": writer, "vision": vision}


@pytest.fixture(scope="module")
def gateway(agents: dict[str, RunningAgent], hostile: HostileCards) -> Iterator[Gateway]:
    down = free_port()
    config = f"""
routes:
  - name: a2a
    match: {{path: {{prefix: /a2a}}}}
    backend: agents
    policies:
      - type: api_key
        keys: {{writer: {WRITER_KEY}, boss: {BOSS_KEY}}}
      - type: authorization
        allow: ['a2a.agent == "writer"', 'key.name == "boss"']
        deny: ['has(a2a.skill) && a2a.skill == "translate" && key.name != "boss"']
backends:
  agents:
    type: a2a
    task_store: {{type: memory}}
    timeouts: {{call: 10, card: 2}}
    agents:
      writer: {{url: {agents["writer"].url}}}
      vision: {{url: {agents["vision"].url}}}
      down: {{url: "http://127.0.0.1:{down}"}}
  open:
    type: a2a
    task_store: {{type: memory}}
    agents:
      hostile: {{url: {hostile.url}}}
"""
    config = config.replace(
        "backends:",
        "  - name: open\n    match: {path: {prefix: /open}}\n    backend: open\nbackends:",
        1,
    )
    with start_gateway(config) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


def _rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


def _message(text: str, **fields: Any) -> dict[str, Any]:
    return {
        "message": {"messageId": "m-1", "role": "ROLE_USER", "parts": [{"text": text}], **fields}
    }


def _key(key: str) -> dict[str, str]:
    return {"x-api-key": key, **V10}


async def test_router_follow_up_does_not_reveal_a_hidden_agents_task(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    """A caller allowed only the writer asking the router about a vision task gets the same
    answer as for a task that does not exist (it used to get 403 "agent 'vision' is not
    allowed": the task exists, and who owns it)."""
    made = await http.post(
        f"{gateway.url}/a2a/vision/",
        json=_rpc("SendMessage", _message("hi")),
        headers=_key(BOSS_KEY),
    )
    task = made.json()["result"]["task"]
    unknown = await http.post(
        f"{gateway.url}/a2a/",
        json=_rpc("GetTask", {"id": "no-such-task"}),
        headers=_key(WRITER_KEY),
    )
    for body in (
        _rpc("GetTask", {"id": task["id"]}),
        _rpc("CancelTask", {"id": task["id"]}),
        _rpc("tasks/get", {"id": task["id"]}),
        _rpc("SendMessage", _message("more", taskId=task["id"])),
    ):
        resp = await http.post(f"{gateway.url}/a2a/", json=body, headers=_key(WRITER_KEY))
        assert resp.status_code == unknown.status_code, resp.text
        assert resp.json()["error"]["code"] == -32001, resp.text
        assert "vision" not in resp.text
    resp = await http.get(f"{gateway.url}/a2a/tasks/{task['id']}", headers=_key(WRITER_KEY))
    assert resp.status_code == 404 and "vision" not in resp.text, resp.text


async def test_explicit_skill_is_the_agents_own(
    gateway: Gateway, agents: dict[str, RunningAgent], http: httpx.AsyncClient
) -> None:
    """`a2a.skill` is the agent's own skill id: the router-card form `writer/translate` cannot
    dodge a rule on `translate`, and a skill the agent lacks is refused before any policy."""
    before = len(agents["writer"].protocol_calls())
    url = f"{gateway.url}/a2a/writer/"
    for skill in ("translate", "writer/translate"):
        body = _rpc("SendMessage", _message("Translate: bonjour", metadata={"skillId": skill}))
        resp = await http.post(url, json=body, headers=_key(WRITER_KEY))
        assert resp.status_code == 403, (skill, resp.text)
    body = _rpc("SendMessage", _message("hi", metadata={"crossway/skill": "made-up"}))
    resp = await http.post(url, json=body, headers=_key(WRITER_KEY))
    assert resp.json()["error"]["code"] == -32602, resp.text
    assert len(agents["writer"].protocol_calls()) == before
    body = _rpc("SendMessage", _message("Summarize: x", metadata={"skillId": "writer/summarize"}))
    resp = await http.post(url, json=body, headers=_key(WRITER_KEY))
    assert "result" in resp.json(), resp.text


async def test_errors_never_name_the_agents_host(gateway: Gateway, http: httpx.AsyncClient) -> None:
    """An agent that is down is reported by name, never by its address (cards hide it)."""
    message = _message("hi")
    boss = _key(BOSS_KEY)
    answers = [
        await http.post(
            f"{gateway.url}/a2a/down/", json=_rpc("SendMessage", message), headers=boss
        ),
        await http.post(f"{gateway.url}/a2a/down/message:send", json=message, headers=boss),
        await http.get(f"{gateway.url}/a2a/down/.well-known/agent-card.json", headers=boss),
    ]
    for resp in answers:
        assert "down" in resp.text, resp.text
        assert "127.0.0.1" not in resp.text, resp.text


async def test_a_hostile_skill_id_cannot_break_the_route_header(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    """A skill id with CR/LF in an agent's card made every router pick of it a 500 (an invalid
    `x-crossway-route` header) and injected a line into the log."""
    body = _rpc("SendMessage", _message("hello world"))
    resp = await http.post(f"{gateway.url}/open/", json=body, headers=V10)
    assert resp.status_code == 200, resp.text
    assert "result" in resp.json()
    header = resp.headers["x-crossway-route"]
    assert header.startswith("agent=hostile") and "%0D%0A" in header
    assert "set-cookie" not in {k.lower() for k in resp.headers}
    log = gateway.log()
    assert "Traceback" not in log
    # No injected line, whatever the log's format (JSON lines escape a raw newline; text would
    # start a line with the header).
    assert not any(line.lstrip().startswith("set-cookie: pwned=1") for line in log.splitlines())


async def test_a_callers_tasks_are_its_own(gateway: Gateway, http: httpx.AsyncClient) -> None:
    """Finding 5 (high): behind Crossway every caller looks like one user to the agent, so
    another caller allowed the same agent could get, cancel, list and continue someone else's
    tasks. Now only the caller that created a task (or context) through Crossway reaches it."""
    url = f"{gateway.url}/a2a/writer/"
    created = await http.post(
        url, json=_rpc("SendMessage", _message("mine")), headers=_key(BOSS_KEY)
    )
    task = created.json()["result"]["task"]
    task_id, context_id = task["id"], task["contextId"]
    # The creator follows up as usual.
    own = await http.post(url, json=_rpc("GetTask", {"id": task_id}), headers=_key(BOSS_KEY))
    assert own.json()["result"]["id"] == task_id, own.text
    # Another caller allowed the writer: the task does not exist for it.
    for method, params in (
        ("GetTask", {"id": task_id}),
        ("CancelTask", {"id": task_id}),
        ("SubscribeToTask", {"id": task_id}),
    ):
        answer = await http.post(url, json=_rpc(method, params), headers=_key(WRITER_KEY))
        assert answer.json()["error"]["code"] == -32001, (method, answer.text)
    follow_up = _message("and more", contextId=context_id)
    answer = await http.post(url, json=_rpc("SendMessage", follow_up), headers=_key(WRITER_KEY))
    assert answer.json()["error"]["code"] == -32001, answer.text
    # REST too, and the list never shows it.
    rest = await http.get(f"{url}tasks/{task_id}", headers=_key(WRITER_KEY))
    assert rest.status_code == 404, rest.text
    listed = await http.post(url, json=_rpc("ListTasks", {}), headers=_key(WRITER_KEY))
    assert task_id not in listed.text, listed.text
    mine = await http.post(url, json=_rpc("ListTasks", {}), headers=_key(BOSS_KEY))
    assert task_id in mine.text, mine.text
