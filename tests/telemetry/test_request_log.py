"""The request log store: a real gateway captures LLM prompts and completions (streamed too),
MCP arguments and results and A2A messages, redacted by a regex and a field path before they
are stored, cut at `max_entry_bytes`; the admin API's `/logs` filters and pages them, answers
bad queries with 400 JSON and follows the admin auth rule. The store prunes by rows and age."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from crossway.config import load_config
from crossway.config.telemetry_logs import RedactionConfig, RequestLogConfig
from crossway.server.admin import ConfigView, create_admin_app
from crossway.store.request_log_sqlite import Query, RequestLogFile
from crossway.telemetry.redaction import MASK
from crossway.telemetry.request_log import Entry, RequestLogWriter
from mcp import Client
from tests.a2a.agents import run_agent
from tests.conftest import _sample_process
from tests.helpers import Gateway, free_port, start_gateway, wait_for
from tests.mcp.conftest import notes_stdio

KEY = "plain-key-SECRET-0123456789abcdef"
MAX_ENTRY = 4096
SSN = "123-45-6789"

CONFIG = """
telemetry:
  access_log: {{}}
  request_log:
    enabled: true
    max_entry_bytes: {max_entry}
    flush_interval: 0.02
  redaction:
    patterns: ['\\b\\d{{3}}-\\d{{2}}-\\d{{4}}\\b']
    fields: [metadata.user_email, params.arguments.b]
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
      - type: api_key
        keys: {{agent-a: {key}}}
  - name: a2a
    match: {{path: {{prefix: /a2a}}}}
    backend: agents
  - name: mcp
    match: {{path: {{prefix: /mcp}}}}
    backend: tools
backends:
  llm:
    type: llm
    providers:
      oa: {{type: openai, base_url: "{upstream}", api_key: sk-upstream-0123456789}}
    models:
      - name: gpt-4o-mini
        targets: [{{provider: oa}}]
  agents:
    type: a2a
    task_store: {{type: memory}}
    agents:
      writer: {{url: {writer}}}
  tools:
    type: mcp
    servers:
      notes: {notes}
