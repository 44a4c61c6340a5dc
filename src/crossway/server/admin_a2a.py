"""The admin API for A2A tasks: which agent owns which task, and the states tasks went through.

    GET /a2a/tasks             tasks, most recently updated first; query parameters (all
                               optional): backend, agent, state (submitted, working,
                               input-required, auth-required, completed, failed, canceled,
                               rejected, or the v1.0 TASK_STATE_* name), older_than_seconds
                               (state last changed at least that long ago), limit (1-1000,
                               default 100)
    GET /a2a/tasks/{task_id}   one task with its history (query parameter: backend)

When `admin.token` is set, both need it as a Bearer token.

Where the tasks live decides what the admin plane can reach: with one worker (the default) the
admin plane shares the gateway's process and reads each backend's live tracker; otherwise it
runs in the supervisor and reads the SQLite file (`task_store: sqlite`) or the Redis server
(`task_store: redis`) itself. Tasks kept in memory inside worker processes are out of its reach
(422 with a note saying so).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crossway.a2a.tasks import STATES, live_tracker, state_name
from crossway.config import Config
from crossway.config.a2a import A2aBackendConfig, MemoryTaskStoreConfig, SqliteTaskStoreConfig
from crossway.errors import BadRequest, GatewayError, NotFound, UnprocessableEntity
from crossway.server.admin_auth import _check_token
from crossway.server.admin_pins import _error, _json
from crossway.store.tasks import (
    DEFAULT_LIST_LIMIT,
    Records,
    TaskRecord,
    TaskStore,
    build_task_store,
    default_task_path,
)

MAX_LIST_LIMIT: Final = 1000
"""Most tasks one `GET /a2a/tasks` answers."""

ConfigSource = Any
"""Anything with `current() -> Config` (the admin plane's `ConfigView`)."""


def a2a_task_routes(view: ConfigSource) -> list[Route]:
    """The admin plane's `/a2a/tasks` routes, reading backends from `view.current()`."""

    async def config(request: Request) -> Config:
        cfg: Config = await asyncio.to_thread(view.current)
        if cfg.admin.protected:
            _check_token(request, cfg.admin)
        return cfg

    async def list_tasks(request: Request) -> Response:
        try:
            cfg = await config(request)
            query = _Query(request)
            backends = _backends(cfg, query.backend)
            tasks: list[tuple[str, TaskRecord]] = []
            notes: list[str] = []
            for name, backend in backends.items():
                async with _opened(name, backend) as store:
                    if store is None:
                        notes.append(_memory_note(name))
                        continue
                    found = await store.list(
                        agent=query.agent,
                        state=query.state,
                        older_than=query.older_than,
                        limit=query.limit,
                    )
                    tasks += [(name, rec) for rec in found]
            if backends and len(notes) == len(backends):
                raise UnprocessableEntity(" ".join(notes))
            tasks.sort(key=lambda item: item[1].updated, reverse=True)
            body = [{"backend": name, **rec.to_json()} for name, rec in tasks[: query.limit]]
            return _json({"tasks": body, "notes": notes})
        except GatewayError as exc:
            return _error(exc)

    async def get_task(request: Request) -> Response:
        try:
            cfg = await config(request)
            task_id = str(request.path_params["task_id"])
            notes: list[str] = []
            for name, backend in _backends(cfg, request.query_params.get("backend")).items():
                async with _opened(name, backend) as store:
                    if store is None:
                        notes.append(_memory_note(name))
                        continue
                    found = await store.get(task_id)
                if found is not None:
                    return _json({"backend": name, **found.to_json()})
            if notes:
                raise UnprocessableEntity(f"no task {task_id!r} found; " + " ".join(notes))
            raise NotFound(f"no task {task_id!r} is recorded")
        except GatewayError as exc:
            return _error(exc)

    return [
        Route("/a2a/tasks", list_tasks, methods=["GET"]),
        Route("/a2a/tasks/{task_id}", get_task, methods=["GET"]),
    ]


class _Query:
    """The list route's query parameters, checked (400 naming the parameter)."""

    def __init__(self, request: Request) -> None:
        params = request.query_params
        self.backend = params.get("backend") or None
        self.agent = params.get("agent") or None
        self.state: str | None = None
        raw_state = params.get("state")
        if raw_state:
            self.state = state_name(raw_state)
            if self.state is None:
                raise BadRequest(f"state must be one of {', '.join(sorted(STATES))}", param="state")
        self.older_than: float | None = None
        raw_age = params.get("older_than_seconds")
        if raw_age:
            try:
                age = float(raw_age)
            except ValueError:
                age = math.nan
            if not math.isfinite(age) or age < 0:
                raise BadRequest(
                    "older_than_seconds must be a number of seconds >= 0",
                    param="older_than_seconds",
                )
            self.older_than = time.time() - age
        self.limit = DEFAULT_LIST_LIMIT
        raw_limit = params.get("limit")
        if raw_limit:
            try:
                self.limit = int(raw_limit)
            except ValueError:
                self.limit = 0
            if not 1 <= self.limit <= MAX_LIST_LIMIT:
                raise BadRequest(
                    f"limit must be an integer from 1 to {MAX_LIST_LIMIT}", param="limit"
                )


def _backends(cfg: Config, wanted: str | None) -> dict[str, A2aBackendConfig]:
    found = {
        name: backend
        for name, backend in cfg.backends.items()
        if isinstance(backend, A2aBackendConfig)
    }
    if wanted is None:
        return found
    if wanted not in found:
        raise NotFound(f"no A2A backend {wanted!r}")
    return {wanted: found[wanted]}


class _Readable(Protocol):
    """What the routes read from a store."""

    async def list(
        self,
        *,
        agent: str | None = None,
        state: str | None = None,
        older_than: float | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> Records: ...

    async def get(self, task_id: str) -> TaskRecord | None: ...


class _Empty:
    """A store that has never been written: a SQLite file that does not exist yet (the admin
    plane does not create it)."""

    async def list(self, **_: Any) -> Records:
        return []

    async def get(self, task_id: str) -> TaskRecord | None:
        return None


@asynccontextmanager
async def _opened(name: str, backend: A2aBackendConfig) -> AsyncIterator[_Readable | None]:
    """The backend's live tracker's store in this process, else its SQLite file or Redis
    server opened for this request; None when its tasks are in another process's memory."""
    live = live_tracker(name)
    if live is not None:
        yield live.store
        return
    cfg = backend.task_store
    if isinstance(cfg, MemoryTaskStoreConfig):
        yield None
        return
    if isinstance(cfg, SqliteTaskStoreConfig):
        path = Path(cfg.path) if cfg.path else default_task_path()
        if not path.exists():
            yield _Empty()
            return
    store: TaskStore = build_task_store(cfg, name)
    try:
        yield store
    finally:
        await store.close()


def _memory_note(name: str) -> str:
    return (
        f"backend {name!r} keeps its tasks in memory inside each worker process, out of the "
        "admin plane's reach; set `task_store: {type: sqlite}` or `{type: redis}` (or run one "
        "worker) to list them here"
    )


__all__ = ["a2a_task_routes"]
