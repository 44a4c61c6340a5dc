"""Task lifecycle tracking: the three task stores, the tracker reading v1.0 answers, metrics,
the admin plane's `/a2a/tasks`, and ownership shared by two trackers on one Redis."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from crossway.a2a.tasks import TaskTracker, live_tracker, state_name, task_facts
from crossway.config import Config, parse_config
from crossway.config.a2a import A2aBackendConfig, TaskStoreConfig
from crossway.server.admin_a2a import a2a_task_routes
from crossway.store.tasks import (
    MemoryTaskStore,
    TaskStore,
    build_task_store,
    default_task_path,
)
from crossway.store.tasks_redis import RedisTaskStore
from crossway.store.tasks_sqlite import SqliteTaskStore
from tests.helpers import redis_server


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


_counter = iter(range(1_000_000))


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TaskStore]:
    kind = request.param
    made: TaskStore
    if kind == "memory":
        made = MemoryTaskStore()
    elif kind == "sqlite":
        made = SqliteTaskStore(tmp_path / "tasks.sqlite3", "agents")
    else:
        port = request.getfixturevalue("redis_port")
        made = RedisTaskStore(f"redis://127.0.0.1:{port}/0", f"test:{next(_counter)}:")
    try:
        yield made
    finally:
        await made.close()


async def _eventually(check: Any, within: float = 5.0) -> None:
    """Poll an async predicate until it holds (TTLs need time to pass; no fixed sleeps)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- the stores ------------------------------------------------------------------------------


async def test_ownership_first_writer_wins(store: TaskStore) -> None:
    assert await store.owner("t1") is None
    assert await store.context_owner("c1") is None
    assert await store.put_owner("t1", "c1", "writer", 60) == "writer"
    assert await store.owner("t1") == "writer"
    assert await store.context_owner("c1") == "writer"
    # another agent answering with the same ids takes over neither
    assert await store.put_owner("t1", "c1", "intruder", 60) == "writer"
    assert await store.put_owner("t2", "c1", "intruder", 60) == "intruder"
    assert await store.owner("t1") == "writer"
    assert await store.context_owner("c1") == "writer"
    # a context alone (an agent answered with a message, no task)
    assert await store.put_owner(None, "c2", "vision", 60) == "vision"
    assert await store.context_owner("c2") == "vision"


async def test_transitions_with_timings(store: TaskStore) -> None:
    await store.put_owner("t1", "c1", "writer", 60, at=1000.0)
    assert await store.record("t1", "writer", "submitted", 1000.5) == 1000.0
    assert await store.record("t1", "writer", "submitted", 1000.7) is None  # no change
    assert await store.record("t1", "intruder", "canceled", 1001.0) is None  # not its task
    assert await store.record("t1", "writer", "working", 1001.0) == 1000.0
    assert await store.record("t1", "writer", "completed", 1003.25) == 1000.0
    rec = await store.get("t1")
    assert rec is not None
    assert (rec.task_id, rec.agent, rec.context_id, rec.state) == (
        "t1",
        "writer",
        "c1",
        "completed",
    )
    assert (rec.created, rec.updated) == (1000.0, 1003.25)
    assert rec.history == (("submitted", 1000.5), ("working", 1001.0), ("completed", 1003.25))
    body = rec.to_json()
    assert body["terminal"] is True
    assert body["history"][1] == {"state": "working", "at": 1001.0}
    # a state for a task never put: the task is created for that agent
    assert await store.record("t9", "vision", "working", 2000.0) == 2000.0
    assert await store.owner("t9") == "vision"
    assert await store.get("nope") is None


async def test_list_filters_and_order(store: TaskStore) -> None:
    rows = [
        ("a", "writer", "working", 100.0),
        ("b", "writer", "completed", 200.0),
        ("c", "vision", "working", 300.0),
        ("d", "vision", "input-required", 400.0),
    ]
    for task_id, agent, state, at in rows:
        await store.put_owner(task_id, f"ctx-{task_id}", agent, 600, at=at - 1)
        await store.record(task_id, agent, state, at)

    async def ids(**kw: Any) -> list[str]:
        return [r.task_id for r in await store.list(**kw)]

    assert await ids() == ["d", "c", "b", "a"]
    assert await ids(agent="writer") == ["b", "a"]
    assert await ids(state="working") == ["c", "a"]
    assert await ids(agent="vision", state="working") == ["c"]
    assert await ids(older_than=300.0) == ["b", "a"]
    assert await ids(limit=2) == ["d", "c"]
    assert await ids(agent="nobody") == []


