"""The admin API for MCP backends: their servers, transports, reachability and tool counts.

    GET /mcp/servers    every MCP backend with its routes, pinning mode and servers (query
                        parameter `backend`: only that one)

A server's `reachable` is the admin plane's cached probe (a TCP connect, or the stdio command
found on PATH; see `crossway.server.admin_probe`), never a request to the upstream. Tool counts
come from the tool pins (`GET /pins`): the tools Crossway has seen each server list, how many are
blocked and how many changed since they were pinned; with pinning off (or pins in worker memory)
they are unknown (null, with a note). When `admin.token` is set the route needs it as a Bearer
token; without one it is served only on a loopback listener and never to a browser.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crossway.config import Config
from crossway.config.mcp import McpBackendConfig
from crossway.errors import GatewayError, NotFound
from crossway.mcp.pin_store import PinEntry
from crossway.server.admin_auth import _check_change_allowed
from crossway.server.admin_pins import _entries, _error, _json, _memory_note

Json = dict[str, Any]

READ_ACTION = "read MCP servers"


def mcp_routes(view: Any, probe: Any) -> list[Route]:
    """`GET /mcp/servers`, reading backends from `view.current()` and reachability from
    `probe.report()`."""

    async def list_servers(request: Request) -> Response:
        try:
            cfg: Config = await asyncio.to_thread(view.current)
            _check_change_allowed(request, cfg.admin, READ_ACTION)
            wanted = request.query_params.get("backend") or None
            backends = {
                name: backend
                for name, backend in cfg.backends.items()
                if isinstance(backend, McpBackendConfig)
            }
            if wanted is not None:
                if wanted not in backends:
                    raise NotFound(f"no MCP backend {wanted!r}")
                backends = {wanted: backends[wanted]}
            report = probe.report() if probe is not None else {}
            out: list[Json] = []
            notes: list[str] = []
            for name, backend in backends.items():
                pins: list[PinEntry] | None = None
                pinning = backend.pinning.mode != "off" or backend.pinning.scan_descriptions
                if pinning:
                    pins = await _entries(name, backend)
                    if pins is None:
                        notes.append(_memory_note(name))
                else:
                    notes.append(
                        f"backend {name!r} has tool pinning off: its tools are not recorded "
                        "(set `pinning.mode` to count them here)"
                    )
                out.append(_backend_json(cfg, name, backend, report.get(name, {}), pins))
            return _json({"backends": out, "notes": notes})
        except GatewayError as exc:
            return _error(exc)

    return [Route("/mcp/servers", list_servers, methods=["GET"])]


def _backend_json(
    cfg: Config,
    name: str,
    backend: McpBackendConfig,
    probed: Json,
    pins: list[PinEntry] | None,
) -> Json:
    upstreams = probed.get("upstreams", {})
    servers: list[Json] = []
    for server_name, server in backend.servers.items():
        seen = None if pins is None else [p for p in pins if p.server == server_name]
        result = upstreams.get(server_name, {})
        servers.append(
            {
                "name": server_name,
                "transport": server.type,
                "address": result.get("address", ""),
                "reachable": result.get("reachable"),
                "error": result.get("error"),
                "checked_at": result.get("checked_at"),
                "tools": None if seen is None else len(seen),
                "blocked": None if seen is None else sum(p.status == "blocked" for p in seen),
                "changed": None if seen is None else sum(p.changed for p in seen),
            }
        )
    routes = [
        route.match.path.prefix or route.match.path.exact
        for route in cfg.routes
        if route.backend == name and route.match.path is not None
    ]
    return {
        "name": name,
        "routes": [r for r in routes if r],
        "pinning": {"mode": backend.pinning.mode, "store": backend.pinning.store},
        "reachable": probed.get("reachable"),
        "servers": servers,
    }


def mcp_paths() -> Json:
    """The OpenAPI path item of `GET /mcp/servers`."""
    nullable_int = {"type": ["integer", "null"]}
    server = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "transport": {
                "type": "string",
                "enum": ["stdio", "sse", "streamable_http", "openapi"],
            },
            "address": {"type": "string", "description": "host:port, or the stdio command."},
            "reachable": {"type": ["boolean", "null"], "description": "null: not probed yet."},
            "error": {"type": ["string", "null"]},
            "checked_at": {"type": ["number", "null"]},
            "tools": {**nullable_int, "description": "Tools seen (null: pinning off)."},
            "blocked": nullable_int,
            "changed": nullable_int,
        },
    }
    backend = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "routes": {"type": "array", "items": {"type": "string"}},
            "pinning": {
                "type": "object",
                "properties": {"mode": {"type": "string"}, "store": {"type": "string"}},
            },
            "reachable": {"type": ["boolean", "null"]},
            "servers": {"type": "array", "items": server},
        },
    }
    summary = "Every MCP backend with its servers, transports, reachability and tool counts."
    return {
        "/mcp/servers": {
            "get": {
                "operationId": "listMcpServers",
                "tags": ["pins"],
                "summary": summary,
                "description": summary
                + " Needs `admin.token` as a Bearer token when one is set; without one it is "
                "served only on a loopback admin listener and never to a browser.",
                "security": [{}, {"adminToken": []}],
                "parameters": [
                    {
                        "name": "backend",
                        "in": "query",
                        "required": False,
                        "description": "Only this backend.",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "OK.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["backends", "notes"],
                                    "properties": {
                                        "backends": {"type": "array", "items": backend},
                                        "notes": {"type": "array", "items": {"type": "string"}},
                                    },
                                }
                            }
                        },
                    },
                    **_error_responses(401, 403, 404),
                },
            }
        }
    }


def _error_responses(*statuses: int) -> Json:
    from crossway.server.admin_openapi import _errors

    return _errors(*statuses)
