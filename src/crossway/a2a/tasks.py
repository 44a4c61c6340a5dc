"""`TaskTracker`: which agent owns each A2A task and context, and the states tasks go through.

The backend shows the tracker every v1.0 answer it forwards (`observe`): a `Task`, a
`StreamResponse` event (`task`, `statusUpdate`, `artifactUpdate`, `message`), a `SendMessage`
result or a `ListTasks` result. The first sight of a task id records its owner, waiting for the
store, so a follow-up (`GetTask`, `CancelTask`, `SubscribeToTask`, a message continuing the
context) reaches the same agent through any worker (SQLite) or replica (Redis), also when it
comes through the router. Each state change is recorded with its time, counted in
`crossway_a2a_tasks_total{agent,state}`, and a terminal state observes the task's duration in
`crossway_a2a_task_duration_seconds`.

Ownership is first-writer-wins (see `crossway.store.tasks`): an agent answering with a task id
that another agent owns neither takes it over nor records states for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from crossway.config.a2a import DEFAULT_TASK_TTL_SECONDS, A2aBackendConfig
from crossway.errors import ServiceUnavailable
from crossway.store.tasks import (
    DEFAULT_LIST_LIMIT,
    TERMINAL_STATES,
    Records,
    TaskRecord,
    TaskStore,
    build_task_store,
)
from crossway.telemetry.metrics import observe_a2a_task

log = logging.getLogger("crossway.a2a.tasks")

TRACKER_CACHE_SIZE: Final = 10_000
"""Tasks and contexts whose owner (and last state) a tracker remembers without the store."""

STATE_NAMES: Final = {
    "TASK_STATE_SUBMITTED": "submitted",
    "TASK_STATE_WORKING": "working",
    "TASK_STATE_INPUT_REQUIRED": "input-required",
    "TASK_STATE_AUTH_REQUIRED": "auth-required",
    "TASK_STATE_COMPLETED": "completed",
    "TASK_STATE_FAILED": "failed",
    "TASK_STATE_CANCELED": "canceled",
    "TASK_STATE_CANCELLED": "canceled",
    "TASK_STATE_REJECTED": "rejected",
}
"""v1.0 task states -> the short names stored and shown (also the v0.3 names)."""
STATES: Final = frozenset(STATE_NAMES.values())
"""Every short state name."""


def state_name(value: Any) -> str | None:
    """The short name of a v1.0 (`TASK_STATE_WORKING`) or v0.3 (`working`) task state; None for
    `TASK_STATE_UNSPECIFIED`, `unknown` and anything else."""
    if not isinstance(value, str):
        return None
    if value in STATES:
        return value
    return STATE_NAMES.get(value.upper().replace("-", "_"))


@dataclass(frozen=True, slots=True)
class TaskFact:
    """What one object says about one task: its id, context and state (each may be absent)."""

    task_id: str | None
    context_id: str | None
    state: str | None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _status_state(obj: dict[str, Any]) -> str | None:
    status = obj.get("status")
    return state_name(status.get("state")) if isinstance(status, dict) else None


def _task_fact(task: dict[str, Any]) -> TaskFact:
    return TaskFact(_str(task.get("id")), _str(task.get("contextId")), _status_state(task))


def task_facts(obj: Any) -> Iterator[TaskFact]:
    """The task facts in a v1.0 JSON object: a `Task`, a `StreamResponse` / `SendMessage`
    result (`task`, `message`, `statusUpdate`, `artifactUpdate`), or a `ListTasks` result."""
    if not isinstance(obj, dict):
        return
    task = obj.get("task")
    if isinstance(task, dict):
        yield _task_fact(task)
    update = obj.get("statusUpdate")
    if isinstance(update, dict):
        yield TaskFact(
            _str(update.get("taskId")), _str(update.get("contextId")), _status_state(update)
        )
    artifact = obj.get("artifactUpdate")
    if isinstance(artifact, dict):
        yield TaskFact(_str(artifact.get("taskId")), _str(artifact.get("contextId")), None)
    message = obj.get("message")
    if isinstance(message, dict):
        yield TaskFact(_str(message.get("taskId")), _str(message.get("contextId")), None)
    tasks = obj.get("tasks")
    if isinstance(tasks, list):
        for item in tasks:
            if isinstance(item, dict):
                yield _task_fact(item)
    if "id" in obj and "status" in obj:
        yield _task_fact(obj)


@dataclass(slots=True)
class _Known:
    agent: str
    state: str | None


class TaskTracker:
    """Records and answers task and context ownership and task states over a `TaskStore`.

    Call `start()` when the backend starts (it makes the tracker reachable by the admin plane
    of this process) and `close()` when it stops.
    """

    def __init__(
        self,
        store: TaskStore,
        *,
        backend: str = "",
        ttl_seconds: float = DEFAULT_TASK_TTL_SECONDS,
        cache_size: int = TRACKER_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.backend = backend
        self.ttl_seconds = ttl_seconds
        self.cache_size = cache_size
        self._clock = clock
        self._tasks: OrderedDict[str, _Known] = OrderedDict()
        self._contexts: OrderedDict[str, str] = OrderedDict()
        self.callers: CallerBindings | None = None
        """Who created each task and context (set by `from_config`)."""

    @classmethod
    def from_config(cls, backend: str, config: A2aBackendConfig) -> TaskTracker:
        """The tracker of an A2A backend, over the store its `task_store` names."""
        tracker = cls(
            build_task_store(config.task_store, backend),
            backend=backend,
            ttl_seconds=config.task_ttl_seconds,
        )
        tracker.callers = CallerBindings(
            build_task_store(config.task_store, backend + CALLERS_SUFFIX),
            ttl_seconds=config.task_ttl_seconds,
        )
        return tracker

    async def start(self) -> None:
        """Make this tracker the one this process's admin plane lists tasks from."""
        if self.backend:
            _LIVE[self.backend] = (self, asyncio.get_running_loop())

    async def close(self) -> None:
        """Write what is pending and close the store."""
        live = _LIVE.get(self.backend)
        if live is not None and live[0] is self:
            del _LIVE[self.backend]
        await self.store.close()
        if self.callers is not None:
            await self.callers.store.close()

    def _keep(self, cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    async def observe(self, agent: str, obj: Any, *, started: float | None = None) -> None:
        """Record what `obj` (a v1.0 answer of `agent`) says about tasks: their owner, context
        and state. `started` (epoch seconds) is when the request that created the task began:
        a task first seen already completed still gets its real duration. Raises
        `ServiceUnavailable` when ownership cannot be stored (the caller should not hand out a
        task id nobody can follow up); failing to store a state only logs."""
        for fact in task_facts(obj):
            await self._observe(agent, fact, started)

    async def _observe(self, agent: str, fact: TaskFact, started: float | None) -> None:
        task_id, context_id = fact.task_id, fact.context_id
        known = None if task_id is None else self._tasks.get(task_id)
        if known is not None and known.agent != agent:
            self._foreign(agent, task_id, known.agent)
            return
        new_context = context_id is not None and context_id not in self._contexts
        if (task_id is not None and known is None) or new_context:
            owner = await self.store.put_owner(
                task_id if known is None else None,
                context_id,
                agent,
                self.ttl_seconds,
                at=started,
            )
            if task_id is not None and known is None:
                known = _Known(owner, None)
                self._keep(self._tasks, task_id, known)
            if context_id is not None and owner == agent:
                self._keep(self._contexts, context_id, agent)
        if known is None or task_id is None:
            return
        if known.agent != agent:
            self._foreign(agent, task_id, known.agent)
            return
        state = fact.state
        if state is None or state == known.state:
            return
        known.state = state
        now = self._clock()
        try:
            created = await self.store.record(task_id, agent, state, now)
        except ServiceUnavailable as exc:
            log.warning("a2a backend %s: task %r state not stored: %s", self.backend, task_id, exc)
            return
        if created is None:  # already recorded (by another replica), or not this agent's
            return
        duration = now - created if state in TERMINAL_STATES else None
        observe_a2a_task(agent, state, duration)

    def _foreign(self, agent: str, task_id: str | None, owner: str) -> None:
        log.warning(
            "a2a backend %s: agent %r answered with task %r owned by %r; ignored",
            self.backend,
            agent,
            task_id,
            owner,
        )

    async def owner_of_task(self, task_id: str) -> str | None:
        """The agent owning `task_id` (None: unknown or expired)."""
        known = self._tasks.get(task_id)
        if known is not None:
            return known.agent
        owner = await self.store.owner(task_id)
        if owner is not None:
            self._keep(self._tasks, task_id, _Known(owner, None))
        return owner

    async def owner_of_context(self, context_id: str) -> str | None:
        """The agent owning `context_id` (None: unknown or expired)."""
        owner = self._contexts.get(context_id)
        if owner is not None:
            return owner
        owner = await self.store.context_owner(context_id)
        if owner is not None:
            self._keep(self._contexts, context_id, owner)
        return owner

    async def get(self, task_id: str) -> TaskRecord | None:
        """The task's record with its history."""
        return await self.store.get(task_id)

    async def list(
        self,
        *,
        agent: str | None = None,
        state: str | None = None,
        older_than: float | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> Records:
        """Tasks, most recently updated first (see `TaskStore.list`)."""
        return await self.store.list(agent=agent, state=state, older_than=older_than, limit=limit)


CALLERS_SUFFIX: Final = "~callers"
"""The store namespace (backend name + this) of the caller bindings."""
ANONYMOUS: Final = "anonymous"


def caller_of(identity: dict[str, Any] | None) -> str:
    """A fingerprint of the authenticated caller (method, issuer, subject), or `anonymous`."""
    if not identity:
        return ANONYMOUS
    key = orjson.dumps([identity.get("method"), identity.get("iss"), identity.get("sub")])
    return "caller:" + hashlib.sha256(key).hexdigest()[:32]


class CallerBindings:
    """Which caller created each task and context through Crossway, so that another caller
    allowed the same agent cannot get, cancel, subscribe to, list or continue it (behind a
    gateway every caller looks like one user to the agent, so the agent cannot tell them
    apart). Kept in the task store's own kind, under the backend's name + `~callers`: first
    writer wins, same TTL as ownership."""

    def __init__(self, store: TaskStore, *, ttl_seconds: float) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds

    async def bind(self, caller: str, obj: Any) -> None:
        """Record `caller` as the creator of the tasks and contexts `obj` (an answer to its
        message) names, where nobody has been recorded yet."""
        for fact in task_facts(obj):
            if fact.task_id is not None or fact.context_id is not None:
                await self.store.put_owner(fact.task_id, fact.context_id, caller, self.ttl_seconds)

    async def allows(
        self, caller: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> bool:
        """Whether `caller` may follow up on this task / context: another caller created it
        through Crossway -> no. One Crossway never saw created (made at the agent directly, or
        whose record expired) is left to the agent to answer (usually: task not found)."""
        if task_id is not None:
            owner = await self.store.owner(task_id)
            return owner is None or owner == caller
        if context_id is not None:
            owner = await self.store.context_owner(context_id)
            return owner is None or owner == caller  # a new context is the caller's to start
        return True


_LIVE: dict[str, tuple[TaskTracker, asyncio.AbstractEventLoop]] = {}
"""The started tracker of each A2A backend in this process, for the admin plane."""


def live_tracker(backend: str) -> TaskTracker | None:
    """The started tracker of `backend` in this process, if it runs on this event loop (one
    process serving both the admin plane and the gateway)."""
    live = _LIVE.get(backend)
    if live is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return live[0] if live[1] is loop else None


__all__ = [
    "STATES",
    "STATE_NAMES",
    "TaskFact",
    "TaskTracker",
    "live_tracker",
    "state_name",
    "task_facts",
]