async def test_ttl_forgets_tasks_and_contexts(store: TaskStore) -> None:
    await store.put_owner("short", "ctx-short", "writer", 0.3)
    await store.put_owner("long", "ctx-long", "writer", 60)
    await store.record("long", "writer", "working", time.time())
    assert await store.owner("short") == "writer"

    async def forgotten() -> bool:
        return await store.owner("short") is None and await store.context_owner("ctx-short") is None

    await _eventually(forgotten)
    assert await store.get("short") is None
    assert [r.task_id for r in await store.list()] == ["long"]
    assert await store.owner("long") == "writer"
    # an expired id can be owned anew
    assert await store.put_owner("short", None, "vision", 60) == "vision"


async def test_record_extends_the_ttl(store: TaskStore) -> None:
    await store.put_owner("t", "ctx", "writer", 0.6)
    started = time.monotonic()
    # keep the task busy past its first TTL: each state change counts from then
    for state in ("submitted", "working", "input-required", "working", "completed"):
        await store.record("t", "writer", state, time.time())
        await asyncio.sleep(0.2)
    assert time.monotonic() - started > 0.6
    assert await store.owner("t") == "writer"


async def test_history_is_capped(store: TaskStore) -> None:
    from crossway.store.tasks import MAX_HISTORY

    await store.put_owner("t", None, "writer", 60, at=0.0)
    for i in range(MAX_HISTORY + 10):
        await store.record("t", "writer", "working" if i % 2 else "input-required", float(i + 1))
    rec = await store.get("t")
    assert rec is not None and len(rec.history) == MAX_HISTORY
    assert rec.history[-1][1] == float(MAX_HISTORY + 10)


# --- SQLite specifics ------------------------------------------------------------------------


async def test_sqlite_ownership_is_in_the_file_before_put_owner_returns(tmp_path: Path) -> None:
    path = tmp_path / "tasks.sqlite3"
    worker1 = SqliteTaskStore(path, "agents")
    worker2 = SqliteTaskStore(path, "agents")  # another worker process on the same machine
    try:
        await worker1.put_owner("t1", "c1", "writer", 60)
        # no flush: the next request, served by the other worker, already sees it
        assert await worker2.owner("t1") == "writer"
        assert await worker2.context_owner("c1") == "writer"
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        # state records of known tasks do not wait for the file; close writes them
        assert await worker1.record("t1", "writer", "working", 10.0) is not None
        await worker1.close()
        rec = await worker2.get("t1")
        assert rec is not None and rec.state == "working"
    finally:
        await worker1.close()
        await worker2.close()


async def test_sqlite_io_runs_off_the_event_loop(tmp_path: Path) -> None:
    store = SqliteTaskStore(tmp_path / "tasks.sqlite3", "agents")
    threads: set[str] = set()
    batch = store._file.batch

    def spy(ops: Any) -> Any:
        threads.add(threading.current_thread().name)
        return batch(ops)

    store._file.batch = spy  # type: ignore[method-assign]
    try:
        await asyncio.gather(*(store.put_owner(f"t{i}", None, "writer", 60) for i in range(50)))
        await store.flush()
        assert threads and all(name.startswith("crossway-a2a-tasks") for name in threads)
        assert threading.current_thread().name not in threads
        assert len(await store.list(limit=1000)) == 50
    finally:
        await store.close()


async def test_sqlite_backends_share_a_file_apart(tmp_path: Path) -> None:
    path = tmp_path / "tasks.sqlite3"
    one, two = SqliteTaskStore(path, "public"), SqliteTaskStore(path, "internal")
    try:
        await one.put_owner("t1", None, "writer", 60)
        assert await two.owner("t1") is None
        assert await two.put_owner("t1", None, "other", 60) == "other"
    finally:
        await one.close()
        await two.close()


