"""The router's recent decisions: which message went to which agent, why, with what score.

The A2A backend records every pick of its router agent (`record`) here. They are kept in this
process (the latest `MAX_DECISIONS`, for the admin plane sharing this process) and, when the
backend's task store is SQLite, in a table of that same file (`a2a_route_decisions`, pruned to
the latest `MAX_DECISIONS` per backend), so an admin plane in the supervisor of several workers
reads them with `read_decisions`. Writes leave the request path: they are queued and written
from a worker thread. With a Redis task store only this process's decisions are kept.

No message text is stored (it may be sensitive; the request log keeps it redacted): a decision
names the message by its `messageId`, context and task ids, and the modes of its parts.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from crossway.a2a.model import Decision
from crossway.config.a2a import A2aBackendConfig, SqliteTaskStoreConfig

log = logging.getLogger("crossway.a2a")

MAX_DECISIONS: Final = 500
"""Decisions kept per backend (in memory and in the file)."""
PRUNE_EVERY: Final = 50
"""Rows written between two prunes of the file."""
BUSY_TIMEOUT_MS: Final = 5000
"""How long a write waits for another worker holding the file's write lock."""

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS a2a_route_decisions ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, backend TEXT NOT NULL, time REAL NOT NULL,"
    " request_id TEXT, route TEXT, agent TEXT NOT NULL, skill TEXT, reason TEXT NOT NULL,"
    " score REAL NOT NULL, message_id TEXT, context_id TEXT, task_id TEXT, modes TEXT)",
    "CREATE INDEX IF NOT EXISTS a2a_route_decisions_by_backend"
    " ON a2a_route_decisions (backend, id)",
)
_COLUMNS: Final = (
    "time",
    "request_id",
    "route",
    "agent",
    "skill",
    "reason",
    "score",
    "message_id",
    "context_id",
    "task_id",
    "modes",
)


@dataclass(frozen=True, slots=True)
class RouteRecord:
    """One decision of the router agent, as the admin API answers it."""

    time: float
    request_id: str | None
    route: str | None
    agent: str
    skill: str | None
    reason: str
    score: float
    message_id: str | None
    context_id: str | None
    task_id: str | None
    modes: str
    """The message parts' modes, comma-separated (`text/plain,image/png`)."""

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS}


def decision_path(config: A2aBackendConfig) -> Path | None:
    """The SQLite file a backend's decisions are kept in: its task store's (None: the task
    store is not SQLite, decisions stay in this process)."""
    store = config.task_store
    if not isinstance(store, SqliteTaskStoreConfig):
        return None
    from crossway.store.tasks import default_task_path

    return Path(store.path) if store.path else default_task_path()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def part_modes(message: dict[str, Any]) -> str:
    """The modes of a v1.0 message's parts, comma-separated, in order, without repeats."""
    modes: list[str] = []
    parts = message.get("parts")
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        if "text" in part:
            mode = "text/plain"
        elif "data" in part:
            mode = "application/json"
        else:
            mode = _text(part.get("mediaType")) or "application/octet-stream"
        if mode not in modes:
            modes.append(mode)
    return ",".join(modes)


def result_task_id(result: Any) -> str | None:
    """The task id in a v1.0 `SendMessage` result (`{"task": {...}}`), if any."""
    if isinstance(result, dict):
        task = result.get("task")
        if isinstance(task, dict):
            return _text(task.get("id"))
    return None


class RouteDecisions:
    """One backend's recent router decisions (see the module docstring)."""

    def __init__(self, backend: str, path: Path | None) -> None:
        self.backend = backend
        self.path = path
        self._recent: deque[RouteRecord] = deque(maxlen=MAX_DECISIONS)
        self._unsaved: list[RouteRecord] = []
        self._writing: asyncio.Task[None] | None = None
        self._conn: sqlite3.Connection | None = None
        self._written = 0

    async def start(self) -> None:
        """Make this object the one this process's admin plane reads."""
        _LIVE[self.backend] = (self, asyncio.get_running_loop())

    async def close(self) -> None:
        live = _LIVE.get(self.backend)
        if live is not None and live[0] is self:
            del _LIVE[self.backend]
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        await self._write()
        if self._conn is not None:
            await asyncio.to_thread(self._conn.close)
            self._conn = None

    def record(
        self,
        decision: Decision,
        message: dict[str, Any],
        *,
        request_id: str | None,
        route: str | None,
        task_id: str | None = None,
    ) -> None:
        """Keep one decision (never raises, never waits)."""
        entry = RouteRecord(
            time=time.time(),
            request_id=request_id,
            route=route,
            agent=decision.agent,
            skill=decision.skill,
            reason=decision.reason,
            score=round(decision.score, 6),
            message_id=_text(message.get("messageId")),
            context_id=_text(message.get("contextId")),
            task_id=task_id or _text(message.get("taskId")),
            modes=part_modes(message),
        )
        self._recent.append(entry)
        if self.path is None:
            return
        self._unsaved.append(entry)
        if self._writing is None or self._writing.done():
            self._writing = asyncio.get_running_loop().create_task(self._write())

    def recent(self, limit: int) -> list[RouteRecord]:
        """The latest decisions of this process, newest first."""
        return list(reversed(self._recent))[:limit]

    async def _write(self) -> None:
        while self._unsaved and self.path is not None:
            rows, self._unsaved = self._unsaved, []
            try:
                await asyncio.to_thread(self._insert, rows)
            except (sqlite3.Error, OSError) as exc:  # a full disk must not break routing
                log.error("could not save A2A route decisions: %s", exc)

    def _insert(self, rows: list[RouteRecord]) -> None:
        assert self.path is not None
        if self._conn is None:
            self._conn = _open(self.path)
        db = self._conn
        marks = ", ".join("?" for _ in range(len(_COLUMNS) + 1))
        db.executemany(
            f"INSERT INTO a2a_route_decisions (backend, {', '.join(_COLUMNS)}) VALUES ({marks})",
            [(self.backend, *(getattr(r, c) for c in _COLUMNS)) for r in rows],
        )
        self._written += len(rows)
        if self._written >= PRUNE_EVERY:
            self._written = 0
            db.execute(
                "DELETE FROM a2a_route_decisions WHERE backend = ? AND id <= (SELECT id FROM"
                " a2a_route_decisions WHERE backend = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.backend, self.backend, MAX_DECISIONS),
            )


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in _SCHEMA:
        conn.execute(statement)
    return conn


def read_decisions(path: Path, backend: str, limit: int) -> list[RouteRecord]:
    """The latest decisions of `backend` in the SQLite file, newest first (blocking; empty
    when the file or the table does not exist yet)."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            rows = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM a2a_route_decisions WHERE backend = ?"
                " ORDER BY id DESC LIMIT ?",
                (backend, limit),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
    finally:
        conn.close()
    return [RouteRecord(*row) for row in rows]


def live_decisions(backend: str) -> RouteDecisions | None:
    """The running `RouteDecisions` of `backend` in this process, if on this event loop."""
    live = _LIVE.get(backend)
    if live is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return live[0] if live[1] is loop else None


_LIVE: dict[str, tuple[RouteDecisions, asyncio.AbstractEventLoop]] = {}


__all__ = [
    "MAX_DECISIONS",
    "RouteDecisions",
    "RouteRecord",
    "decision_path",
    "live_decisions",
    "part_modes",
    "read_decisions",
    "result_task_id",
]
