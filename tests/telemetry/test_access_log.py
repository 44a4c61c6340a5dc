"""Access logs through a real gateway: one JSON line per LLM (OpenAI SDK), MCP (MCP SDK),
A2A and plain HTTP request, with the configured CEL fields and filter; an expression failing
at run time is null and warned about once; no key, token or secret ever reaches a line.
The writer itself: size-based rotation, and a full queue drops and counts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from crossway.telemetry.access_log import LineWriter
from crossway.telemetry.redaction import Redactor
from mcp import Client
from tests.a2a.agents import run_agent
from tests.conftest import _sample_process
from tests.helpers import Gateway, free_port, start_gateway, wait_for
from tests.mcp.conftest import notes_stdio

KEY = "plain-key-SECRET-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-SECRET-0123456789"
BODY_SECRET = "sk-body-SECRET-0123456789"

CONFIG = """
telemetry:
  access_log:
    path: {log}
    fields:
      user_agent: 'request.headers["user-agent"]'
      headers: 'request.headers'
      what: 'has(llm.model) ? llm.model : (has(mcp.method) ? mcp.method : "other")'
      status_class: 'response.status / 100'
      subject: 'jwt.sub'
    filter: '!request.path.startsWith("/skip")'
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
      - type: api_key
        keys: {{agent-a: {key}}}
  - name: plain
    match: {{path: {{prefix: /plain}}}}
    strip_prefix: true
    backend: web
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
      oa: {{type: openai, base_url: "{upstream}", api_key: {upstream_key}}}
    models:
      - name: gpt-4o-mini
        targets: [{{provider: oa}}]
  web:
    type: http
    url: {upstream_root}
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
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [orjson.loads(line) for line in self.log.read_bytes().splitlines()]

    def line_for(self, **match: Any) -> dict[str, Any]:
        """The newest line whose top-level keys equal `match` (waits for the writer)."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [
                line for line in self.lines() if all(line.get(k) == v for k, v in match.items())
            ]
            return bool(found)

        wait_for(seen, timeout=10, what=f"an access log line with {match}")
        return found[-1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("access")
    log = tmp / "logs" / "access.log"
    with _sample_process() as upstream, run_agent("writer") as writer:
        config = CONFIG.format(
            log=log,
            key=KEY,
            upstream=upstream,
            upstream_root=upstream.removesuffix("/v1"),
            upstream_key=UPSTREAM_KEY,
            writer=writer.url,
            notes=notes_stdio(),
        )
        with start_gateway(config) as gw:
            yield Stack(gw, log)


def test_llm_request_line(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"hello {BODY_SECRET}"}]
    )
    request_id = raw.headers["x-request-id"]
    line = stack.line_for(request_id=request_id)
    assert line["method"] == "POST"
    assert line["path"] == "/v1/chat/completions"
    assert line["route"] == "llm"
    assert line["backend"] == "llm"
    assert line["status"] == 200
    assert line["duration_ms"] > 0
    assert line["client_ip"] == "127.0.0.1"
    assert line["time"].endswith("Z")
    assert line["trace_id"] is None  # tracing is off
    assert line["identity"] == {"sub": "agent-a", "method": "api_key"}
    assert line["key"] == {"name": "agent-a"}
    llm = line["llm"]
    assert llm["model"] == "gpt-4o-mini"
    assert llm["provider"] == "oa"
    assert llm["input_tokens"] > 0 and llm["output_tokens"] > 0
    assert llm["cost"] > 0
    # configured fields
    assert line["user_agent"].startswith("OpenAI/Python")
    assert line["what"] == "gpt-4o-mini"
    assert line["status_class"] == 2
    assert line["subject"] is None  # no JWT: the expression fails, the line is still written
    assert line["headers"]["authorization"] == "**********"
    assert "mcp" not in line and "a2a" not in line


def test_streamed_llm_request_line(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key=KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        for _ in stream:
            pass
        request_id = stream.response.headers["x-request-id"]
    line = stack.line_for(request_id=request_id)
    assert line["status"] == 200
    assert line["llm"]["output_tokens"] > 0


async def test_mcp_tool_call_line(stack: Stack) -> None:
    async with Client(stack.gateway.url + "/mcp", mode="legacy") as client:
        result = await client.call_tool("notes_add", {"a": 2, "b": 3})
    assert result.content[0].text == "5"  # type: ignore[union-attr]
    line = stack.line_for(route="mcp", what="tools/call")
    assert line["mcp"] == {"method": "tools/call", "tool": "notes_add"}
    assert line["backend"] == "tools"
    assert line["status"] == 200
    assert "llm" not in line


def test_a2a_message_line(stack: Stack) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}},
    }
    resp = httpx.post(stack.gateway.url + "/a2a/writer/", json=body, headers={"A2A-Version": "1.0"})
    assert resp.status_code == 200, resp.text
    line = stack.line_for(request_id=resp.headers["x-request-id"])
    assert line["a2a"] == {"agent": "writer", "method": "SendMessage"}
    assert line["route"] == "a2a"


def test_plain_http_line_and_no_query_string(stack: Stack) -> None:
    resp = httpx.get(stack.gateway.url + "/plain/v1/models?api_key=" + KEY)
    assert resp.status_code == 200
    line = stack.line_for(request_id=resp.headers["x-request-id"])
    assert line["route"] == "plain"
    assert line["backend"] == "web"
    assert line["path"] == "/plain/v1/models"
    assert line["what"] == "other"


def test_unmatched_requests_are_logged_and_the_filter_drops_what_it_says(stack: Stack) -> None:
    skipped = httpx.get(stack.gateway.url + "/skip/this", headers={"x-request-id": "skip-1"})
    kept = httpx.get(stack.gateway.url + "/nowhere", headers={"x-request-id": "kept-1"})
    assert skipped.status_code == kept.status_code == 404
    line = stack.line_for(request_id="kept-1")
    assert line["route"] == "_unmatched"
    assert line["status"] == 404
    assert line["backend"] is None
    # lines are written in order: once kept-1 is there, skip-1 would be too
    assert not [x for x in stack.lines() if x.get("request_id") == "skip-1"]


def test_a_failing_expression_is_warned_about_once(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key=KEY, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}]
        )
    stack.line_for(what="gpt-4o-mini")
    warnings = [
        line
        for line in stack.gateway.log().splitlines()
        if "access log" in line and "'subject'" in line
    ]
    assert len(warnings) == 1, warnings
    assert "jwt.sub" in warnings[0]


def test_no_secret_reaches_any_line(stack: Stack) -> None:
    """Keys in `Authorization`, `x-api-key`, the query string and the body; none is logged."""
    url = stack.gateway.url
    httpx.post(
        url + "/v1/chat/completions",
        headers={"x-api-key": KEY, "x-request-id": "secret-1"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": BODY_SECRET}]},
    )
    httpx.post(
        url + f"/v1/chat/completions?key={KEY}",
        headers={"authorization": f"Bearer {KEY}", "x-request-id": "secret-2"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    httpx.get(
        url + "/plain/anything",
        headers={
            "authorization": f"Basic {KEY}",
            "x-custom-token": UPSTREAM_KEY,
            "x-request-id": "secret-3",
        },
    )
    for request_id in ("secret-1", "secret-2", "secret-3"):
        stack.line_for(request_id=request_id)
    text = stack.log.read_text()
    for secret in (KEY, UPSTREAM_KEY, BODY_SECRET, "SECRET"):
        assert secret not in text
        assert secret not in stack.gateway.log()
    line = stack.line_for(request_id="secret-3")
    assert line["headers"]["x-custom-token"] == "**********"  # an sk- value, masked by pattern


# -- the writer ---------------------------------------------------------------------------------


def _record(n: int) -> dict[str, Any]:
    return {"time": 1.0, "path": f"/p/{n}", "n": n, "pad": "x" * 40}


def test_rotation_keeps_backups_within_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    writer = LineWriter(str(path), max_bytes=400, backups=2, queue_size=1000, redactor=Redactor())
    for n in range(60):
        writer.put(_record(n))
    writer.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["access.log", "access.log.1", "access.log.2"]
    seen: list[int] = []
    for name in ("access.log.2", "access.log.1", "access.log"):
        data = (tmp_path / name).read_bytes()
        assert len(data) <= 400
        seen += [orjson.loads(line)["n"] for line in data.splitlines()]
    assert seen == list(range(60 - len(seen), 60))  # the newest lines, in order
    assert len(seen) > 5


def test_rotation_without_backups_empties_the_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    writer = LineWriter(str(path), max_bytes=300, backups=0, queue_size=1000, redactor=Redactor())
    for n in range(20):
        writer.put(_record(n))
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["access.log"]
    assert len(path.read_bytes()) <= 300
    assert orjson.loads(path.read_bytes().splitlines()[-1])["n"] == 19


def test_a_full_queue_drops_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "access.log"
    writer = LineWriter(str(path), max_bytes=0, backups=0, queue_size=2, redactor=Redactor())
    release = threading.Event()
    writing = threading.Event()
    original = writer._write

    def slow_write(lines: list[bytes]) -> None:
        writing.set()
        release.wait(10)
        original(lines)

    writer._write = slow_write  # type: ignore[method-assign]
    writer.put(_record(0))
    assert writing.wait(10)  # the writer holds line 0; the queue is empty again
    for n in range(1, 10):
        writer.put(_record(n))
    assert writer.dropped == 7
    release.set()
    writer.close()
    assert [orjson.loads(x)["n"] for x in path.read_bytes().splitlines()] == [0, 1, 2]
    assert sum("queue is full" in r.getMessage() for r in caplog.records) == 1


def test_paths_and_fields_are_redacted_by_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    writer = LineWriter(
        str(path), max_bytes=0, backups=0, queue_size=10, redactor=Redactor(patterns=["pin-\\d+"])
    )
    writer.put({"time": 0.0, "path": "/keys/sk-cw-abcdef0123456789", "_fields": {"f": "pin-1234"}})
    writer.close()
    line = orjson.loads(path.read_bytes())
    assert line == {
        "time": "1970-01-01T00:00:00.000Z",
        "path": "/keys/**********",
        "f": "**********",
    }


TRACED = """
telemetry:
  tracing: {{enabled: true, endpoint: "http://127.0.0.1:{dead}", export_timeout: 0.5}}
  access_log: {{path: {log}}}
  request_log: {{enabled: true, flush_interval: 0.02}}
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    providers:
      oa: {{type: openai, base_url: "{upstream}", api_key: sk-upstream-0123456789}}
    models:
      - name: gpt-4o-mini
        targets: [{{provider: oa}}]
