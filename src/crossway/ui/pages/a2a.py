"""The console's A2A page: the agent catalog, the router's recent decisions, tasks by state.

    GET /ui/a2a                 catalog (cards, skills, modes, capabilities, health), router
                                decisions, tasks (query: state)
    GET /ui/a2a/tasks/{id}      one task with its history (query: backend)

Everything comes from the admin API: `GET /a2a/agents`, `GET /a2a/decisions`, `GET /a2a/tasks`
and `GET /a2a/tasks/{id}`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crossway.ui.gateway import data_plane_url
from crossway.ui.render import render

if TYPE_CHECKING:
    from crossway.ui.console import Console

STATES: Final = (
    "submitted",
    "working",
    "input-required",
    "auth-required",
    "completed",
    "failed",
    "canceled",
    "rejected",
)
"""Task states in the order the filter lists them."""
STATE_BADGES: Final = {
    "submitted": "warn",
    "working": "warn",
    "input-required": "warn",
    "auth-required": "warn",
    "completed": "ok",
    "failed": "bad",
    "canceled": "bad",
    "rejected": "bad",
}
COUNT_LIMIT: Final = 1000
"""Tasks read to count them by state (the most recently updated)."""
LIST_LIMIT: Final = 100
DECISIONS_SHOWN: Final = 20
REASONS: Final = {
    "skill": "the message named this skill",
    "match": "best match of the message's tags or text",
    "mode": "the only agent taking the message's modes",
    "default": "the only candidate, or the first in config order",
}
"""What each router decision reason means (shown beside it)."""


def task_href(task_id: str, backend: str | None = None) -> str:
    href = "/ui/a2a/tasks/" + quote(task_id, safe="")
    return href + ("?backend=" + quote(backend, safe="") if backend else "")


def routes(console: Console) -> list[BaseRoute]:
    from crossway.ui.console import config_of

    async def page(request: Request) -> Response:
        cfg = config_of(request)
        state = request.query_params.get("state") or None
        if state not in STATES:
            state = None
        agents, decisions, counted, listed = await asyncio.gather(
            console.api.get(cfg, "/a2a/agents"),
            console.api.get(cfg, "/a2a/decisions", limit=DECISIONS_SHOWN),
            console.api.get(cfg, "/a2a/tasks", limit=COUNT_LIMIT),
            console.api.get(cfg, "/a2a/tasks", limit=LIST_LIMIT, state=state),
        )
        errors = [a.error for a in (agents, decisions, counted) if not a.ok]
        if state is not None and not listed.ok and listed.error not in errors:
            errors.append(listed.error)
        notes: list[str] = []
        for answer in (decisions, counted):
            if answer.ok:
                notes += [n for n in answer.body.get("notes", []) if n not in notes]
        counts: Counter[str] = Counter()
        if counted.ok:
            counts.update(t.get("state") or "unknown" for t in counted.body["tasks"])
        tasks = listed.body["tasks"] if listed.ok else []
        for task in tasks:
            task["href"] = task_href(task["task_id"], task.get("backend"))
        rows = decisions.body["decisions"] if decisions.ok else []
        for row in rows:
            row["meaning"] = REASONS.get(row["reason"], "")
            row["href"] = task_href(row["task_id"], row["backend"]) if row["task_id"] else None
        base = data_plane_url(cfg)
        return render(
            request,
            "a2a.html",
            "a2a",
            errors=errors,
            notes=notes,
            agents=agents.body["agents"] if agents.ok else [],
            router_paths=agents.body["router_paths"] if agents.ok else [],
            base=base,
            decisions=rows,
            states=STATES,
            state=state,
            counts=counts,
            counted=sum(counts.values()),
            count_limit=COUNT_LIMIT,
            tasks=tasks,
            badges=STATE_BADGES,
        )

    async def task_detail(request: Request) -> Response:
        cfg = config_of(request)
        task_id = str(request.path_params["task_id"])
        backend = request.query_params.get("backend") or None
        answer, decisions = await asyncio.gather(
            console.api.get(cfg, "/a2a/tasks/" + quote(task_id, safe=""), backend=backend),
            console.api.get(cfg, "/a2a/decisions", backend=backend, limit=500),
        )
        if not answer.ok:
            return render(
                request,
                "a2a_task.html",
                "a2a",
                status=answer.status,
                error=answer.error,
                task=None,
                task_id=task_id,
            )
        task = answer.body
        history = []
        previous: float | None = None
        for step in task.get("history", []):
            at = float(step["at"])
            history.append({**step, "after": None if previous is None else max(0.0, at - previous)})
            previous = at
        picks = [
            {**d, "meaning": REASONS.get(d["reason"], "")}
            for d in (decisions.body["decisions"] if decisions.ok else [])
            if d.get("task_id") == task_id
        ]
        return render(
            request,
            "a2a_task.html",
            "a2a",
            error=None,
            task=task,
            task_id=task_id,
            history=history,
            picks=picks,
            badges=STATE_BADGES,
        )

    return [
        Route("/ui/a2a", page, methods=["GET"]),
        Route("/ui/a2a/tasks/{task_id}", task_detail, methods=["GET"]),
    ]
