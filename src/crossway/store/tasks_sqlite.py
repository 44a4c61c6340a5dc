"""`SqliteTaskStore`: task ownership and states in a SQLite file, shared by every worker
process and restart of one machine (see `crossway.store.tasks` for the contract)."""

from __future__ import annotations

import asyncio
import builtins
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson

from crossway.store.revocations import StoreUnavailable
from crossway.store.tasks import (
    BUSY_TIMEOUT_MS,
    DEFAULT_LIST_LIMIT,
    MAX_HISTORY,
    MAX_TTL_FALLBACK,
    PURGE_INTERVAL_SECONDS,
    SQLITE_CACHE_SIZE,
    Records,
    TaskRecord,
)

log = logging.getLogger("crossway.store.tasks")

_T = TypeVar("_T")

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS a2a_tasks ("
    " backend TEXT NOT NULL, task_id TEXT NOT NULL, agent TEXT NOT NULL, context_id TEXT,"
    " state TEXT, created REAL NOT NULL, updated REAL NOT NULL, ttl REAL NOT NULL,"
    " expires REAL NOT NULL, history TEXT NOT NULL DEFAULT '[]',"
    " PRIMARY KEY (backend, task_id))",
    "CREATE INDEX IF NOT EXISTS a2a_tasks_by_update ON a2a_tasks (backend, updated)",
    "CREATE INDEX IF NOT EXISTS a2a_tasks_by_expiry ON a2a_tasks (expires)",
    "CREATE TABLE IF NOT EXISTS a2a_contexts ("
    " backend TEXT NOT NULL, context_id TEXT NOT NULL, agent TEXT NOT NULL,"
    " expires REAL NOT NULL, PRIMARY KEY (backend, context_id))",
)
_COLUMNS: Final = "task_id, agent, context_id, state, created, updated, history"


def _row_record(row: tuple[Any, ...]) -> TaskRecord:
    history = tuple((str(s), float(a)) for s, a in orjson.loads(row[6]))
    return TaskRecord(row[0], row[1], row[2], row[3], row[4], row[5], history)


@dataclass(slots=True)
class _Cached:
    """A task as this process last wrote or read it."""

    agent: str
    context_id: str | None
    state: str | None
    created: float
    ttl: float
    expires: float


