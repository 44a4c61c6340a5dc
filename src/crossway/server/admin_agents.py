"""The admin API for A2A agents: the catalog with each agent's card and health, and the router's
recent decisions.

    GET /a2a/agents       every A2A backend's agents: card (name, description, version, skills
                          with tags and examples, input/output modes, streaming and push
                          capabilities), URL through the gateway, health (query: backend)
    GET /a2a/decisions    the router agent's latest picks: which message went to which agent,
                          why and with what score, when (query: backend, limit 1-500, default 50)

The admin plane fetches the cards itself, with the gateway's own registry code
(`crossway.a2a.registry.AgentRegistry`: the same conversion of v0.3 cards, the same TLS and
headers per agent), at most every `CARD_MAX_AGE_SECONDS`; an agent whose card cannot be fetched is
`up: false` with the reason. Decisions come from this process's A2A backend when it shares the
admin plane's process, else from the task store's SQLite file (`crossway.a2a.decisions`); with
a task store in memory or Redis and several workers they are out of reach (a note says so).
When `admin.token` is set both routes need it as a Bearer token; without one they are served
only on a loopback listener and never to a browser.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crossway.a2a.decisions import (
    MAX_DECISIONS,
    RouteRecord,
    decision_path,
    live_decisions,
    read_decisions,
)
from crossway.a2a.registry import AgentRegistry
from crossway.config import Config
from crossway.config.a2a import A2aBackendConfig
from crossway.errors import BadRequest, GatewayError, NotFound
from crossway.server.admin_auth import _check_change_allowed
from crossway.server.admin_pins import _error, _json

Json = dict[str, Any]

CARD_MAX_AGE_SECONDS: Final = 15.0
"""How old the admin plane's copy of the agent cards may get before a catalog read re-fetches
them."""
DEFAULT_DECISIONS: Final = 50
READ_ACTION: Final = "read A2A agents"


class _Catalog:
    """The admin plane's registries, one per A2A backend, rebuilt when its config changes."""

    def __init__(self) -> None:
        self._registries: dict[str, tuple[A2aBackendConfig, AgentRegistry, float]] = {}
        self._lock = asyncio.Lock()

    async def registry(self, name: str, config: A2aBackendConfig) -> AgentRegistry:
        async with self._lock:
            known = self._registries.get(name)
            if known is not None and known[0] == config:
                _, registry, fetched = known
                if time.monotonic() - fetched < CARD_MAX_AGE_SECONDS:
                    return registry
            else:
                if known is not None:
                    await known[1].close()
                registry = AgentRegistry(config)
            await registry.refresh()
            self._registries[name] = (config, registry, time.monotonic())
            return registry

    async def aclose(self) -> None:
        """Close every registry (their HTTP sessions), at the admin plane's shutdown."""
        async with self._lock:
            registries, self._registries = self._registries, {}
        for _, registry, _ in registries.values():
            await registry.close()