def test_build_task_store_follows_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(tmp_path))
    assert default_task_path() == tmp_path / "a2a-tasks.sqlite3"
    backend = cfg_backend(_config("{type: memory}"))
    assert isinstance(build_task_store(backend.task_store, "agents"), MemoryTaskStore)
    sqlite_store = build_task_store(_store_cfg(_config("{type: sqlite}")), "agents")
    assert isinstance(sqlite_store, SqliteTaskStore)
    assert sqlite_store.path == tmp_path / "a2a-tasks.sqlite3"


# --- the tracker -----------------------------------------------------------------------------


def _task(task_id: str, state: str, context: str = "ctx-1") -> dict[str, Any]:
    return {
        "id": task_id,
        "contextId": context,
        "status": {"state": state, "timestamp": "2026-12-01T10:00:00Z"},
    }


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_task_facts_and_state_names() -> None:
    assert state_name("TASK_STATE_INPUT_REQUIRED") == "input-required"
    assert state_name("input-required") == "input-required"
    assert state_name("TASK_STATE_UNSPECIFIED") is None
    assert state_name(3) is None
    facts = list(task_facts({"task": _task("t1", "TASK_STATE_SUBMITTED")}))
    assert [(f.task_id, f.context_id, f.state) for f in facts] == [("t1", "ctx-1", "submitted")]
    event = {
        "statusUpdate": {
            "taskId": "t1",
            "contextId": "c",
            "status": {"state": "TASK_STATE_WORKING"},
        }
    }
    assert [f.state for f in task_facts(event)] == ["working"]
    artifact = {"artifactUpdate": {"taskId": "t1", "contextId": "c", "artifact": {"parts": []}}}
    assert [(f.task_id, f.state) for f in task_facts(artifact)] == [("t1", None)]
    message = {"message": {"messageId": "m", "contextId": "c9", "role": "ROLE_AGENT", "parts": []}}
    assert [(f.task_id, f.context_id) for f in task_facts(message)] == [(None, "c9")]
    listing = {"tasks": [_task("a", "TASK_STATE_WORKING"), _task("b", "TASK_STATE_FAILED")]}
    assert [f.task_id for f in task_facts(listing)] == ["a", "b"]
    assert [f.state for f in task_facts(_task("x", "TASK_STATE_CANCELED"))] == ["canceled"]
    assert list(task_facts("garbage")) == [] and list(task_facts({"task": 3})) == []


async def test_tracker_records_a_streamed_task(tmp_path: Path) -> None:
    clock = [5000.0]
    store = SqliteTaskStore(tmp_path / "t.sqlite3", "agents")
    tracker = TaskTracker(store, backend="agents", clock=lambda: clock[0])
    agent = "tracker-writer"
    before = _metric("crossway_a2a_tasks_total", agent=agent, state="completed")
    try:
        await tracker.observe(agent, {"task": _task("t1", "TASK_STATE_SUBMITTED")}, started=4999.0)
        assert await tracker.owner_of_task("t1") == agent
        assert await tracker.owner_of_context("ctx-1") == agent
        clock[0] = 5001.0
        update = {"taskId": "t1", "contextId": "ctx-1", "status": {"state": "TASK_STATE_WORKING"}}
        await tracker.observe(agent, {"statusUpdate": update})
        await tracker.observe(agent, {"statusUpdate": update})  # same state again: nothing new
        await tracker.observe(agent, {"artifactUpdate": {"taskId": "t1", "contextId": "ctx-1"}})
        clock[0] = 5012.5
        done = {**update, "status": {"state": "TASK_STATE_COMPLETED"}}
        await tracker.observe(agent, {"statusUpdate": done})
        rec = await tracker.get("t1")
        assert rec is not None
        assert rec.history == (("submitted", 5000.0), ("working", 5001.0), ("completed", 5012.5))
        assert rec.created == 4999.0
        listed = await tracker.list(agent=agent, state="completed")
        assert [r.task_id for r in listed] == ["t1"]
    finally:
        await tracker.close()
    assert _metric("crossway_a2a_tasks_total", agent=agent, state="completed") == before + 1
    assert _metric("crossway_a2a_tasks_total", agent=agent, state="working") == 1
    # submitted at 4999 (the request's start), completed at 5012.5: 13.5 s
    assert _metric("crossway_a2a_task_duration_seconds_sum", agent=agent, state="completed") == 13.5
    assert _metric("crossway_a2a_task_duration_seconds_count", agent=agent, state="completed") == 1


