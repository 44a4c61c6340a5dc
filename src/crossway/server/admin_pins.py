"""The admin API for MCP tool pins: list them, approve a changed definition, forget a pin.

    GET    /pins                                     every pinned or blocked tool
    GET    /pins/{backend}/{server}/{tool}           one tool's pin with the pinned and the
                                                     current definitions (to see what changed)
    POST   /pins/{backend}/{server}/{tool}/approve   the definition listed now becomes the pin
    DELETE /pins/{backend}/{server}/{tool}           forget the pin (the next listing pins anew)

`server` and `tool` are the upstream's own names (not the federated `server_tool`). The changing
routes need `admin.token` as a Bearer token; without a token they are served only while the admin
plane listens on loopback, and never to a browser (a request with an `Origin` header), so a web
page cannot approve a poisoned tool through the operator's browser.

Where the pins live decides what the admin plane can reach: with one worker (the default) the
admin plane shares the gateway's process and acts on the live pins of either store; with several
workers it runs in the supervisor and reaches only the SQLite file (`pinning.store: sqlite`),
whose changes the workers notice the next time the blocked tool is called or listed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crossway.config import Config
from crossway.config.mcp import McpBackendConfig
from crossway.errors import BadRequest, GatewayError, NotFound, UnprocessableEntity
from crossway.mcp.pin_store import PinEntry, PinFile, PinMismatch, PinNotFound, pin_path
from crossway.mcp.pinning import live_pinning
from crossway.server.admin_auth import _check_change_allowed, _check_token
from crossway.server.backend import render_json_error

MAX_APPROVE_BODY: Final = 4096
"""Largest body `POST .../approve` reads (`{"sha256": "..."}`)."""

ConfigSource = Any
"""Anything with `current() -> Config` (the admin plane's `ConfigView`)."""


def pin_routes(view: ConfigSource) -> list[Route]:
    """The admin plane's `/pins` routes, reading backends from `view.current()`."""

    async def config() -> Config:
        current: Config = await asyncio.to_thread(view.current)
        return current

    async def list_pins(request: Request) -> Response:
        try:
            cfg = await config()
            if cfg.admin.protected:
                _check_token(request, cfg.admin)
            wanted = request.query_params.get("backend")
            entries: list[dict[str, Any]] = []
            notes: list[str] = []
            for name, backend in _pinned_backends(cfg).items():
                if wanted is not None and name != wanted:
                    continue
                found = await _entries(name, backend)
                if found is None:
                    notes.append(_memory_note(name))
                else:
                    entries += [entry.to_json() for entry in found]
            return _json({"pins": entries, "notes": notes})
        except GatewayError as exc:
            return _error(exc)

    async def get_pin(request: Request) -> Response:
        try:
            cfg = await config()
            if cfg.admin.protected:
                _check_token(request, cfg.admin)
            name, server, tool = _target(request)
            backend = _backend(cfg, name)
            found = await _one(name, backend, server, tool)
            return _json(found)
        except GatewayError as exc:
            return _error(exc)

    async def approve(request: Request) -> Response:
        try:
            cfg = await config()
            _check_change_allowed(request, cfg.admin)
            name, server, tool = _target(request)
            backend = _backend(cfg, name)
            expected = await _expected_sha(request)
            live = live_pinning(name)
            if live is not None:
                entry = await live.approve_current(server, tool, expected)
            elif backend.pinning.store == "sqlite":
                pins = PinFile(pin_path(backend.pinning), name)
                try:
                    await asyncio.to_thread(pins.approve, server, tool, expected)
                    entry = next(
                        e
                        for e in await asyncio.to_thread(pins.entries, backend.pinning)
                        if (e.server, e.tool) == (server, tool)
                    )
                finally:
                    await asyncio.to_thread(pins.close)
            else:
                raise UnprocessableEntity(_memory_note(name))
            return _json(entry.to_json())
        except PinNotFound as exc:
            return _error(NotFound(str(exc)))
        except PinMismatch as exc:
            return _error(UnprocessableEntity(str(exc)))
        except GatewayError as exc:
            return _error(exc)

    async def forget(request: Request) -> Response:
        try:
            cfg = await config()
            _check_change_allowed(request, cfg.admin)
            name, server, tool = _target(request)
            backend = _backend(cfg, name)
            live = live_pinning(name)
            if live is not None:
                existed = await live.forget(server, tool)
            elif backend.pinning.store == "sqlite":
                pins = PinFile(pin_path(backend.pinning), name)
                try:
                    existed = await asyncio.to_thread(pins.forget, server, tool)
                finally:
                    await asyncio.to_thread(pins.close)
            else:
                raise UnprocessableEntity(_memory_note(name))
            if not existed:
                raise NotFound(f"no pin for tool {tool!r} of server {server!r}")
            return _json({"backend": name, "server": server, "tool": tool, "forgotten": True})
        except GatewayError as exc:
            return _error(exc)

    return [
        Route("/pins", list_pins, methods=["GET"]),
        Route("/pins/{backend}/{server}/{tool}", get_pin, methods=["GET"]),
        Route("/pins/{backend}/{server}/{tool}/approve", approve, methods=["POST"]),
        Route("/pins/{backend}/{server}/{tool}", forget, methods=["DELETE"]),
    ]


def _pinned_backends(cfg: Config) -> dict[str, McpBackendConfig]:
    return {
        name: backend
        for name, backend in cfg.backends.items()
        if isinstance(backend, McpBackendConfig)
        and (backend.pinning.mode != "off" or backend.pinning.scan_descriptions)
    }


def _backend(cfg: Config, name: str) -> McpBackendConfig:
    backend = _pinned_backends(cfg).get(name)
    if backend is None:
        raise NotFound(f"no MCP backend {name!r} with tool pinning")
    return backend


async def _entries(name: str, backend: McpBackendConfig) -> list[PinEntry] | None:
    """A backend's pins from the live gateway in this process, else from its SQLite file;
    None when they are in another process's memory."""
    live = live_pinning(name)
    if live is not None:
        return live.entries()
    if backend.pinning.store != "sqlite":
        return None
    pins = PinFile(pin_path(backend.pinning), name)
    try:
        return await asyncio.to_thread(pins.entries, backend.pinning)
    finally:
        await asyncio.to_thread(pins.close)


async def _one(name: str, backend: McpBackendConfig, server: str, tool: str) -> dict[str, Any]:
    """One tool's entry with `pinned_definition` and `current_definition` (None when that
    definition's text was not kept: pinned before Crossway kept texts)."""
    live = live_pinning(name)
    if live is not None:
        entry = next((e for e in live.entries() if (e.server, e.tool) == (server, tool)), None)
        if entry is None:
            raise NotFound(f"no pin for tool {tool!r} of server {server!r}")
        pinned = await live.definition(entry.pinned_sha256) if entry.pinned_sha256 else None
        current = await live.definition(entry.current_sha256) if entry.current_sha256 else None
        return {**entry.to_json(), "pinned_definition": pinned, "current_definition": current}
    if backend.pinning.store != "sqlite":
        raise UnprocessableEntity(_memory_note(name))
    pins = PinFile(pin_path(backend.pinning), name)
    try:
        return await asyncio.to_thread(_one_in_file, pins, backend, server, tool)
    finally:
        await asyncio.to_thread(pins.close)


def _one_in_file(
    pins: PinFile, backend: McpBackendConfig, server: str, tool: str
) -> dict[str, Any]:
    entry = next(
        (e for e in pins.entries(backend.pinning) if (e.server, e.tool) == (server, tool)), None
    )
    if entry is None:
        raise NotFound(f"no pin for tool {tool!r} of server {server!r}")

    def text(sha: str | None) -> Any:
        found = pins.definition(sha) if sha else None
        return orjson.loads(found) if found else None

    return {
        **entry.to_json(),
        "pinned_definition": text(entry.pinned_sha256),
        "current_definition": text(entry.current_sha256),
    }


def _memory_note(name: str) -> str:
    return (
        f"backend {name!r} keeps its tool pins in memory inside each worker process, out of "
        "the admin plane's reach; set `pinning.store: sqlite` (or run one worker) to list and "
        "approve them here"
    )


def _target(request: Request) -> tuple[str, str, str]:
    params = request.path_params
    return str(params["backend"]), str(params["server"]), str(params["tool"])


async def _expected_sha(request: Request) -> str | None:
    """The optional `{"sha256": ...}` body: approve only if that is still the definition."""
    body = await request.body()
    if not body.strip():
        return None
    if len(body) > MAX_APPROVE_BODY:
        raise BadRequest("body too large")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest('body must be JSON: {"sha256": "..."}') from None
    sha = data.get("sha256") if isinstance(data, dict) else None
    if sha is not None and not isinstance(sha, str):
        raise BadRequest("sha256 must be a string", param="sha256")
    return sha


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _error(exc: GatewayError) -> Response:
    status, headers, body = render_json_error(exc)
    response = Response(body, status_code=status)
    for key, value in headers:
        response.headers[key.decode("latin-1")] = value.decode("latin-1")
    return response


__all__ = ["pin_routes"]
