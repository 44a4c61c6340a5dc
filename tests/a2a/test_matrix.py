"""Issue 8's client x binding x version matrix: the a2a-sdk client (as a v1.0 client, and as a
v0.3 one through its compat transports) and the @a2a-js/sdk client (`legacyCompat` off; on, as
it fetches cards; on with a v0.3 card, so that its v0.3 transports are used) send, stream, get,
list and cancel tasks through one `crossway serve` in front of a2a-sdk agents speaking v1.0 or
only v0.3, on JSON-RPC and on HTTP+JSON.

Each library hands back its own (v1.0) types, converted here to v1.0 JSON; the a2a-sdk cases also
check the wire: v0.3 methods, paths and state spellings (`completed`, REST's
`TASK_STATE_CANCELLED`) for a v0.3 client, v1.0 ones for a v1.0 client. Every call reaches the
agent in the agent's version and in the client's binding. `ListTasks` has no v0.3 form
(docs/a2a.md): a v0.3 client cannot list (both libraries refuse before sending) and a v1.0
client listing a v0.3 agent gets -32004 UnsupportedOperation (REST: 400 `UNSUPPORTED_OPERATION`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.client import Client
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
)
from a2a.utils.errors import A2AError
from google.protobuf.json_format import MessageToDict, ParseDict

from tests.a2a.agents import Call, RunningAgent, run_agent
from tests.helpers import ROOT, Gateway, missing_component, start_gateway

NODE_DIR = ROOT / "tests" / "node"
NODE_CLIENT = NODE_DIR / "a2a_client.mjs"
CALL_TIMEOUT = 30.0
CLIENTS: dict[str, tuple[str, str]] = {
    "sdk-1.0": ("sdk", "1.0"),
    "sdk-0.3": ("sdk", "0.3"),
    "js-1.0": ("js", "1.0"),
    "js-compat": ("js", "1.0"),
    "js-0.3": ("js", "0.3"),
}
"""Client -> (library, the version it speaks to Crossway). `js-1.0`: @a2a-js/sdk with
`legacyCompat` off; `js-compat`: on, as the SDK fetches cards (A2A-Version: 1.0: Crossway's v1.0
card, whose v1.0 interfaces it prefers); `js-0.3`: on, with the v0.3 card (its v0.3 transports)."""
JS_MODES: dict[str, list[str]] = {
    "js-1.0": ["--legacy-compat", "off"],
    "js-compat": ["--legacy-compat", "on"],
    "js-0.3": ["--legacy-compat", "on", "--card-version", "0.3"],
}
BINDINGS = ["JSONRPC", "HTTP+JSON"]
AGENT_VERSIONS = ["1.0", "0.3"]
STREAM_STEPS = 3
STREAM_DELAY = 0.1
"""Seconds between streamed chunks: events that arrive this far apart were not buffered."""
SLOW = {"steps": 400, "delay": 0.05}
"""A streamer task that runs for 20 s unless canceled."""
TEXT = "Crossway bridges agents. It speaks both versions."
SUMMARY = "Summary: Crossway bridges agents"
"""The writer's reply to TEXT (its first sentence)."""

Cell = tuple[str, str, str]
"""(client, binding, agent version)."""
Json = dict[str, Any]


@pytest.fixture(scope="module")
def agents() -> Iterator[dict[str, RunningAgent]]:
    with (
        run_agent("writer", "1.0") as writer10,
        run_agent("writer", "0.3") as writer03,
        run_agent("streamer", "1.0") as streamer10,
        run_agent("streamer", "0.3") as streamer03,
    ):
        yield {
            "writer10": writer10,
            "writer03": writer03,
            "streamer10": streamer10,
            "streamer03": streamer03,
        }


@pytest.fixture(scope="module")
def gateway(agents: dict[str, RunningAgent]) -> Iterator[Gateway]:
    block = "\n".join(f"      {n}: {{url: {a.url}}}" for n, a in agents.items())
    config = f"""
routes:
  - name: a2a
    match: {{path: {{prefix: /a2a}}}}
    backend: agents
backends:
  agents:
    type: a2a
    task_store: {{type: memory}}
    timeouts: {{call: 30, card: 5}}
    agents:
{block}
"""
    with start_gateway(config) as gw:
        yield gw


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    if binary is None or not (NODE_DIR / "node_modules" / "@a2a-js" / "sdk").is_dir():
        missing_component("node and tests/node/node_modules/@a2a-js/sdk: run `make node-deps`")
    return str(binary)


