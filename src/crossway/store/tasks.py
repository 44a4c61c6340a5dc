"""Task ownership and task states: which agent owns each task id and context id, and the states
each task went through, with their times.

Protocol-neutral (A2A is its first user): a task is an opaque id owned by one named agent, in
an optional context, moving through named states. Three implementations, picked by config
(`crossway.config.a2a.TaskStoreConfig`):

    MemoryTaskStore   this process only (one replica, one worker; lost on restart)
    SqliteTaskStore   a SQLite file (WAL): every worker and restart of one machine
    RedisTaskStore    shared by every replica naming the same server

Ownership is first-writer-wins: once a task or context id belongs to an agent it is never
re-pointed at another (until it expires), so an agent cannot take over another agent's task by
answering with its id, and `record` from an agent that does not own the task is ignored.
Every entry lives `ttl` seconds after its last write. Times are wall-clock seconds (epoch), so
replicas and restarts agree on them.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from crossway.config.a2a import (
    DEFAULT_TASK_DB,
    DEFAULT_TASK_TTL_SECONDS,
    MemoryTaskStoreConfig,
    TaskStoreConfig,
)
from crossway.config.store import RedisStoreConfig
from crossway.store.revocations import REDIS_TIMEOUT_SECONDS, StoreUnavailable

log = logging.getLogger("crossway.store.tasks")

DATA_DIR_ENV: Final = "CROSSWAY_DATA_DIR"
DEFAULT_DATA_DIR: Final = ".crossway"
DEFAULT_LIST_LIMIT: Final = 100
MAX_HISTORY: Final = 64
"""Transitions kept per task (the latest ones); a task flapping between states stays small."""
MAX_MEMORY_TASKS: Final = 100_000
"""Tasks (and contexts) the in-process store holds at most; the least recently written go first."""
SQLITE_CACHE_SIZE: Final = 10_000
"""Tasks whose owner and state a SQLite store remembers in memory (write-through)."""
BUSY_TIMEOUT_MS: Final = 5000
"""How long a SQLite write waits for another process holding the file's write lock."""
PURGE_INTERVAL_SECONDS: Final = 60.0
"""How often expired rows are deleted from the SQLite file."""
REDIS_SCAN_BATCH: Final = 200
"""Task ids read from the Redis index per round trip while listing."""
MAX_TTL_FALLBACK: Final = DEFAULT_TASK_TTL_SECONDS
"""TTL of a task `record` creates without `put_owner` (it has no TTL of its own)."""

TERMINAL_STATES: Final = frozenset({"completed", "failed", "canceled", "rejected"})
"""States a task never leaves."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task as the store knows it."""

    task_id: str
    agent: str
    """The agent that owns the task."""
    context_id: str | None
    state: str | None
    """The latest state recorded (None: ownership known, no state seen yet)."""
    created: float
    """When the task was first seen (epoch seconds)."""
    updated: float
    """When its state last changed (or `created`)."""
    history: tuple[tuple[str, float], ...] = ()
    """(state, at) transitions, oldest first (the latest `MAX_HISTORY`)."""

    def to_json(self) -> dict[str, Any]:
        """The record as the admin API answers it."""
        return {
            "task_id": self.task_id,
            "agent": self.agent,
            "context_id": self.context_id,
            "state": self.state,
            "created": self.created,
            "updated": self.updated,
            "terminal": self.state in TERMINAL_STATES,
            "history": [{"state": state, "at": at} for state, at in self.history],
        }


Records = list[TaskRecord]