"""


def test_trace_id_of_the_server_span_in_the_line_and_the_request_log(tmp_path: Path) -> None:
    """With tracing on (its collector down), a caller's traceparent names the trace: the line
    and the stored entry carry its id, and `/logs?trace_id=` finds the entry."""
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    log = tmp_path / "access.log"
    with _sample_process() as upstream:
        config = TRACED.format(dead=free_port(), log=log, upstream=upstream)
        with start_gateway(config, env={"CROSSWAY_DATA_DIR": str(tmp_path / "data")}) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "traced"}],
                extra_headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
            )
            stack = Stack(gw, log)
            line = stack.line_for(request_id=raw.headers["x-request-id"])
            assert line["trace_id"] == trace
            found: list[Any] = []

            def stored() -> bool:
                found[:] = httpx.get(gw.admin_url + "/logs", params={"trace_id": trace}).json()[
                    "logs"
                ]
                return bool(found)

            wait_for(stored, timeout=10, what="the traced entry")
            assert found[0]["request_id"] == raw.headers["x-request-id"]


def test_two_writers_of_one_file_follow_each_others_rotation(tmp_path: Path) -> None:
    """Workers are processes with a writer each: one rotating moves the file under the other,
    which then writes to the new file, counting its size."""
    path = tmp_path / "access.log"
    a = LineWriter(str(path), max_bytes=600, backups=3, queue_size=1000, redactor=Redactor())
    b = LineWriter(str(path), max_bytes=600, backups=3, queue_size=1000, redactor=Redactor())
    for n in range(40):
        writer = a if n % 2 else b
        writer.put(_record(n))
        assert writer.flush()
    a.close()
    b.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["access.log", "access.log.1", "access.log.2", "access.log.3"]
    newest = [orjson.loads(x)["n"] for x in path.read_bytes().splitlines()]
    assert newest[-2:] == [38, 39]  # both write to the current file
    for name in names:
        assert len((tmp_path / name).read_bytes()) <= 600