# -- the clients, behind one interface (answers as v1.0 JSON) ----------------------------------


class ClientError(Exception):
    """An error the client library raised: its class (`kind`), and what the Node client reports
    (`code`: JSON-RPC, `status`/`reason`: REST; None when no call was made)."""

    def __init__(
        self, kind: str, message: str, code: Any = None, status: Any = None, reason: Any = None
    ) -> None:
        super().__init__(f"{kind}: {message} (code {code}, status {status}, reason {reason})")
        self.kind, self.message = kind, message
        self.code, self.status, self.reason = code, status, reason


@dataclass(frozen=True)
class WireCall:
    what: str
    """The JSON-RPC method, or `METHOD path` for REST (`stream` for an SSE answer)."""
    version: str
    """The `A2A-Version` header sent."""
    status: int
    body: Any
    """The JSON answer (None for a stream)."""

    @property
    def state(self) -> str | None:
        """The task state as spelled on the wire (v0.3 JSON-RPC answers a bare task)."""
        body = self.body if isinstance(self.body, dict) else {}
        task = body.get("result", body)
        task = task.get("task", task) if isinstance(task, dict) else {}
        return task.get("status", {}).get("state") if isinstance(task, dict) else None


@dataclass
class SdkClient:
    """a2a-sdk 1.x, as a v1.0 client (`A2A-Version: 1.0` on every request, as its own default
    httpx client sends), or as a v0.3 one: it asks for the v0.3 card, whose interfaces say 0.3,
    so the client factory picks its compat transports, which speak v0.3 on the wire."""

    version: str
    binding: str
    url: str
    wire: list[WireCall] = field(default_factory=list)

    async def _record(self, response: httpx.Response) -> None:
        request = response.request
        if request.url.path.endswith("agent-card.json"):
            return
        what, body = f"{request.method} {request.url.path}", None
        if "text/event-stream" in response.headers.get("content-type", ""):
            what = "stream"
        else:
            body = json.loads(await response.aread() or b"null")
            if request.method == "POST" and request.content.startswith(b"{"):
                what = str(json.loads(request.content).get("method", what))
        version = request.headers.get("a2a-version", "")
        self.wire.append(WireCall(what, version, response.status_code, body))

    @contextlib.asynccontextmanager
    async def _client(self, *, streaming: bool = False) -> Any:
        headers = {"A2A-Version": "1.0"} if self.version == "1.0" else {}
        hooks = {"response": [self._record]}
        async with httpx.AsyncClient(
            timeout=CALL_TIMEOUT, headers=headers, event_hooks=hooks
        ) as http:
            config = ClientConfig(
                streaming=streaming, httpx_client=http, supported_protocol_bindings=[self.binding]
            )
            client: Client = await ClientFactory(config).create_from_url(
                self.url, resolver_http_kwargs={"headers": {"A2A-Version": self.version}}
            )
            try:
                yield client
            except (A2AError, NotImplementedError) as exc:
                raise ClientError(type(exc).__name__, str(exc)) from exc
            finally:
                await client.close()

    @staticmethod
    def _request(text: str, metadata: Json | None = None, **config: Any) -> SendMessageRequest:
        message = Message(
            message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)]
        )
        req = SendMessageRequest(message=message, configuration=SendMessageConfiguration(**config))
        if metadata:
            ParseDict(metadata, req.metadata)
        return req

    async def send(self, text: str) -> Json:
        async with self._client() as client:
            (only,) = [MessageToDict(e) async for e in client.send_message(self._request(text))]
            return only

    async def get(self, task_id: str) -> Json:
        async with self._client() as client:
            return MessageToDict(await client.get_task(GetTaskRequest(id=task_id)))

    async def list(self, context_id: str) -> Json:
        async with self._client() as client:
            return MessageToDict(await client.list_tasks(ListTasksRequest(context_id=context_id)))

    async def stream(self, metadata: Json) -> tuple[list[Json], float]:
        """The events, and the seconds from the first to the last."""
        events, times = [], []
        async with self._client(streaming=True) as client:
            async for event in client.send_message(self._request("go", metadata)):
                times.append(time.monotonic())
                events.append(MessageToDict(event))
        return events, times[-1] - times[0]

    async def cancel_running(self, metadata: Json) -> tuple[Json, Json]:
        """Send with returnImmediately, then cancel that task: (sent result, canceled task)."""
        async with self._client() as client:
            req = self._request("go", metadata, return_immediately=True)
            (sent,) = [MessageToDict(e) async for e in client.send_message(req)]
            canceled = await client.cancel_task(CancelTaskRequest(id=sent["task"]["id"]))
            return sent, MessageToDict(canceled)