async def test_tracker_ignores_an_agent_answering_with_a_foreign_task() -> None:
    tracker = TaskTracker(MemoryTaskStore(), backend="")
    await tracker.observe("writer", {"task": _task("t1", "TASK_STATE_WORKING")})
    await tracker.observe("intruder", {"task": _task("t1", "TASK_STATE_CANCELED", "ctx-x")})
    assert await tracker.owner_of_task("t1") == "writer"
    assert await tracker.owner_of_context("ctx-x") is None
    rec = await tracker.get("t1")
    assert rec is not None and rec.state == "working"
    # a second tracker (fresh cache) over the same store also refuses the intruder
    other = TaskTracker(tracker.store)
    await other.observe("intruder", {"task": _task("t1", "TASK_STATE_CANCELED")})
    rec = await tracker.get("t1")
    assert rec is not None and rec.state == "working"


async def test_tracker_owns_a_context_answered_with_a_message() -> None:
    tracker = TaskTracker(MemoryTaskStore())
    message = {"message": {"messageId": "m1", "contextId": "c7", "role": "ROLE_AGENT", "parts": []}}
    await tracker.observe("writer", message)
    assert await tracker.owner_of_context("c7") == "writer"
    assert await tracker.owner_of_task("unknown") is None


async def test_live_tracker_registry() -> None:
    tracker = TaskTracker(MemoryTaskStore(), backend="live-agents")
    assert live_tracker("live-agents") is None
    await tracker.start()
    assert live_tracker("live-agents") is tracker
    await tracker.close()
    assert live_tracker("live-agents") is None


# --- across replicas -------------------------------------------------------------------------


async def test_two_trackers_on_one_redis_share_tasks(redis_port: int) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0"
    namespace = f"crossway:a2a:replicas-{next(_counter)}:"
    replica_a = TaskTracker(RedisTaskStore(url, namespace), backend="agents")
    replica_b = TaskTracker(RedisTaskStore(url, namespace), backend="agents")
    agent = "replica-writer"
    try:
        await replica_a.observe(
            agent, {"task": _task("t-shared", "TASK_STATE_WORKING", "c-shared")}
        )
        # the follow-up lands on the other replica: it knows where to send it
        assert await replica_b.owner_of_task("t-shared") == agent
        assert await replica_b.owner_of_context("c-shared") == agent
        # canceled through B; A later sees the same state in a GetTask answer: counted once
        before = _metric("crossway_a2a_tasks_total", agent=agent, state="canceled")
        await replica_b.observe(agent, _task("t-shared", "TASK_STATE_CANCELED", "c-shared"))
        await replica_a.observe(agent, _task("t-shared", "TASK_STATE_CANCELED", "c-shared"))
        assert _metric("crossway_a2a_tasks_total", agent=agent, state="canceled") == before + 1
        assert (
            _metric("crossway_a2a_task_duration_seconds_count", agent=agent, state="canceled") == 1
        )
        rec = await replica_a.get("t-shared")
        assert rec is not None
        assert [state for state, _ in rec.history] == ["working", "canceled"]
        assert [r.task_id for r in await replica_b.list(state="canceled")] == ["t-shared"]
    finally:
        await replica_a.close()
        await replica_b.close()


# --- the admin API ---------------------------------------------------------------------------


class _View:
    def __init__(self, config: Config) -> None:
        self.config = config

    def current(self) -> Config:
        return self.config


def cfg_backend(cfg: Config) -> A2aBackendConfig:
    backend = cfg.backends["agents"]
    assert isinstance(backend, A2aBackendConfig)
    return backend


def _store_cfg(cfg: Config) -> TaskStoreConfig:
    return cfg_backend(cfg).task_store


def _config(store: str, admin: str = "{port: 15000}") -> Config:
    text = (
        f"admin: {admin}\n"
        "routes:\n  - {name: a2a, match: {path: {prefix: /a2a}}, backend: agents}\n"
        "backends:\n  agents:\n    type: a2a\n"
        f"    task_store: {store}\n"
        "    agents:\n      writer: {card: {name: Writer}}\n      vision: {card: {name: Vision}}\n"
    )
    return parse_config(text, "test.yaml")