"""


@dataclass
class Stack:
    gateway: Gateway
    db: Path

    def logs(self, **params: Any) -> dict[str, Any]:
        resp = httpx.get(self.gateway.admin_url + "/logs", params=params)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def entry(self, request_id: str) -> dict[str, Any]:
        """The full entry of one request (waits for the batched writer)."""
        found: list[dict[str, Any]] = []

        def written() -> bool:
            found[:] = [e for e in self.logs(limit=1000)["logs"] if e["request_id"] == request_id]
            return bool(found)

        wait_for(written, timeout=10, what=f"request log entry of {request_id}")
        resp = httpx.get(f"{self.gateway.admin_url}/logs/{found[0]['id']}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("data")
    with _sample_process() as upstream, run_agent("writer") as writer:
        config = CONFIG.format(
            max_entry=MAX_ENTRY, key=KEY, upstream=upstream, writer=writer.url, notes=notes_stdio()
        )
        with start_gateway(config, env={"CROSSWAY_DATA_DIR": str(data)}) as gw:
            yield Stack(gw, data / "request-log.sqlite3")


def test_llm_prompt_and_completion_are_stored_redacted(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"my ssn is {SSN}, key sk-inbody-0123456789"}],
        metadata={"user_email": "alice@example.com", "ticket": "T-1"},
    )
    entry = stack.entry(raw.headers["x-request-id"])
    assert entry["kind"] == "llm"
    assert entry["route"] == "llm"
    assert entry["model"] == "gpt-4o-mini"
    assert entry["provider"] == "oa"
    assert entry["key"] == "agent-a"
    assert entry["status"] == 200
    assert entry["truncated"] is False
    assert entry["usage"]["input_tokens"] > 0
    assert entry["cost"] > 0
    request = entry["request"]
    assert request["model"] == "gpt-4o-mini"
    assert request["messages"][0]["content"] == f"my ssn is {MASK}, key {MASK}"  # regex
    assert request["metadata"] == {"user_email": MASK, "ticket": "T-1"}  # field path
    answer = entry["response"]["choices"][0]["message"]["content"]
    assert answer.startswith("You said: my ssn is " + MASK)
    # nothing unredacted reached the file (or its write-ahead log)
    for path in stack.db.parent.glob("request-log.sqlite3*"):
        data = path.read_bytes()
        assert SSN.encode() not in data
        assert b"alice@example.com" not in data
        assert KEY.encode() not in data


def test_a_stream_is_stored_as_its_assembled_text(stack: Stack) -> None:
    stream = stack.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    with stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        request_id = stream.response.headers["x-request-id"]
    entry = stack.entry(request_id)
    assert entry["request"]["stream"] is True
    assert entry["response"] == {"stream": True, "text": text}


def test_contents_over_the_bound_are_cut_and_marked(stack: Stack) -> None:
    big = "word " * 2000  # 10 kB prompt, echoed back: well over max_entry_bytes
    raw = stack.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": big}]
    )
    assert raw.parse().choices[0].message.content.endswith(big)  # the client got it all
    entry = stack.entry(raw.headers["x-request-id"])
    assert entry["truncated"] is True
    assert isinstance(entry["request"], str) and entry["request"].endswith("...[truncated]")
    assert isinstance(entry["response"], str) and entry["response"].endswith("...[truncated]")
    assert len(entry["request"].encode()) + len(entry["response"].encode()) <= MAX_ENTRY
    assert entry["request"].startswith('{"model":"gpt-4o-mini"')


async def test_mcp_arguments_and_results_are_stored(stack: Stack) -> None:
    async with Client(stack.gateway.url + "/mcp", mode="legacy") as client:
        result = await client.call_tool("notes_add", {"a": 20, "b": 22})
    assert result.content[0].text == "42"  # type: ignore[union-attr]
    entry = await asyncio.to_thread(_tool_entry, stack, "notes_add")
    assert entry["kind"] == "mcp"
    assert entry["request"]["method"] == "tools/call"
    assert entry["request"]["params"]["name"] == "notes_add"
    assert entry["request"]["params"]["arguments"] == {"a": 20, "b": MASK}  # field path
    assert entry["response"]["result"]["content"][0]["text"] == "42"


def _tool_entry(stack: Stack, tool: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def written() -> bool:
        found[:] = stack.logs(tool=tool)["logs"]
        return bool(found)

    wait_for(written, timeout=10, what="the tool call's entry")
    body: dict[str, Any] = httpx.get(f"{stack.gateway.admin_url}/logs/{found[0]['id']}").json()
    return body


def test_a2a_messages_are_stored(stack: Stack) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "SendMessage",
        "params": {
            "message": {
                "messageId": "m-log",
                "role": "ROLE_USER",
                "parts": [{"text": f"draft a note for {SSN}"}],
            }
        },
    }
    resp = httpx.post(stack.gateway.url + "/a2a/writer/", json=body, headers={"A2A-Version": "1.0"})
    assert resp.status_code == 200, resp.text
    entry = stack.entry(resp.headers["x-request-id"])
    assert entry["kind"] == "a2a"
    assert entry["agent"] == "writer"
    parts = entry["request"]["params"]["message"]["parts"]
    assert parts == [{"text": f"draft a note for {MASK}"}]
    assert entry["response"]["id"] == 3 and "result" in entry["response"]


def test_filters_and_pagination_through_the_gateway(stack: Stack) -> None:
    client = stack.openai()
    ids = []
    for n in range(5):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"page {n}"}]
        )
        ids.append(raw.headers["x-request-id"])
    stack.entry(ids[-1])
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "route": "llm", "status": "2xx"}
        if cursor:
            params["cursor"] = cursor
        page = stack.logs(**params)
        assert len(page["logs"]) <= 2
        seen += page["logs"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len({e["id"] for e in seen}) == len(seen)
    times = [(e["time"], e["id"]) for e in seen]
    assert times == sorted(times, reverse=True)  # newest first
    ours = [e["request_id"] for e in seen if e["request_id"] in ids]
    assert ours == list(reversed(ids))
    assert all(e["route"] == "llm" and 200 <= e["status"] < 300 for e in seen)
    assert "request" not in seen[0]  # the list has no contents
    assert stack.logs(key="agent-a", model="gpt-4o-mini", limit=1000)["logs"]
    assert stack.logs(model="no-such-model")["logs"] == []
    assert stack.logs(status=404)["logs"] == []
    assert stack.logs(start=time.time() + 60)["logs"] == []


def test_access_log_on_stdout_by_default(stack: Stack) -> None:
    raw = stack.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stdout"}]
    )
    request_id = raw.headers["x-request-id"]
    wait_for(lambda: f'"request_id":"{request_id}"' in stack.gateway.log(), timeout=10)


# -- the query API in process ---------------------------------------------------------------------


def _rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "time": 1000.0 + i,
                "request_id": f"r{i}",
                "trace_id": f"{i:032x}",
                "route": "llm" if i % 2 == 0 else "mcp",
                "kind": "llm" if i % 2 == 0 else "mcp",
                "method": "POST",
                "path": "/x",
                "status": 200 if i % 3 else 502,
                "duration_ms": 1.0,
                "key": f"k{i % 2}",
                "user": "u1" if i < 5 else "u2",
                "team": "t1",
                "model": "m1" if i % 2 == 0 else None,
                "tool": None if i % 2 == 0 else "srv_tool",
                "agent": None,
                "request": '{"q": 1}',
                "response": '{"a": 2}',
                "truncated": 0,
            }
        )
    return rows


@asynccontextmanager
async def admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str = ""
) -> AsyncIterator[str]:
    """The admin app (uvicorn, free loopback port) over a request log with 10 entries."""
    data = tmp_path / "data"
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(data))
    store = RequestLogFile(data / "request-log.sqlite3")
    store.insert(_rows(10))
    store.close()
    path = tmp_path / "crossway.yaml"
    path.write_text(extra + "telemetry: {request_log: {enabled: true}}\nroutes: []\n")
    app = create_admin_app(ConfigView(str(path), load_config(str(path))), None)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "the admin server stopped before it started"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_every_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with admin(tmp_path, monkeypatch) as url, httpx.AsyncClient(base_url=url) as http:

        async def ids(**params: Any) -> list[str]:
            resp = await http.get("/logs", params=params)
            assert resp.status_code == 200, resp.text
            return [e["request_id"] for e in resp.json()["logs"]]

        assert await ids() == [f"r{i}" for i in range(9, -1, -1)]
        assert await ids(route="mcp") == ["r9", "r7", "r5", "r3", "r1"]
        assert await ids(key="k0", user="u1") == ["r4", "r2", "r0"]
        assert await ids(team="t2") == []
        assert await ids(model="m1", status=502) == ["r6", "r0"]
        assert await ids(status="5xx") == ["r9", "r6", "r3", "r0"]
        assert await ids(tool="srv_tool", start=1005, end=1008) == ["r7", "r5"]
        assert await ids(start="1970-01-01T00:16:45Z") == ["r9", "r8", "r7", "r6", "r5"]
        assert await ids(trace_id=f"{3:032x}") == ["r3"]
        assert await ids(agent="nobody") == []
        first = (await http.get("/logs", params={"limit": 4})).json()
        second = (
            await http.get("/logs", params={"limit": 4, "cursor": first["next_cursor"]})
        ).json()
        third = (
            await http.get("/logs", params={"limit": 4, "cursor": second["next_cursor"]})
        ).json()
        got = [e["request_id"] for p in (first, second, third) for e in p["logs"]]
        assert got == [f"r{i}" for i in range(9, -1, -1)]
        assert third["next_cursor"] is None
        entry = (await http.get(f"/logs/{first['logs'][0]['id']}")).json()
        assert entry["request"] == {"q": 1} and entry["response"] == {"a": 2}


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("colour=red", "colour"),
        ("model=a&model=b", "model"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("status=999", "status"),
        ("status=6xx", "status"),
        ("status=abc", "status"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=WzEsMiwzXQ", "cursor"),  # base64 of [1,2,3]
        ("start=yesterday", "start"),
        ("end=nan", "end"),
        ("start=20&end=10", "end"),
    ],
)
async def test_bad_queries_are_400_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, query: str, param: str
) -> None:
    async with admin(tmp_path, monkeypatch) as url, httpx.AsyncClient(base_url=url) as http:
        resp = await http.get("/logs?" + query)
        assert resp.status_code == 400, resp.text
        assert resp.headers["content-type"].startswith("application/json")
        error = resp.json()["error"]
        assert error["param"] == param
        assert error["message"]


async def test_bad_and_unknown_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with admin(tmp_path, monkeypatch) as url, httpx.AsyncClient(base_url=url) as http:
        bad = await http.get("/logs/abc")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "id"
        missing = await http.get("/logs/424242")
        assert missing.status_code == 404 and "424242" in missing.json()["error"]["message"]


async def test_same_auth_rule_as_the_other_admin_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "admin-token-0123456789abcdef"
    async with admin(tmp_path, monkeypatch, f"admin: {{token: {token}}}\n") as url:
        async with httpx.AsyncClient(base_url=url) as http:
            for path in ("/logs", "/logs/1"):
                refused = await http.get(path)
                assert refused.status_code == 401, refused.text
                assert "error" in refused.json()
                ok = await http.get(path, headers={"authorization": f"Bearer {token}"})
                assert ok.status_code == 200, ok.text
    async with admin(tmp_path / "b", monkeypatch) as url, httpx.AsyncClient(base_url=url) as http:
        browser = await http.get("/logs", headers={"origin": "https://evil.example"})
        assert browser.status_code == 403
        assert (await http.get("/logs")).status_code == 200


async def test_no_store_yet_is_an_empty_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(tmp_path / "empty"))
    path = tmp_path / "c.yaml"
    path.write_text("routes: []\n")
    app = create_admin_app(ConfigView(str(path), load_config(str(path))), None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        resp = await http.get("/logs")
        assert resp.json() == {"logs": [], "next_cursor": None}
        assert (await http.get("/logs/1")).status_code == 404
    assert not (tmp_path / "empty").exists()  # reading never creates the store


# -- the writer and the store -------------------------------------------------------------------


def _entry(**fields: Any) -> Entry:
    base: dict[str, Any] = dict(
        time=time.time(),
        request_id="r",
        trace_id=None,
        route="llm",
        backend="llm",
        kind="llm",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        duration_ms=1.0,
        key=None,
        user=None,
        team=None,
        model="m",
        provider="p",
        tool=None,
        agent=None,
        cost=None,
        usage=None,
        request=b'{"messages": [{"content": "hello"}]}',
        response=b'{"ok": true}',
        chunks=None,
        truncated=False,
    )
    base.update(fields)
    return Entry(**base)


def test_rows_are_redacted_and_bounded(tmp_path: Path) -> None:
    config = RequestLogConfig(enabled=True, path=str(tmp_path / "r.db"), max_entry_bytes=300)
    writer = RequestLogWriter(config, RedactionConfig(fields=["messages.*.content"]))
    row = writer.row(_entry())
    assert row["request"] == '{"messages":[{"content":"**********"}]}'
    assert row["truncated"] == 0
    long = writer.row(_entry(request=b"x" * 1000, response=b"not json " * 100))
    assert long["truncated"] == 1
    assert len(long["request"]) + len(long["response"]) <= 300
    streamed = writer.row(
        _entry(
            response=None,
            chunks=[b"event: x\n", b"data: not-openai\n\n"],
            truncated=True,
        )
    )
    assert streamed["truncated"] == 1
    assert '"events"' in streamed["response"]


def test_the_writer_batches_into_the_file_and_close_flushes(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    config = RequestLogConfig(enabled=True, path=str(db), batch_size=7, flush_interval=5)
    writer = RequestLogWriter(config, RedactionConfig())
    for n in range(20):
        writer.put(_entry(request_id=f"r{n}"))
    asyncio.run(writer.close())  # well before the 5 s flush interval
    store = RequestLogFile(db)
    page, _ = store.query(Query(limit=100))
    store.close()
    assert sorted(e["request_id"] for e in page) == sorted(f"r{n}" for n in range(20))
    assert writer.written == 20 and writer.dropped == 0


def test_prune_by_rows_and_age(tmp_path: Path) -> None:
    store = RequestLogFile(tmp_path / "r.db")
    store.insert(_rows(10))
    assert store.prune(max_rows=6, older_than=1002.0) == 4  # r0, r1 by age; r2, r3 by count
    page, _ = store.query(Query(limit=100))
    assert [e["request_id"] for e in page] == [f"r{i}" for i in range(9, 3, -1)]
    store.close()