@dataclass
class JsClient:
    """@a2a-js/sdk 1.x through tests/node/a2a_client.mjs: `legacyCompat` off (a v1.0 client),
    or on with the card fetched with `A2A-Version: 0.3`: a v0.3 card, so its v0.3 transports."""

    name: str
    """A key of JS_MODES."""
    binding: str
    url: str
    node: str

    async def run(self, command: str, *args: str) -> Json:
        card_url = self.url + "/.well-known/agent-card.json"
        options = ["--transport", self.binding, *JS_MODES[self.name], *args]
        proc = await asyncio.create_subprocess_exec(
            *(self.node, str(NODE_CLIENT), command, card_url, *options),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), CALL_TIMEOUT)
        assert proc.returncode == 0, err.decode()
        answer: Json = json.loads(out)
        if "error" in answer:
            e = answer["error"]
            raise ClientError(e["name"], e["message"], e["code"], e["statusCode"], e["reason"])
        return answer

    async def send(self, text: str) -> Json:
        return (await self.run("send", "--text", text))["result"]  # type: ignore[no-any-return]

    async def get(self, task_id: str) -> Json:
        return (await self.run("get", "--task", task_id))["result"]  # type: ignore[no-any-return]

    async def list(self, context_id: str) -> Json:
        return (await self.run("list", "--context", context_id))["result"]  # type: ignore[no-any-return]

    async def stream(self, metadata: Json) -> tuple[list[Json], float]:
        answer = await self.run("stream", "--text", "go", "--metadata", json.dumps(metadata))
        return answer["events"], (answer["times"][-1] - answer["times"][0]) / 1000

    async def cancel_running(self, metadata: Json) -> tuple[Json, Json]:
        answer = await self.run("cancel", "--metadata", json.dumps(metadata))
        return answer["sent"], answer["result"]


# -- the matrix ---------------------------------------------------------------------------------

CELLS = [(c, b, v) for c in CLIENTS for b in BINDINGS for v in AGENT_VERSIONS]


@pytest.fixture(params=CELLS, ids=lambda cell: "{}-{}-agent{}".format(*cell))
def cell(request: pytest.FixtureRequest) -> Cell:
    return request.param  # type: ignore[no-any-return]


def _client(
    cell: Cell, gateway: Gateway, agent: RunningAgent, request: pytest.FixtureRequest
) -> SdkClient | JsClient:
    lib, version = CLIENTS[cell[0]]
    url = f"{gateway.url}/a2a/{agent.name}{agent.version.replace('.', '')}"
    if lib == "sdk":
        return SdkClient(version, cell[1], url)
    return JsClient(cell[0], cell[1], url, request.getfixturevalue("node"))


def _agent(agents: dict[str, RunningAgent], kind: str, cell: Cell) -> RunningAgent:
    return agents[kind + cell[2].replace(".", "")]


@contextlib.contextmanager
def _reaching(agent: RunningAgent, binding: str) -> Iterator[list[Call]]:
    """The calls reaching `agent` in the block; on exit, there are some and each is in the
    agent's version (v0.3 agents get no `A2A-Version`) and the client's binding."""
    before = len(agent.calls)
    calls: list[Call] = []
    yield calls
    calls.extend(c for c in agent.calls[before:] if c.binding != "CARD")
    version = "1.0" if agent.version == "1.0" else ""
    assert {(c.binding, c.version) for c in calls} == {(binding, version)}, calls