class TaskStore(Protocol):
    """Who owns which task and context, and the states each task went through."""

    async def put_owner(
        self,
        task_id: str | None,
        context_id: str | None,
        agent: str,
        ttl: float,
        *,
        at: float | None = None,
    ) -> str:
        """Make `agent` the owner of `task_id` and `context_id` (either may be None) unless
        another agent owns them; returns the task's owner (`agent` when `task_id` is None).
        Completed before it returns: the next request, on any worker, sees it. `at` is the
        task's creation time (default: now)."""

    async def owner(self, task_id: str) -> str | None:
        """The agent owning `task_id`, or None."""

    async def context_owner(self, context_id: str) -> str | None:
        """The agent owning `context_id`, or None."""

    async def record(self, task_id: str, agent: str, state: str, at: float) -> float | None:
        """Record that `task_id` entered `state` at `at` (creating the task for `agent` if it is
        unknown). Returns the task's creation time, or None when nothing changed: the task was
        already in that state, or `agent` does not own it."""

    async def get(self, task_id: str) -> TaskRecord | None:
        """The task with its history, or None."""

    async def list(
        self,
        *,
        agent: str | None = None,
        state: str | None = None,
        older_than: float | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> Records:
        """Tasks, most recently updated first: of `agent`, in `state`, last updated before the
        epoch time `older_than`; at most `limit`."""

    async def close(self) -> None:
        """Write what is pending and release connections."""


def _matches(
    rec: TaskRecord, agent: str | None, state: str | None, older_than: float | None
) -> bool:
    return (
        (agent is None or rec.agent == agent)
        and (state is None or rec.state == state)
        and (older_than is None or rec.updated < older_than)
    )


# --- memory ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _MemTask:
    record: TaskRecord
    ttl: float
    expires: float


class MemoryTaskStore:
    """Tasks held by this process, each until `ttl` after its last write, at most
    `MAX_MEMORY_TASKS` of them."""

    def __init__(self, *, max_tasks: int = MAX_MEMORY_TASKS) -> None:
        self.max_tasks = max_tasks
        self._tasks: OrderedDict[str, _MemTask] = OrderedDict()
        self._contexts: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def _task(self, task_id: str) -> _MemTask | None:
        entry = self._tasks.get(task_id)
        if entry is not None and entry.expires <= time.time():
            del self._tasks[task_id]
            return None
        return entry

    def _keep(self, store: OrderedDict[str, Any], key: str, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > self.max_tasks:
            store.popitem(last=False)

    async def put_owner(
        self,
        task_id: str | None,
        context_id: str | None,
        agent: str,
        ttl: float,
        *,
        at: float | None = None,
    ) -> str:
        now = time.time()
        owner = agent
        if task_id is not None:
            entry = self._task(task_id)
            if entry is None:
                created = now if at is None else at
                record = TaskRecord(task_id, agent, context_id, None, created, created)
                self._keep(self._tasks, task_id, _MemTask(record, ttl, now + ttl))
            else:
                owner = entry.record.agent
        if context_id is not None and owner == agent:
            known = self._contexts.get(context_id)
            if known is None or known[1] <= now:
                self._keep(self._contexts, context_id, (agent, now + ttl))
            elif known[0] == agent:
                self._keep(self._contexts, context_id, (agent, max(known[1], now + ttl)))
        return owner

    async def owner(self, task_id: str) -> str | None:
        entry = self._task(task_id)
        return None if entry is None else entry.record.agent

    async def context_owner(self, context_id: str) -> str | None:
        known = self._contexts.get(context_id)
        if known is None or known[1] <= time.time():
            return None
        return known[0]

    async def record(self, task_id: str, agent: str, state: str, at: float) -> float | None:
        entry = self._task(task_id)
        if entry is None:
            await self.put_owner(task_id, None, agent, MAX_TTL_FALLBACK, at=at)
            entry = self._task(task_id)
            assert entry is not None
        rec = entry.record
        if rec.agent != agent or rec.state == state:
            return None
        history = (*rec.history, (state, at))[-MAX_HISTORY:]
        entry.record = replace(rec, state=state, updated=at, history=history)
        entry.expires = time.time() + entry.ttl
        self._tasks.move_to_end(task_id)
        if rec.context_id is not None:
            known = self._contexts.get(rec.context_id)
            if known is not None and known[0] == agent:
                self._contexts[rec.context_id] = (agent, max(known[1], entry.expires))
        return rec.created

    async def get(self, task_id: str) -> TaskRecord | None:
        entry = self._task(task_id)
        return None if entry is None else entry.record

    async def list(
        self,
        *,
        agent: str | None = None,
        state: str | None = None,
        older_than: float | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> Records:
        now = time.time()
        live = [e.record for e in self._tasks.values() if e.expires > now]
        found = [r for r in live if _matches(r, agent, state, older_than)]
        found.sort(key=lambda r: r.updated, reverse=True)
        return found[:limit]

    async def close(self) -> None:
        return None


# --- SQLite ----------------------------------------------------------------------------------

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


def default_task_path() -> Path:
    """`$CROSSWAY_DATA_DIR/a2a-tasks.sqlite3`, the data dir defaulting to `./.crossway`."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR) / DEFAULT_TASK_DB


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


# --- Redis -----------------------------------------------------------------------------------

_PUT_OWNER: Final = """
-- KEYS: task hash, context key (or ""), index; ARGV: task id, agent, context, created, ttl ms
local owner = ARGV[2]
if KEYS[1] ~= "" then
  if redis.call('HSETNX', KEYS[1], 'agent', ARGV[2]) == 1 then
    redis.call('HSET', KEYS[1], 'created', ARGV[4], 'updated', ARGV[4], 'ttl', ARGV[5])
    if ARGV[3] ~= "" then redis.call('HSET', KEYS[1], 'context', ARGV[3]) end
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  else
    owner = redis.call('HGET', KEYS[1], 'agent')
  end
end
if KEYS[2] ~= "" and owner == ARGV[2] then
  if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[5]) == false then
    if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
  end
end
return owner
"""

_RECORD: Final = """
-- KEYS: task hash, history list, index; ARGV: task id, agent, state, at, default ttl ms,
-- max history, context key prefix
local cur = redis.call('HMGET', KEYS[1], 'agent', 'state', 'created', 'ttl', 'context')
if cur[1] and cur[1] ~= ARGV[2] then return false end
if cur[2] == ARGV[3] then return false end
local created = cur[3]
local ttl = cur[4]
if not cur[1] then
  created = ARGV[4]
  ttl = ARGV[5]
  redis.call('HSET', KEYS[1], 'agent', ARGV[2], 'created', created, 'ttl', ttl)
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'updated', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[3] .. ' ' .. ARGV[4])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
if cur[5] then
  local ctx = ARGV[7] .. cur[5]
  if redis.call('GET', ctx) == ARGV[2] and redis.call('PTTL', ctx) < tonumber(ttl) then
    redis.call('PEXPIRE', ctx, ttl)
  end
end
return created
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisTaskStore:
    """Tasks in Redis, shared by every worker and replica using the same server.

    Keys under `namespace` (`crossway:a2a:<backend>:`): `task:<id>` a hash (agent, context,
    state, created, updated, ttl), `task:<id>:history` a list of "state at", `context:<id>`
    the owning agent, `tasks` a sorted set of task ids by last update (for listing); each
    expires `ttl` after its last write. Writes are Lua scripts (one round trip, atomic). Redis
    errors raise `StoreUnavailable`.
    """

    def __init__(self, url: str, namespace: str) -> None:
        self.namespace = namespace
        self._redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self._put_owner = self._redis.register_script(_PUT_OWNER)
        self._record = self._redis.register_script(_RECORD)
        self._index = namespace + "tasks"
        self._pruned = time.monotonic()

    def _task_key(self, task_id: str) -> str:
        return f"{self.namespace}task:{task_id}"

    def _context_key(self, context_id: str) -> str:
        return f"{self.namespace}context:{context_id}"

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
        keys = [
            "" if task_id is None else self._task_key(task_id),
            "" if context_id is None else self._context_key(context_id),
            self._index,
        ]
        args: list[str | int] = [
            task_id or "",
            agent,
            context_id or "",
            repr(created),
            max(int(ttl * 1000), 1),
        ]
        try:
            owner = await self._put_owner(keys=keys, args=args)
            if time.monotonic() - self._pruned > PURGE_INTERVAL_SECONDS:
                self._pruned = time.monotonic()
                await self._prune()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc
        return _text(owner)

    async def _prune(self) -> None:
        """Drop the ids of expired tasks from the listing index (the least recently updated
        `REDIS_SCAN_BATCH`; listing drops the others it meets)."""
        oldest = [
            _text(item) for item in await self._redis.zrange(self._index, 0, REDIS_SCAN_BATCH - 1)
        ]
        if not oldest:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in oldest:
                pipe.exists(self._task_key(task_id))
            alive = await pipe.execute()
        gone = [task_id for task_id, live in zip(oldest, alive, strict=True) if not live]
        if gone:
            await self._redis.zrem(self._index, *gone)

    async def owner(self, task_id: str) -> str | None:
        try:
            found = await self._redis.hget(self._task_key(task_id), "agent")  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc
        return None if found is None else _text(found)

    async def context_owner(self, context_id: str) -> str | None:
        try:
            found = await self._redis.get(self._context_key(context_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc
        return None if found is None else _text(found)

    async def record(self, task_id: str, agent: str, state: str, at: float) -> float | None:
        key = self._task_key(task_id)
        keys = [key, key + ":history", self._index]
        args: list[str | int] = [
            task_id,
            agent,
            state,
            repr(at),
            int(MAX_TTL_FALLBACK * 1000),
            MAX_HISTORY,
            self.namespace + "context:",
        ]
        try:
            created = await self._record(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc
        return None if created is None else float(_text(created))

    def _parse(
        self, task_id: str, fields: dict[bytes, bytes], history: Iterable[bytes]
    ) -> TaskRecord | None:
        if b"agent" not in fields:
            return None
        transitions = []
        for item in history:
            entered, _, at = _text(item).rpartition(" ")
            transitions.append((entered, float(at)))
        created = float(fields.get(b"created", b"0"))
        context = fields.get(b"context")
        state = fields.get(b"state")
        return TaskRecord(
            task_id,
            _text(fields[b"agent"]),
            None if context is None else _text(context),
            None if state is None else _text(state),
            created,
            float(fields.get(b"updated", b"0")) or created,
            tuple(transitions),
        )

    async def _fetch(self, task_ids: builtins.list[str]) -> builtins.list[TaskRecord | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                key = self._task_key(task_id)
                pipe.hgetall(key)
                pipe.lrange(key + ":history", 0, -1)
            replies = await pipe.execute()
        return [
            self._parse(task_id, replies[2 * i], replies[2 * i + 1])
            for i, task_id in enumerate(task_ids)
        ]

    async def get(self, task_id: str) -> TaskRecord | None:
        try:
            return (await self._fetch([task_id]))[0]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc

    async def list(
        self,
        *,
        agent: str | None = None,
        state: str | None = None,
        older_than: float | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> Records:
        top: str = "+inf" if older_than is None else f"({older_than!r}"
        found: Records = []
        start = 0
        try:
            while len(found) < limit:
                raw = await self._redis.zrevrangebyscore(
                    self._index, top, "-inf", start=start, num=REDIS_SCAN_BATCH
                )
                if not raw:
                    break
                start += len(raw)
                ids = [_text(item) for item in raw]
                records = await self._fetch(ids)
                gone = [task_id for task_id, rec in zip(ids, records, strict=True) if rec is None]
                if gone:
                    await self._redis.zrem(self._index, *gone)
                    start -= len(gone)
                found += [
                    rec
                    for rec in records
                    if rec is not None and _matches(rec, agent, state, older_than)
                ]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc
        return found[:limit]

    async def close(self) -> None:
        await self._redis.aclose()


def build_task_store(cfg: TaskStoreConfig, backend: str) -> TaskStore:
    """The store `cfg` names for the A2A backend `backend` (its Redis keys and SQLite rows are
    kept apart from other backends')."""
    if isinstance(cfg, RedisStoreConfig):
        return RedisTaskStore(cfg.url.get_secret_value(), f"crossway:a2a:{backend}:")
    if isinstance(cfg, MemoryTaskStoreConfig):
        return MemoryTaskStore()
    return SqliteTaskStore(Path(cfg.path) if cfg.path else default_task_path(), backend)


__all__ = [
    "TERMINAL_STATES",
    "MemoryTaskStore",
    "RedisTaskStore",
    "SqliteTaskStore",
    "TaskRecord",
    "TaskStore",
    "build_task_store",
    "default_task_path",
]