def agent_routes(
    view: Any, probe: Any, closers: list[Callable[[], Awaitable[None]]] | None = None
) -> list[Route]:
    """`GET /a2a/agents` and `GET /a2a/decisions`, reading backends from `view.current()`;
    what must be closed at shutdown is added to `closers`."""
    catalog = _Catalog()
    if closers is not None:
        closers.append(catalog.aclose)

    async def config(request: Request) -> Config:
        cfg: Config = await asyncio.to_thread(view.current)
        _check_change_allowed(request, cfg.admin, READ_ACTION)
        return cfg

    async def list_agents(request: Request) -> Response:
        try:
            cfg = await config(request)
            out: list[Json] = []
            for name, backend in _backends(cfg, request.query_params.get("backend")).items():
                registry = await catalog.registry(name, backend)
                prefixes = _prefixes(cfg, name)
                for agent_name in backend.agents:
                    agent = registry.get(agent_name)
                    card = agent.card if agent is not None else {}
                    out.append(
                        {
                            "backend": name,
                            "name": agent_name,
                            "up": bool(agent is not None and agent.up),
                            "down_reason": registry.down_reason.get(agent_name),
                            "version": agent.version if agent is not None else None,
                            "gateway_paths": [f"{p}/{agent_name}/" for p in prefixes],
                            "upstream": agent.base_url if agent is not None else "",
                            "card": _card(card),
                        }
                    )
            return _json({"agents": out, "router_paths": _router_paths(cfg)})
        except GatewayError as exc:
            return _error(exc)

    async def list_decisions(request: Request) -> Response:
        try:
            cfg = await config(request)
            limit = _limit(request.query_params.get("limit"))
            found: list[tuple[str, RouteRecord]] = []
            notes: list[str] = []
            for name, backend in _backends(cfg, request.query_params.get("backend")).items():
                live = live_decisions(name)
                path = decision_path(backend)
                if live is not None:
                    records = live.recent(limit)
                elif path is not None:
                    records = await asyncio.to_thread(read_decisions, path, name, limit)
                else:
                    notes.append(
                        f"backend {name!r} keeps its router decisions inside each worker "
                        "process, out of the admin plane's reach; set `task_store: {type: "
                        "sqlite}` (or run one worker) to list them here"
                    )
                    continue
                found += [(name, r) for r in records]
            found.sort(key=lambda item: item[1].time, reverse=True)
            body = [{"backend": name, **r.to_json()} for name, r in found[:limit]]
            return _json({"decisions": body, "notes": notes})
        except GatewayError as exc:
            return _error(exc)

    return [
        Route("/a2a/agents", list_agents, methods=["GET"]),
        Route("/a2a/decisions", list_decisions, methods=["GET"]),
    ]


def _backends(cfg: Config, wanted: str | None) -> dict[str, A2aBackendConfig]:
    found = {n: b for n, b in cfg.backends.items() if isinstance(b, A2aBackendConfig)}
    if not wanted:
        return found
    if wanted not in found:
        raise NotFound(f"no A2A backend {wanted!r}")
    return {wanted: found[wanted]}


def _prefixes(cfg: Config, backend: str) -> list[str]:
    out: list[str] = []
    for route in cfg.routes:
        path = route.match.path
        if route.backend == backend and path is not None and path.prefix is not None:
            out.append(path.prefix.rstrip("/"))
    return out


def _router_paths(cfg: Config) -> list[Json]:
    out: list[Json] = []
    for name, backend in cfg.backends.items():
        if isinstance(backend, A2aBackendConfig) and backend.router.enabled:
            out += [{"backend": name, "path": p + "/"} for p in _prefixes(cfg, name)]
    return out


def _limit(raw: str | None) -> int:
    if not raw:
        return DEFAULT_DECISIONS
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_DECISIONS:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_DECISIONS}", param="limit")
    return limit


def _card(card: dict[str, Any]) -> Json:
    """The card fields the catalog shows (v1.0 names)."""
    found = card.get("capabilities")
    caps: dict[str, Any] = found if isinstance(found, dict) else {}
    skills = []
    for skill in card.get("skills") or []:
        if isinstance(skill, dict):
            skills.append(
                {
                    key: skill.get(key)
                    for key in (
                        "id",
                        "name",
                        "description",
                        "tags",
                        "examples",
                        "inputModes",
                        "outputModes",
                    )
                }
            )
    return {
        "name": card.get("name"),
        "description": card.get("description"),
        "version": card.get("version"),
        "defaultInputModes": card.get("defaultInputModes") or [],
        "defaultOutputModes": card.get("defaultOutputModes") or [],
        "streaming": bool(caps.get("streaming")),
        "pushNotifications": bool(caps.get("pushNotifications")),
        "skills": skills,
    }


