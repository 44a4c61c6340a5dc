"""Issue 9's `kill -9` test on the embedded store (SQLite, no Redis): a gateway killed with
SIGKILL loses no spend acknowledged more than one flush interval before the kill, and a restart
on the same data directory never counts a record twice.

Every call sends its own `x-request-id`, which the spend record keeps, so the test checks record
by record: each acknowledged call's id is in the store exactly once (read straight from the
`spend` table), and the totals budgets are checked against (`period_spend`) equal the sum of the
records (`spend_report`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from crossway.store import key_admin
from crossway.store.accounting_sqlite import SqliteAccounting
from tests.helpers import Gateway, start_gateway, wait_for
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks.base import MockServer, Reply

FLUSH = 0.5
"""`accounting.flush_interval`: a kill may lose spend acknowledged within this long."""
WRITE_SLACK = 0.25
"""The batch write's own time after the flush interval (a thread hop and one SQLite commit)."""
REPLY = Reply(input_tokens=2000, output_tokens=1000)
COST = 2000 * 0.15e-6 + 1000 * 0.60e-6
"""$0.0009 a call at gpt-4o-mini's bundled price ($0.15 in / $0.60 out per 1M tokens)."""
HELLO: Any = [{"role": "user", "content": "hello"}]

CONFIG = """
accounting:
  flush_interval: {flush}
  key_poll_interval: 0.2
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies: [{{type: virtual_key}}]
backends:
  llm:
    type: llm
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {key}}}
    models:
      - name: gpt-4o-mini
        targets: [{{provider: oa}}]
"""


@dataclass
class Node:
    """One data directory, the key made in it, and the gateway serving it (restartable)."""

    data: Path
    mock: MockServer
    secret: str = ""
    key_id: str = ""
    gateway: Gateway | None = None
    stack: ExitStack = field(default_factory=ExitStack)

    @property
    def db(self) -> Path:
        return self.data / "accounting.sqlite3"

    def store(self, work: Any) -> Any:
        async def go() -> Any:
            store = SqliteAccounting(self.db)
            await store.open()
            try:
                return await work(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def start(self) -> Gateway:
        config = CONFIG.format(flush=FLUSH, oa=self.mock.url, key=API_KEY)
        self.gateway = self.stack.enter_context(
            start_gateway(config, env={"CROSSWAY_DATA_DIR": str(self.data)})
        )
        return self.gateway

    def kill(self) -> float:
        """SIGKILL the gateway; returns the monotonic time just before the signal."""
        assert self.gateway is not None
        at = time.monotonic()
        self.gateway.proc.kill()
        self.gateway.proc.wait(10)
        return at

    def call(self) -> tuple[str, int]:
        """One chat completion with a fresh request id: `(id, status)`."""
        assert self.gateway is not None
        request_id = uuid.uuid4().hex
        body = {"model": "gpt-4o-mini", "messages": HELLO}
        headers = {"authorization": f"Bearer {self.secret}", "x-request-id": request_id}
        url = self.gateway.url + "/v1/chat/completions"
        r = httpx.post(url, json=body, headers=headers, timeout=10)
        return request_id, r.status_code

    def stored_ids(self) -> Counter[str]:
        """Request ids of the key's spend records, as stored (with multiplicity)."""
        with sqlite3.connect(self.db) as db:
            rows = db.execute("SELECT request_id FROM spend WHERE key_id = ?", (self.key_id,))
            return Counter(row[0] for row in rows)

    def report(self) -> tuple[int, float]:
        rows = self.store(lambda s: s.spend_report(["key"], None, None, {"key": self.key_id}))
        return (rows[0]["requests"], rows[0]["cost"]) if rows else (0, 0.0)

    def total(self) -> float:
        """The key's all-time total, as budgets read it."""
        (spent,) = self.store(lambda s: s.period_spend([(f"key:{self.key_id}", "total")]))
        return float(spent)

    def wait_stored(self, count: int) -> None:
        wait_for(
            lambda: self.report()[0] >= count,
            timeout=FLUSH + 5,
            what=f"{count} spend records to be written",
        )

    def assert_consistent(self, expected: int) -> None:
        """The store holds `expected` records, each once, and its totals are their sum."""
        ids = self.stored_ids()
        twice = [i for i, n in ids.items() if n > 1]
        assert not twice, f"counted twice: {twice}"
        requests, cost = self.report()
        assert requests == expected == sum(ids.values())
        assert cost == pytest.approx(expected * COST)
        assert self.total() == pytest.approx(cost)


@pytest.fixture(scope="module")
def mock() -> Iterator[MockServer]:
    loop = MockLoop()
    server = loop.start(openai_mock())
    server.default = REPLY
    try:
        yield server
    finally:
        loop.close()


@pytest.fixture
def node(tmp_path: Path, mock: MockServer) -> Iterator[Node]:
    node = Node(tmp_path, mock)

    async def make(store: SqliteAccounting) -> Any:
        return await key_admin.create_key(store, name="crash")

    node.secret, key = node.store(make)
    node.key_id = key.id
    with node.stack:
        yield node


def test_kill_after_a_flush_loses_nothing_and_a_restart_counts_nothing_twice(
    node: Node,
) -> None:
    node.start()
    acked = []
    for _ in range(8):
        request_id, status = node.call()
        assert status == 200
        acked.append(request_id)
    node.wait_stored(len(acked))
    node.kill()
    assert node.stored_ids() == Counter(acked)
    node.assert_consistent(len(acked))

    node.start()  # same data dir: the killed process's WAL is recovered, nothing replayed
    for _ in range(5):
        request_id, status = node.call()
        assert status == 200
        acked.append(request_id)
    node.wait_stored(len(acked))
    assert node.gateway is not None
    assert node.gateway.stop() == 0  # a clean stop flushes once more: still nothing twice
    assert node.stored_ids() == Counter(acked)
    node.assert_consistent(len(acked))


@dataclass
class Load:
    """Four threads calling the gateway without pause until stopped or it goes away."""

    node: Node
    sent: set[str] = field(default_factory=set)
    acked: list[tuple[str, float]] = field(default_factory=list)
    """(request id, monotonic time the 200 arrived)."""
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self) -> None:
        assert self.node.gateway is not None
        url = self.node.gateway.url + "/v1/chat/completions"
        with httpx.Client() as client:
            while not self.stop.is_set():
                request_id = uuid.uuid4().hex
                with self.lock:
                    self.sent.add(request_id)
                try:
                    r = client.post(
                        url,
                        json={"model": "gpt-4o-mini", "messages": HELLO},
                        headers={
                            "authorization": f"Bearer {self.node.secret}",
                            "x-request-id": request_id,
                        },
                        timeout=10,
                    )
                except httpx.HTTPError:
                    return  # the gateway is gone
                if r.status_code == 200:
                    with self.lock:
                        self.acked.append((request_id, time.monotonic()))
                elif r.status_code != 503:  # 503: a draining gateway refusing new calls
                    raise AssertionError(f"{r.status_code}: {r.text}")

    def running_for(self, seconds: float, calls: int) -> bool:
        with self.lock:
            return len(self.acked) >= calls and time.monotonic() - self.acked[0][1] > seconds

    @contextmanager
    def running(self) -> Iterator[Load]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            workers = [pool.submit(self.worker) for _ in range(4)]
            try:
                yield self
            finally:
                self.stop.set()
            for future in workers:
                future.result(timeout=15)