def _state(task: Json) -> str:
    return str(task["status"]["state"])


def _text(task: Json) -> str:
    return "".join(p["text"] for a in task.get("artifacts", []) for p in a["parts"])


def _wire_methods(cell: Cell, agent_path: str, task_id: str, ops: list[str]) -> list[str]:
    """What the a2a-sdk client must have sent for `ops` (send, get, list, cancel)."""
    client_version, binding = CLIENTS[cell[0]][1], cell[1]
    if binding == "JSONRPC":
        names = (
            {"send": "message/send", "get": "tasks/get", "cancel": "tasks/cancel"}
            if client_version == "0.3"
            else {
                "send": "SendMessage",
                "get": "GetTask",
                "list": "ListTasks",
                "cancel": "CancelTask",
            }
        )
        return [names[op] for op in ops]
    base = f"/a2a/{agent_path}" + ("/v1" if client_version == "0.3" else "")
    paths = {
        "send": f"POST {base}/message:send",
        "get": f"GET {base}/tasks/{task_id}",
        "list": f"GET {base}/tasks",
        "cancel": f"POST {base}/tasks/{task_id}:cancel",
    }
    return [paths[op] for op in ops]


async def test_send_get_list(
    cell: Cell, gateway: Gateway, agents: dict[str, RunningAgent], request: pytest.FixtureRequest
) -> None:
    client_version, binding, agent_version = CLIENTS[cell[0]][1], cell[1], cell[2]
    writer = _agent(agents, "writer", cell)
    client = _client(cell, gateway, writer, request)
    with _reaching(writer, binding) as calls:
        task = (await client.send(TEXT))["task"]
        assert _state(task) == "TASK_STATE_COMPLETED" and _text(task) == SUMMARY, task
        got = await client.get(task["id"])
        assert (got["id"], got["contextId"]) == (task["id"], task["contextId"])
        assert _state(got) == "TASK_STATE_COMPLETED" and _text(got) == SUMMARY
        if client_version == "0.3" or agent_version == "0.3":
            with pytest.raises(ClientError) as caught:
                await client.list(task["contextId"])
            refused = caught.value
        else:
            listed = await client.list(task["contextId"])
            assert [(t["id"], _state(t)) for t in listed["tasks"]] == [
                (task["id"], "TASK_STATE_COMPLETED")
            ]
    lists = [c for c in calls if c.rpc_method == "ListTasks" or c.path in ("/tasks", "/v1/tasks")]
    assert len(lists) == (client_version == agent_version == "1.0")  # refused ones never reach it
    lib = CLIENTS[cell[0]][0]
    if client_version == "0.3":
        # Both libraries refuse ListTasks on a v0.3 interface before sending anything (v0.3 has
        # no tasks/list): the client's own, specified limitation.
        expected = {
            ("sdk", "JSONRPC"): ("NotImplementedError", "not supported in A2A v0.3 JSONRPC"),
            ("sdk", "HTTP+JSON"): ("NotImplementedError", "not supported in A2A v0.3 REST"),
            ("js", "JSONRPC"): ("JsonRpcTransportError", "Method not found: tasks/list"),
            ("js", "HTTP+JSON"): ("UnsupportedOperationError", "no equivalent in v0.3 HTTP+JSON"),
        }[(lib, binding)]
        assert (refused.kind, refused.status) == (expected[0], None), refused
        assert expected[1] in refused.message, refused
    elif agent_version == "0.3":  # documented: Crossway answers -32004 UnsupportedOperation
        assert refused.kind == "UnsupportedOperationError", refused
        if isinstance(client, JsClient):
            if binding == "JSONRPC":
                assert refused.code == -32004, refused
            else:
                assert (refused.status, refused.reason) == (400, "UNSUPPORTED_OPERATION"), refused
    if isinstance(client, SdkClient):
        ops = ["send", "get"] if client_version == "0.3" else ["send", "get", "list"]
        path = writer.name + agent_version.replace(".", "")
        assert [w.what for w in client.wire] == _wire_methods(cell, path, task["id"], ops)
        assert {w.version for w in client.wire} == {client_version}
        v03_rpc = client_version == "0.3" and binding == "JSONRPC"
        completed = "completed" if v03_rpc else "TASK_STATE_COMPLETED"
        assert [w.state for w in client.wire[:2]] == [completed, completed]
        if client_version == "1.0" and agent_version == "0.3":
            error = client.wire[2].body["error"]
            assert error["data" if binding == "JSONRPC" else "details"][0]["reason"] == (
                "UNSUPPORTED_OPERATION"
            )
            assert (client.wire[2].status, error["code"]) == (
                (200, -32004) if binding == "JSONRPC" else (400, 400)
            )