def agent_paths() -> Json:
    """The OpenAPI path items of `/a2a/agents` and `/a2a/decisions`."""
    from crossway.server.admin_openapi import _errors

    security = (
        " Needs `admin.token` as a Bearer token when one is set; without one it is served only "
        "on a loopback admin listener and never to a browser."
    )
    strings = {"type": "array", "items": {"type": "string"}}
    nullable = {"type": ["string", "null"]}
    skill = {
        "type": "object",
        "properties": {
            "id": {"type": ["string", "null"]},
            "name": nullable,
            "description": nullable,
            "tags": {"type": ["array", "null"], "items": {"type": "string"}},
            "examples": {"type": ["array", "null"], "items": {"type": "string"}},
            "inputModes": {"type": ["array", "null"], "items": {"type": "string"}},
            "outputModes": {"type": ["array", "null"], "items": {"type": "string"}},
        },
    }
    agent = {
        "type": "object",
        "properties": {
            "backend": {"type": "string"},
            "name": {"type": "string"},
            "up": {"type": "boolean"},
            "down_reason": nullable,
            "version": {"type": ["string", "null"], "description": "Protocol version."},
            "gateway_paths": strings,
            "upstream": {"type": "string"},
            "card": {
                "type": "object",
                "properties": {
                    "name": nullable,
                    "description": nullable,
                    "version": nullable,
                    "defaultInputModes": strings,
                    "defaultOutputModes": strings,
                    "streaming": {"type": "boolean"},
                    "pushNotifications": {"type": "boolean"},
                    "skills": {"type": "array", "items": skill},
                },
            },
        },
    }
    decision = {
        "type": "object",
        "properties": {
            "backend": {"type": "string"},
            "time": {"type": "number"},
            "request_id": nullable,
            "route": nullable,
            "agent": {"type": "string"},
            "skill": nullable,
            "reason": {"type": "string", "enum": ["skill", "match", "mode", "default"]},
            "score": {"type": "number"},
            "message_id": nullable,
            "context_id": nullable,
            "task_id": nullable,
            "modes": {"type": "string"},
        },
    }

    def query(name: str, description: str, schema: Json | None = None) -> Json:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": schema or {"type": "string"},
        }

    def ok(schema: Json) -> Json:
        return {"description": "OK.", "content": {"application/json": {"schema": schema}}}

    return {
        "/a2a/agents": {
            "get": {
                "operationId": "listA2aAgents",
                "tags": ["a2a"],
                "summary": "The agent catalog: cards, skills, modes, capabilities, health.",
                "description": "The agent catalog: cards, skills, modes, capabilities, health."
                + security,
                "security": [{}, {"adminToken": []}],
                "parameters": [query("backend", "Only this backend's agents.")],
                "responses": {
                    "200": ok(
                        {
                            "type": "object",
                            "required": ["agents", "router_paths"],
                            "properties": {
                                "agents": {"type": "array", "items": agent},
                                "router_paths": {"type": "array", "items": {"type": "object"}},
                            },
                        }
                    ),
                    **_errors(401, 403, 404),
                },
            }
        },
        "/a2a/decisions": {
            "get": {
                "operationId": "listA2aDecisions",
                "tags": ["a2a"],
                "summary": "The router agent's latest decisions, newest first.",
                "description": "The router agent's latest decisions, newest first." + security,
                "security": [{}, {"adminToken": []}],
                "parameters": [
                    query("backend", "Only this backend's decisions."),
                    query(
                        "limit",
                        f"At most this many (1-{MAX_DECISIONS}, default {DEFAULT_DECISIONS}).",
                        {"type": "integer", "minimum": 1, "maximum": MAX_DECISIONS},
                    ),
                ],
                "responses": {
                    "200": ok(
                        {
                            "type": "object",
                            "required": ["decisions", "notes"],
                            "properties": {
                                "decisions": {"type": "array", "items": decision},
                                "notes": strings,
                            },
                        }
                    ),
                    **_errors(400, 401, 403, 404),
                },
            }
        },
    }