async def _get(app: Starlette, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request straight into the ASGI app (no socket)."""
    sent: list[MutableMapping[str, Any]] = []
    raw_path, _, query = path.partition("?")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "scheme": "http",
        "server": ("127.0.0.1", 15000),
        "client": ("127.0.0.1", 50000),
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, orjson.loads(body)


async def _fill(store: TaskStore) -> None:
    now = time.time()
    await store.put_owner("old", "c-old", "writer", 600, at=now - 3600)
    await store.record("old", "writer", "submitted", now - 3600)
    await store.record("old", "writer", "working", now - 3500)
    await store.put_owner("new", "c-new", "vision", 600, at=now - 5)
    await store.record("new", "vision", "input-required", now - 4)
    await store.put_owner("done", "c-done", "writer", 600, at=now - 60)
    await store.record("done", "writer", "completed", now - 2)


async def _check_admin_listing(app: Starlette) -> None:
    status, body = await _get(app, "/a2a/tasks")
    assert status == 200, body
    assert [t["task_id"] for t in body["tasks"]] == ["done", "new", "old"]
    assert body["tasks"][0]["backend"] == "agents"
    assert body["tasks"][2]["history"][1]["state"] == "working"
    status, body = await _get(app, "/a2a/tasks?agent=writer")
    assert [t["task_id"] for t in body["tasks"]] == ["done", "old"]
    status, body = await _get(app, "/a2a/tasks?state=TASK_STATE_WORKING")
    assert [t["task_id"] for t in body["tasks"]] == ["old"]
    status, body = await _get(app, "/a2a/tasks?state=input-required&agent=vision")
    assert [t["task_id"] for t in body["tasks"]] == ["new"]
    status, body = await _get(app, "/a2a/tasks?older_than_seconds=600")
    assert [t["task_id"] for t in body["tasks"]] == ["old"]
    status, body = await _get(app, "/a2a/tasks?limit=1")
    assert [t["task_id"] for t in body["tasks"]] == ["done"]
    status, body = await _get(app, "/a2a/tasks/new")
    assert status == 200 and body["agent"] == "vision" and body["context_id"] == "c-new"
    status, body = await _get(app, "/a2a/tasks/missing")
    assert status == 404, body


async def test_admin_lists_tasks_from_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "tasks.sqlite3"
    store = SqliteTaskStore(path, "agents")  # what a worker wrote
    await _fill(store)
    await store.close()
    app = Starlette(routes=a2a_task_routes(_View(_config(f"{{type: sqlite, path: '{path}'}}"))))
    await _check_admin_listing(app)


async def test_admin_lists_tasks_from_redis(redis_port: int) -> None:
    url = f"redis://127.0.0.1:{redis_port}/3"
    store = build_task_store(_store_cfg(_config(f"{{type: redis, url: '{url}'}}")), "agents")
    assert isinstance(store, RedisTaskStore)
    try:
        await store._redis.flushdb()
        await _fill(store)
    finally:
        await store.close()
    app = Starlette(routes=a2a_task_routes(_View(_config(f"{{type: redis, url: '{url}'}}"))))
    await _check_admin_listing(app)


async def test_admin_memory_store_needs_the_live_tracker() -> None:
    app = Starlette(routes=a2a_task_routes(_View(_config("{type: memory}"))))
    status, body = await _get(app, "/a2a/tasks")
    assert status == 422
    assert "memory" in body["error"]["message"]
    # one worker: the admin plane shares the gateway's process and reads its live tracker
    tracker = TaskTracker(MemoryTaskStore(), backend="agents")
    await tracker.start()
    try:
        await _fill(tracker.store)
        await _check_admin_listing(app)
    finally:
        await tracker.close()


async def test_admin_rejects_bad_queries(tmp_path: Path) -> None:
    path = tmp_path / "none.sqlite3"
    app = Starlette(routes=a2a_task_routes(_View(_config(f"{{type: sqlite, path: '{path}'}}"))))
    status, body = await _get(app, "/a2a/tasks")
    assert (status, body["tasks"]) == (200, [])
    assert not path.exists()  # listing does not create the file
    for query, param in [
        ("state=sleeping", "state"),
        ("older_than_seconds=-1", "older_than_seconds"),
        ("older_than_seconds=nan", "older_than_seconds"),
        ("older_than_seconds=soon", "older_than_seconds"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=ten", "limit"),
    ]:
        status, body = await _get(app, f"/a2a/tasks?{query}")
        assert status == 400, (query, body)
        assert body["error"]["param"] == param
    status, body = await _get(app, "/a2a/tasks?backend=nope")
    assert status == 404


async def test_admin_task_routes_need_the_token(tmp_path: Path) -> None:
    path = tmp_path / "tasks.sqlite3"
    cfg = _config(f"{{type: sqlite, path: '{path}'}}", admin="{port: 15000, token: s3cret}")
    app = Starlette(routes=a2a_task_routes(_View(cfg)))
    for route in ("/a2a/tasks", "/a2a/tasks/t1"):
        status, _ = await _get(app, route)
        assert status == 401
        status, _ = await _get(app, route, {"authorization": "Bearer wrong"})
        assert status == 401
    status, _ = await _get(app, "/a2a/tasks", {"authorization": "Bearer s3cret"})
    assert status == 200


async def test_redis_listing_index_forgets_expired_tasks(redis_port: int) -> None:
    store = RedisTaskStore(f"redis://127.0.0.1:{redis_port}/0", f"test:{next(_counter)}:")
    try:
        await store.put_owner("gone", None, "writer", 0.2)

        async def expired() -> bool:
            return await store.owner("gone") is None

        await _eventually(expired)
        store._pruned = float("-inf")  # the once-a-minute pass is due
        await store.put_owner("kept", None, "writer", 60)
        assert await store._redis.zscore(store._index, "gone") is None
        assert await store._redis.zscore(store._index, "kept") is not None
    finally:
        await store.close()


# --- end to end: two gateways on one Redis (needs the A2A backend) ---------------------------


def test_a_task_created_through_one_replica_is_fetched_and_canceled_through_another(
    redis_port: int,
) -> None:
    """Two `crossway serve` replicas share a Redis task store: a task created through A is
    fetched and canceled through B, and A's admin plane lists it canceled. Skipped while the
    A2A backend does not serve yet."""
    import httpx
    from a2a.types.a2a_pb2 import CancelTaskRequest, GetTaskRequest, TaskState

    from tests.a2a.agents import run_agent
    from tests.helpers import start_gateway

    with run_agent("asker", "1.0") as asker:
        config = f"""
routes:
  - {{name: a2a, match: {{path: {{prefix: /a2a}}}}, backend: agents}}
backends:
  agents:
    type: a2a
    task_store: {{type: redis, url: "redis://127.0.0.1:{redis_port}/5"}}
    agents:
      asker: {{url: {asker.url}}}
"""
        with start_gateway(config) as replica_a, start_gateway(config) as replica_b:
            card = httpx.get(f"{replica_a.url}/a2a/asker/.well-known/agent-card.json", timeout=10)
            if card.status_code == 501:
                pytest.skip("needs the A2A backend (crossway.a2a.backend answers 501 today)")
            assert card.status_code == 200, card.text

            async def scenario() -> str:
                from tests.a2a.test_proxy import _client, _events, _message

                async with _client(f"{replica_a.url}/a2a/asker", "JSONRPC") as via_a:
                    events = await _events(via_a, _message("Answer my question, ask me first"))
                task = next(e.task for e in events if e.HasField("task"))
                assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
                async with _client(f"{replica_b.url}/a2a/asker", "JSONRPC") as via_b:
                    got = await via_b.get_task(GetTaskRequest(id=task.id))
                    assert got.id == task.id
                    canceled = await via_b.cancel_task(CancelTaskRequest(id=task.id))
                    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
                return str(task.id)

            task_id = asyncio.run(scenario())
            listed = httpx.get(f"{replica_a.admin_url}/a2a/tasks?agent=asker", timeout=10)
            assert listed.status_code == 200, listed.text
            (entry,) = [t for t in listed.json()["tasks"] if t["task_id"] == task_id]
            assert entry["state"] == "canceled"
            assert [h["state"] for h in entry["history"]][-1] == "canceled"