class _TaskFile:
    """Blocking access to the SQLite file; only ever called from the store's one thread."""

    def __init__(self, path: Path, backend: str) -> None:
        self.path = path
        self.backend = backend
        self._conn: sqlite3.Connection | None = None
        self._purged = 0.0

    def db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    def batch(self, ops: builtins.list[Callable[[sqlite3.Connection], Any]]) -> builtins.list[Any]:
        """Run `ops` in one transaction; each op's result or exception, in order."""
        conn = self.db()
        results: builtins.list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                try:
                    results.append(op(conn))
                except sqlite3.Error as exc:
                    results.append(exc)
            now = time.time()
            if now - self._purged > PURGE_INTERVAL_SECONDS:
                self._purged = now
                conn.execute("DELETE FROM a2a_tasks WHERE expires <= ?", (now,))
                conn.execute("DELETE FROM a2a_contexts WHERE expires <= ?", (now,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # Ops: each takes the connection, inside the batch's transaction.

    def put_owner(
        self,
        conn: sqlite3.Connection,
        task_id: str | None,
        context_id: str | None,
        agent: str,
        ttl: float,
        created: float,
    ) -> tuple[str, _Cached | None]:
        """(the task's owner, the task as it is now)."""
        now = time.time()
        owner, found = agent, None
        if task_id is not None:
            conn.execute(
                "DELETE FROM a2a_tasks WHERE backend = ? AND task_id = ? AND expires <= ?",
                (self.backend, task_id, now),
            )
            conn.execute(
                "INSERT OR IGNORE INTO a2a_tasks"
                " (backend, task_id, agent, context_id, state, created, updated, ttl, expires)"
                " VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)",
                (self.backend, task_id, agent, context_id, created, created, ttl, now + ttl),
            )
            found = self.owner(conn, task_id)
            assert found is not None
            owner = found.agent
        if context_id is not None and owner == agent:
            conn.execute(
                "INSERT INTO a2a_contexts (backend, context_id, agent, expires)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (backend, context_id) DO UPDATE SET"
                " agent = CASE WHEN expires <= ? THEN excluded.agent ELSE agent END,"
                " expires = CASE WHEN expires <= ? OR agent = excluded.agent"
                "   THEN max(expires, excluded.expires) ELSE expires END",
                (self.backend, context_id, agent, now + ttl, now, now),
            )
        return owner, found

    def record(
        self, conn: sqlite3.Connection, task_id: str, agent: str, state: str, at: float
    ) -> tuple[float | None, _Cached | None]:
        """(creation time if the state changed, the task as it is now)."""
        now = time.time()
        row = conn.execute(
            "SELECT agent, context_id, state, created, ttl, expires, history FROM a2a_tasks"
            " WHERE backend = ? AND task_id = ? AND expires > ?",
            (self.backend, task_id, now),
        ).fetchone()
        if row is None:
            self.put_owner(conn, task_id, None, agent, MAX_TTL_FALLBACK, at)
            row = (agent, None, None, at, MAX_TTL_FALLBACK, now + MAX_TTL_FALLBACK, "[]")
        owner, context_id, current, created, ttl, expires, history = row
        cached = _Cached(owner, context_id, current, created, ttl, expires)
        if owner != agent or current == state:
            return None, cached
        transitions = [*orjson.loads(history), [state, at]][-MAX_HISTORY:]
        conn.execute(
            "UPDATE a2a_tasks SET state = ?, updated = ?, expires = ?, history = ?"
            " WHERE backend = ? AND task_id = ?",
            (state, at, now + ttl, orjson.dumps(transitions).decode(), self.backend, task_id),
        )
        if context_id is not None:
            conn.execute(
                "UPDATE a2a_contexts SET expires = max(expires, ?)"
                " WHERE backend = ? AND context_id = ? AND agent = ?",
                (now + ttl, self.backend, context_id, agent),
            )
        cached.state, cached.expires = state, now + ttl
        return created, cached

    def owner(self, conn: sqlite3.Connection, task_id: str) -> _Cached | None:
        row = conn.execute(
            "SELECT agent, context_id, state, created, ttl, expires FROM a2a_tasks"
            " WHERE backend = ? AND task_id = ? AND expires > ?",
            (self.backend, task_id, time.time()),
        ).fetchone()
        return None if row is None else _Cached(*row)

    def context_owner(self, conn: sqlite3.Connection, context_id: str) -> str | None:
        row = conn.execute(
            "SELECT agent FROM a2a_contexts WHERE backend = ? AND context_id = ? AND expires > ?",
            (self.backend, context_id, time.time()),
        ).fetchone()
        return None if row is None else str(row[0])

    def get(self, conn: sqlite3.Connection, task_id: str) -> TaskRecord | None:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM a2a_tasks WHERE backend = ? AND task_id = ? AND expires > ?",
            (self.backend, task_id, time.time()),
        ).fetchone()
        return None if row is None else _row_record(row)

    def list(
        self,
        conn: sqlite3.Connection,
        agent: str | None,
        state: str | None,
        older_than: float | None,
        limit: int,
    ) -> Records:
        where = ["backend = ?", "expires > ?"]
        args: builtins.list[Any] = [self.backend, time.time()]
        for clause, value in (("agent = ?", agent), ("state = ?", state)):
            if value is not None:
                where.append(clause)
                args.append(value)
        if older_than is not None:
            where.append("updated < ?")
            args.append(older_than)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM a2a_tasks WHERE {' AND '.join(where)}"
            " ORDER BY updated DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_row_record(row) for row in rows]


class SqliteTaskStore:
    """Tasks in a SQLite file (WAL), shared by every process of one machine.

    One connection, used only by one worker thread: nothing blocks the event loop. Operations
    are queued and run in batches, one transaction each (group commit: what arrives while a
    batch is written goes into the next). Ownership writes and reads wait for their batch, so
    a task's owner is in the file before the response that reveals the task id is sent; state
    records of tasks this process knows do not wait. A write-through cache of the tasks seen
    here answers `owner` and `record` without the file.
    """

    def __init__(self, path: Path, backend: str, *, cache_size: int = SQLITE_CACHE_SIZE) -> None:
        self.path = path
        self.backend = backend
        self.cache_size = cache_size
        self._file = _TaskFile(path, backend)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crossway-a2a-tasks")
        self._queue: builtins.list[
            tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any] | None]
        ] = []
        self._writer: asyncio.Task[None] | None = None
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._closed = False

    def _remember(self, task_id: str, cached: _Cached) -> None:
        self._cache[task_id] = cached
        self._cache.move_to_end(task_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _submit(self, op: Callable[[sqlite3.Connection], Any], wait: bool) -> asyncio.Future[Any]:
        if self._closed:
            raise StoreUnavailable("the task store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((op, future if wait else None))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_loop())
        if not wait:
            future.set_result(None)
        return future

    async def _run(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        result: _T = await self._submit(op, True)
        return result

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await loop.run_in_executor(
                    self._thread, self._file.batch, [op for op, _ in batch]
                )
            except Exception as exc:  # the file is unwritable: fail the waiters, not the loop
                log.warning("a2a task store %s: write failed: %s", self.path, exc)
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    if future is None:
                        log.warning("a2a task store %s: %s", self.path, result)
                    elif not future.done():
                        error = StoreUnavailable("the task store could not be written")
                        error.__cause__ = result
                        future.set_exception(error)
                elif future is not None and not future.done():
                    future.set_result(result)

    async def flush(self) -> None:
        """Wait until everything queued so far is in the file."""
        await self._run(lambda conn: None)

    async def put_owner(
        self,
        task_id: str | None,
        context_id: str | None,
        agent: str,
        ttl: float,
        *,
        at: float | None = None,
    ) -> str:
        created = time.time() if at is None else at
        f = self._file
        owner, found = await self._run(
            lambda conn: f.put_owner(conn, task_id, context_id, agent, ttl, created)
        )
        if task_id is not None and found is not None:
            self._remember(task_id, found)
        return str(owner)

    def _cached(self, task_id: str) -> _Cached | None:
        cached = self._cache.get(task_id)
        if cached is not None and cached.expires <= time.time():
            del self._cache[task_id]
            return None
        return cached

    async def owner(self, task_id: str) -> str | None:
        cached = self._cached(task_id)
        if cached is not None:
            return cached.agent
        f = self._file
        found = await self._run(lambda conn: f.owner(conn, task_id))
        if found is None:
            return None
        self._remember(task_id, found)
        return found.agent

    async def context_owner(self, context_id: str) -> str | None:
        f = self._file
        return await self._run(lambda conn: f.context_owner(conn, context_id))

    async def record(self, task_id: str, agent: str, state: str, at: float) -> float | None:
        f = self._file
        cached = self._cached(task_id)
        if cached is not None:
            if cached.agent != agent or cached.state == state:
                return None
            cached.state, cached.expires = state, time.time() + cached.ttl
            self._cache.move_to_end(task_id)
            self._submit(lambda conn: f.record(conn, task_id, agent, state, at), False)
            return cached.created
        created, now = await self._run(lambda conn: f.record(conn, task_id, agent, state, at))
        if now is not None:
            self._remember(task_id, now)
        return created  # type: ignore[no-any-return]

    async def get(self, task_id: str) -> TaskRecord | None:
        f = self._file
        return await self._run(lambda conn: f.get(conn, task_id))

    async def list(
        self,
        *,
        agent: str | None = None,
        state: str | None = None,
        older_than: float | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> Records:
        f = self._file
        return await self._run(lambda conn: f.list(conn, agent, state, older_than, limit))

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await self.flush()
        except StoreUnavailable:
            pass
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._file.close)
        self._thread.shutdown(wait=False)


__all__ = ["SqliteTaskStore"]
