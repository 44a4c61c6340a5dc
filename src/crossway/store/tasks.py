"""Task ownership and task states: which agent owns each task id and context id, and the states
each task went through, with their times.

Protocol-neutral (A2A is its first user): a task is an opaque id owned by one named agent, in
an optional context, moving through named states. Three implementations, picked by config
(`crossway.config.a2a.TaskStoreConfig`):

    MemoryTaskStore   this process only (one replica, one worker; lost on restart)
    SqliteTaskStore   a SQLite file (WAL): every worker and restart of one machine
                      (`crossway.store.tasks_sqlite`)
    RedisTaskStore    shared by every replica naming the same server
                      (`crossway.store.tasks_redis`)

Ownership is first-writer-wins: once a task or context id belongs to an agent it is never
re-pointed at another (until it expires), so an agent cannot take over another agent's task by
answering with its id, and `record` from an agent that does not own the task is ignored.
Every entry lives `ttl` seconds after its last write. Times are wall-clock seconds (epoch), so
replicas and restarts agree on them.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol

from crossway.config.a2a import (
    DEFAULT_TASK_DB,
    DEFAULT_TASK_TTL_SECONDS,
    MemoryTaskStoreConfig,
    TaskStoreConfig,
)
from crossway.config.store import RedisStoreConfig

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


def record_matches(
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
        found = [r for r in live if record_matches(r, agent, state, older_than)]
        found.sort(key=lambda r: r.updated, reverse=True)
        return found[:limit]

    async def close(self) -> None:
        return None


def default_task_path() -> Path:
    """`$CROSSWAY_DATA_DIR/a2a-tasks.sqlite3`, the data dir defaulting to `./.crossway`."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR) / DEFAULT_TASK_DB


def build_task_store(cfg: TaskStoreConfig, backend: str) -> TaskStore:
    """The store `cfg` names for the A2A backend `backend` (its Redis keys and SQLite rows are
    kept apart from other backends')."""
    if isinstance(cfg, RedisStoreConfig):
        from crossway.store.tasks_redis import RedisTaskStore  # redis is imported only if used

        return RedisTaskStore(cfg.url.get_secret_value(), f"crossway:a2a:{backend}:")
    if isinstance(cfg, MemoryTaskStoreConfig):
        return MemoryTaskStore()
    from crossway.store.tasks_sqlite import SqliteTaskStore

    return SqliteTaskStore(Path(cfg.path) if cfg.path else default_task_path(), backend)


__all__ = [
    "TERMINAL_STATES",
    "MemoryTaskStore",
    "TaskRecord",
    "TaskStore",
    "build_task_store",
    "default_task_path",
]