async def test_stream(
    cell: Cell, gateway: Gateway, agents: dict[str, RunningAgent], request: pytest.FixtureRequest
) -> None:
    streamer = _agent(agents, "streamer", cell)
    client = _client(cell, gateway, streamer, request)
    with _reaching(streamer, cell[1]):
        events, spread = await client.stream({"steps": STREAM_STEPS, "delay": STREAM_DELAY})
    kinds = [next(iter(e)) for e in events]
    assert len(events) >= 2 and kinds[0] == "task", kinds
    chunks = [
        e["artifactUpdate"]["artifact"]["parts"][0]["text"] for e in events if "artifactUpdate" in e
    ]
    assert chunks == [f"chunk {i + 1} " for i in range(STREAM_STEPS)]
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    task_id = events[0]["task"]["id"]
    assert {e[k]["taskId"] for e, k in zip(events[1:], kinds[1:], strict=True)} == {task_id}
    assert spread >= (STREAM_STEPS - 1) * STREAM_DELAY, spread  # event by event, not buffered


async def test_cancel(
    cell: Cell, gateway: Gateway, agents: dict[str, RunningAgent], request: pytest.FixtureRequest
) -> None:
    streamer = _agent(agents, "streamer", cell)
    client = _client(cell, gateway, streamer, request)
    with _reaching(streamer, cell[1]):
        sent, canceled = await client.cancel_running(SLOW)
        task = sent["task"]
        assert _state(task) in {"TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"}, task
        assert canceled["id"] == task["id"] and _state(canceled) == "TASK_STATE_CANCELED"
        got = await client.get(task["id"])
        assert got["id"] == task["id"] and _state(got) == "TASK_STATE_CANCELED"
    if isinstance(client, SdkClient):
        v03 = cell[0] == "sdk-0.3"
        path = streamer.name + cell[2].replace(".", "")
        ops = ["send", "cancel", "get"]
        assert [w.what for w in client.wire] == _wire_methods(cell, path, task["id"], ops)
        # v0.3 spells it `canceled` in JSON-RPC and TASK_STATE_CANCELLED in its REST (protobuf)
        spelled = {"JSONRPC": "canceled", "HTTP+JSON": "TASK_STATE_CANCELLED"}[cell[1]]
        assert [w.state for w in client.wire[1:]] == [spelled if v03 else "TASK_STATE_CANCELED"] * 2


def test_js_modes_use_their_versions(gateway: Gateway, node: str) -> None:
    """The cards that pick @a2a-js/sdk's transports: the SDK's card fetch (A2A-Version: 1.0)
    gets Crossway's v1.0 card, offering v1.0 and v0.3 interfaces (both Crossway's own), of which
    `legacyCompat` prefers v1.0 and which `legacyCompat: off` reads as v1.0 anyway; the v0.3 card
    offers only v0.3 ones, so `legacyCompat` picks its v0.3 transports. (That they did is also
    seen in test_send_get_list: only the v0.3 transports refuse tasks/list.)"""
    for name in JS_MODES:
        client = JsClient(name, "JSONRPC", f"{gateway.url}/a2a/writer10", node)
        card = asyncio.run(client.run("card"))["result"]
        interfaces = card["supportedInterfaces"]
        offered = {(i["protocolBinding"], i["protocolVersion"][:3]) for i in interfaces}
        assert {i["url"] for i in interfaces} == {client.url}
        if CLIENTS[name][1] == "1.0":
            assert offered == {(b, v) for b in BINDINGS for v in AGENT_VERSIONS}, card
        else:
            assert offered == {(b, "0.3") for b in BINDINGS}, card