def test_kill_while_calls_are_answered(node: Node) -> None:
    node.mock.default = Reply(input_tokens=2000, output_tokens=1000, delay=0.02)
    node.start()
    load = Load(node)
    with load.running():
        wait_for(
            lambda: load.running_for(2 * FLUSH, 40),
            timeout=15,
            what="calls for more than a flush interval",
        )
        killed_at = node.kill()  # calls are in flight right now

    stored = node.stored_ids()
    assert max(stored.values()) == 1, "a record was written twice"
    unknown = set(stored) - load.sent
    assert not unknown, f"records of calls nobody made: {unknown}"
    deadline = killed_at - FLUSH - WRITE_SLACK
    due = [request_id for request_id, at in load.acked if at < deadline]
    lost = [request_id for request_id in due if request_id not in stored]
    assert not lost, f"{len(lost)} of {len(due)} calls acknowledged before the flush lost"
    assert len(due) >= 20
    node.assert_consistent(len(stored))

    node.mock.default = REPLY
    node.start()
    before = len(stored)
    for _ in range(5):
        _, status = node.call()
        assert status == 200
    node.wait_stored(before + 5)
    node.assert_consistent(before + 5)
    assert set(node.stored_ids()) >= set(stored)


def test_a_clean_stop_while_calls_are_answered_writes_every_acknowledged_call(
    node: Node,
) -> None:
    """SIGTERM (a deploy) is not a crash: the shutdown flush writes everything, however
    recent."""
    node.mock.default = Reply(input_tokens=2000, output_tokens=1000, delay=0.02)
    gateway = node.start()
    load = Load(node)
    with load.running():
        wait_for(lambda: load.running_for(0, 20), timeout=15, what="calls")
        assert gateway.stop() == 0
    stored = node.stored_ids()
    acked = {request_id for request_id, _ in load.acked}
    assert not acked - set(stored), f"{len(acked - set(stored))} acknowledged calls lost"
    assert not set(stored) - load.sent
    node.assert_consistent(len(stored))
