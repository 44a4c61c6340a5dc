"""The sample A2A agents themselves, driven by the a2a-sdk client (and @a2a-js/sdk), no Crossway.

Every other A2A test builds on these agents, so their behaviour is pinned here: send, stream,
get, list and cancel on JSON-RPC and REST, v1.0 and v0.3, the input-required flow, the failing
agent, modes, and what a v1.0-only / v0.3-only agent refuses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, create_client
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
    StreamResponse,
    TaskState,
)
from a2a.utils.errors import A2AError
from google.protobuf.json_format import MessageToDict, ParseDict

from tests.a2a.agents import RunningAgent, run_agent
from tests.helpers import ROOT, free_port, http_status, wait_for

BINDINGS = ["JSONRPC", "HTTP+JSON"]
VERSIONS = ["1.0", "0.3"]
NODE_DIR = ROOT / "tests" / "node"
NODE_CLIENT = NODE_DIR / "a2a_client.mjs"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")


def request(
    text: str = "Summarize this. It is long.",
    *,
    metadata: dict[str, Any] | None = None,
    parts: list[Part] | None = None,
    task_id: str = "",
    context_id: str = "",
    return_immediately: bool = False,
) -> SendMessageRequest:
    message = Message(
        message_id=os.urandom(8).hex(),
        role=Role.ROLE_USER,
        parts=parts or [Part(text=text)],
        task_id=task_id,
        context_id=context_id,
    )
    req = SendMessageRequest(
        message=message,
        configuration=SendMessageConfiguration(return_immediately=return_immediately),
    )
    if metadata:
        ParseDict(metadata, req.metadata)
    return req


async def client(agent: RunningAgent, binding: str, *, streaming: bool = False) -> Client:
    return await create_client(
        agent.url, ClientConfig(streaming=streaming, supported_protocol_bindings=[binding])
    )


async def collect(events: AsyncIterator[StreamResponse]) -> list[dict[str, Any]]:
    return [MessageToDict(e) async for e in events]


async def send(c: Client, req: SendMessageRequest) -> dict[str, Any]:
    (only,) = await collect(c.send_message(req))
    return only


@pytest.fixture(params=[(b, v) for v in VERSIONS for b in BINDINGS], ids=lambda p: f"{p[1]}-{p[0]}")
def binding_version(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


# --- send / get / list / cancel / stream on every binding and version ---------------------------


async def test_send_get_list(binding_version: tuple[str, str]) -> None:
    binding, version = binding_version
    with run_agent("writer", version) as agent:
        c = await client(agent, binding)
        result = await send(c, request("translate hello world", metadata={"skillId": "translate"}))
        task = result["task"]
        assert task["status"]["state"] == "TASK_STATE_COMPLETED"
        assert task["artifacts"][0]["parts"][0]["text"] == "Translation: TRANSLATE HELLO WORLD"
        got = await c.get_task(GetTaskRequest(id=task["id"]))
        assert got.id == task["id"] and got.status.state == TaskState.TASK_STATE_COMPLETED
        if version == "1.0":
            listed = await c.list_tasks(ListTasksRequest())
            assert [t.id for t in listed.tasks] == [task["id"]]
        else:  # v0.3 has no tasks/list: the a2a-sdk client refuses before calling
            with pytest.raises(NotImplementedError):
                await c.list_tasks(ListTasksRequest())
        with pytest.raises(A2AError, match=r"(?i)not found"):
            await c.get_task(GetTaskRequest(id="no-such-task"))
        await c.close()
        methods = [(call.binding, call.version) for call in agent.protocol_calls()]
        assert set(methods) == {(binding, "1.0" if version == "1.0" else "0.3")}


async def test_stream(binding_version: tuple[str, str]) -> None:
    binding, version = binding_version
    with run_agent("streamer", version) as agent:
        c = await client(agent, binding, streaming=True)
        events = await collect(c.send_message(request("go", metadata={"steps": 3, "delay": 0.01})))
        await c.close()
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "task"
    assert kinds.count("artifactUpdate") == 3
    chunks = [
        e["artifactUpdate"]["artifact"]["parts"][0]["text"] for e in events if "artifactUpdate" in e
    ]
    assert chunks == ["chunk 1 ", "chunk 2 ", "chunk 3 "]
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_cancel_running_task(binding_version: tuple[str, str]) -> None:
    binding, version = binding_version
    with run_agent("streamer", version) as agent:
        c = await client(agent, binding)
        slow = request("go", metadata={"steps": 500, "delay": 0.05}, return_immediately=True)
        task = (await send(c, slow))["task"]
        assert task["status"]["state"] in {"TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"}
        canceled = await c.cancel_task(CancelTaskRequest(id=task["id"]))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        got = await c.get_task(GetTaskRequest(id=task["id"]))
        assert got.status.state == TaskState.TASK_STATE_CANCELED
        # A finished task cannot be canceled (-32002 TaskNotCancelable).
        done = (await send(c, request("go", metadata={"steps": 1, "delay": 0})))["task"]
        with pytest.raises(A2AError, match=r"(?i)cancel"):
            await c.cancel_task(CancelTaskRequest(id=done["id"]))
        await c.close()


# --- the other agents ------------------------------------------------------------------------------


@pytest.mark.parametrize("binding", BINDINGS)
async def test_input_required_then_follow_up(binding: str) -> None:
    with run_agent("asker") as agent:
        c = await client(agent, binding)
        first = (await send(c, request("What is the answer?")))["task"]
        assert first["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
        assert "language" in first["status"]["message"]["parts"][0]["text"]
        follow = request("English", task_id=first["id"], context_id=first["contextId"])
        second = (await send(c, follow))["task"]
        assert second["id"] == first["id"]
        assert second["status"]["state"] == "TASK_STATE_COMPLETED"
        assert second["artifacts"][0]["parts"][0]["text"] == "Answer in English: 42"
        # The same context without the task id: a new task in that context, answered at once.
        third = (await send(c, request("What now?")))["task"]
        fourth = (await send(c, request("French", context_id=third["contextId"])))["task"]
        assert fourth["contextId"] == third["contextId"] and fourth["id"] != third["id"]
        assert fourth["status"]["state"] == "TASK_STATE_COMPLETED"
        await c.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_failing_agent(version: str) -> None:
    with run_agent("failer", version) as agent:
        c = await client(agent, "JSONRPC")
        task = (await send(c, request("anything")))["task"]
        assert task["status"]["state"] == "TASK_STATE_FAILED"
        assert "always fails" in task["status"]["message"]["parts"][0]["text"]
        await c.close()
        c = await client(agent, "JSONRPC", streaming=True)
        events = await collect(c.send_message(request("anything")))
        assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_FAILED"
        await c.close()


async def test_vision_takes_images_and_writer_refuses_them() -> None:
    image = Part(raw=PNG, media_type="image/png", filename="dot.png")
    with run_agent("vision") as vision, run_agent("writer") as writer:
        c = await client(vision, "HTTP+JSON")
        task = (await send(c, request(parts=[Part(text="What is this?"), image])))["task"]
        assert (
            task["artifacts"][0]["parts"][0]["text"] == f"An image (image/png, {len(PNG)} bytes)."
        )
        await c.close()
        c = await client(writer, "JSONRPC")
        with pytest.raises(A2AError, match="image/png"):  # -32005 ContentTypeNotSupported
            await send(c, request(parts=[image]))
        await c.close()


async def test_writer_can_answer_with_a_message() -> None:
    with run_agent("writer") as agent:
        c = await client(agent, "JSONRPC")
        result = await send(c, request("Summarize this. Thanks.", metadata={"reply": "message"}))
        assert result["message"]["parts"][0]["text"] == "Summary: Summarize this"
        assert result["message"]["role"] == "ROLE_AGENT"
        await c.close()


# --- cards and what each protocol version refuses ---------------------------------------------


def rpc(agent: RunningAgent, method: str, params: dict[str, Any], version: str | None) -> Any:
    headers = {"A2A-Version": version} if version is not None else {}
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    return httpx.post(agent.url + "/", json=body, headers=headers).json()


V10_MESSAGE = {"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}
V03_MESSAGE = {
    "message": {
        "messageId": "m1",
        "role": "user",
        "kind": "message",
        "parts": [{"kind": "text", "text": "hi"}],
    }
}

# v0.3 HTTP+JSON bodies are the v0.3 protobuf JSON: `content`, not `parts`.
V03_REST_MESSAGE = {
    "message": {"messageId": "m1", "role": "ROLE_USER", "content": [{"text": "hi"}]}
}


def test_cards_by_version() -> None:
    with (
        run_agent("vision", "1.0") as v10,
        run_agent("vision", "0.3") as v03,
        run_agent("vision", "both") as both,
    ):
        card10 = httpx.get(v10.card_url).json()
        card03 = httpx.get(v03.card_url).json()
        card_both = httpx.get(both.card_url).json()
        legacy = httpx.get(v03.url + "/.well-known/agent.json").json()
    assert {i["protocolVersion"] for i in card10["supportedInterfaces"]} == {"1.0"}
    assert {i["protocolBinding"] for i in card10["supportedInterfaces"]} == set(BINDINGS)
    assert "url" not in card10 and "protocolVersion" not in card10
    assert card10["skills"][0]["id"] == "describe-image"
    assert card10["defaultInputModes"] == ["image/png", "image/jpeg", "text/plain"]
    assert card03["protocolVersion"] == "0.3.0" and card03["url"] == v03.url
    assert card03["preferredTransport"] == "JSONRPC"
    assert card03["additionalInterfaces"] == [{"transport": "HTTP+JSON", "url": v03.url}]
    assert "supportedInterfaces" not in card03
    assert legacy == card03
    versions = {i["protocolVersion"] for i in card_both["supportedInterfaces"]}
    assert versions == {"1.0", "0.3.0"} and card_both["protocolVersion"] == "0.3.0"


def test_v10_only_agent_refuses_v03() -> None:
    with run_agent("writer", "1.0") as agent:
        assert rpc(agent, "message/send", V03_MESSAGE, None)["error"]["code"] == -32601
        # A v1.0 method without the A2A-Version header is a v0.3 request: -32009.
        assert rpc(agent, "SendMessage", V10_MESSAGE, None)["error"]["code"] == -32009
        ok = rpc(agent, "SendMessage", V10_MESSAGE, "1.0")
        assert ok["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        rest = httpx.post(agent.url + "/v1/message:send", json=V03_REST_MESSAGE)
        assert rest.status_code >= 400
        assert agent.rpc_methods() == ["message/send", "SendMessage", "SendMessage"]


def test_v03_only_agent_refuses_v10() -> None:
    with run_agent("writer", "0.3") as agent:
        assert rpc(agent, "SendMessage", V10_MESSAGE, "1.0")["error"]["code"] == -32601
        ok = rpc(agent, "message/send", V03_MESSAGE, None)
        assert ok["result"]["kind"] == "task" and ok["result"]["status"]["state"] == "completed"
        rest = httpx.post(agent.url + "/v1/message:send", json=V03_REST_MESSAGE)
        assert rest.status_code == 200
        assert rest.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        v10_rest = httpx.post(
            agent.url + "/message:send", json=V10_MESSAGE, headers={"A2A-Version": "1.0"}
        )
        assert v10_rest.status_code in {404, 405}


def test_both_agent_serves_both_versions() -> None:
    with run_agent("writer", "both") as agent:
        assert "result" in rpc(agent, "SendMessage", V10_MESSAGE, "1.0")
        assert "result" in rpc(agent, "message/send", V03_MESSAGE, None)


def test_calls_are_recorded() -> None:
    with run_agent("writer") as agent:
        httpx.post(
            agent.url + "/",
            json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": V10_MESSAGE},
            headers={"A2A-Version": "1.0", "Authorization": "Bearer agent-secret"},
        )
    (call,) = agent.calls
    assert call.rpc_method == "SendMessage" and call.binding == "JSONRPC" and call.version == "1.0"
    assert call.headers["authorization"] == "Bearer agent-secret"
    assert call.body["params"] == V10_MESSAGE


# --- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["tests.a2a.agents", "crossway.samples.a2a_agents"])
def test_command_line(module: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "--agent",
            "vision",
            "--port",
            str(port),
            "--version",
            "0.3",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: (
                proc.poll() is not None or http_status(url + "/.well-known/agent-card.json") == 200
            ),
            what="sample agent CLI",
        )
        assert proc.poll() is None
        card = httpx.get(url + "/.well-known/agent-card.json").json()
        assert card["name"] == "vision" and card["url"] == url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


# --- @a2a-js/sdk against the agents ------------------------------------------------------------------


def node_client(*args: str, timeout: float = 60) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@a2a-js" / "sdk").is_dir():
        pytest.fail("node and tests/node/node_modules/@a2a-js/sdk are needed: run `make node-deps`")
    out = subprocess.run(
        [node, str(NODE_CLIENT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", ["1.0", "0.3"])
@pytest.mark.parametrize("transport", BINDINGS)
def test_js_sdk_client(version: str, transport: str) -> None:
    """@a2a-js/sdk 1.x (v1.0, with its v0.3 compat layer) talks to a2a-sdk 1.3 agents."""
    t = ("--transport", transport)
    with run_agent("writer", version) as writer:
        sent = node_client("send", writer.card_url, "--text", "Summarize this. It is long.", *t)
        task = sent["result"]["task"]
        assert task["status"]["state"] == "TASK_STATE_COMPLETED", sent
        assert task["artifacts"][0]["parts"][0]["text"] == "Summary: Summarize this"
        got = node_client("get", writer.card_url, "--task", task["id"], *t)
        assert got["result"]["id"] == task["id"]
        listed = node_client("list", writer.card_url, *t)
        if version == "1.0":
            assert [x["id"] for x in listed["result"]["tasks"]] == [task["id"]]
        else:  # v0.3 has no tasks/list
            assert "error" in listed
    expected = (
        "JSONRPC" if transport == "JSONRPC" else "HTTP+JSON",
        "1.0" if version == "1.0" else "0.3",
    )
    assert {(c.binding, c.version) for c in writer.protocol_calls()} == {expected}
    with run_agent("streamer", version) as streamer:
        meta = ("--metadata", '{"steps": 3, "delay": 0.01}')
        streamed = node_client("stream", streamer.card_url, "--text", "go", *meta, *t)
        kinds = [next(iter(e)) for e in streamed["events"]]
        assert kinds[0] == "task" and kinds.count("artifactUpdate") == 3, kinds
        assert streamed["events"][-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
        slow = ("--metadata", '{"steps": 500, "delay": 0.05}')
        canceled = node_client("cancel", streamer.card_url, *slow, *t)
        assert canceled["sent"]["task"]["status"]["state"] != "TASK_STATE_COMPLETED"
        assert canceled["result"]["status"]["state"] == "TASK_STATE_CANCELED"


def test_js_sdk_client_reports_errors() -> None:
    with run_agent("writer") as writer:
        out = node_client("get", writer.card_url, "--task", "no-such-task")
        assert out["error"]["name"] == "TaskNotFoundError" and out["error"]["code"] == -32001
        rest = node_client(
            "get", writer.card_url, "--task", "no-such-task", "--transport", "HTTP+JSON"
        )
        assert rest["error"]["name"] == "TaskNotFoundError" and rest["error"]["statusCode"] == 404
        headers = node_client("send", writer.card_url, "--header", "Authorization: Bearer t0k")
        assert headers["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert writer.protocol_calls()[-1].headers["authorization"] == "Bearer t0k"
