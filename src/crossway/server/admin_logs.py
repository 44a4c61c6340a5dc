"""The admin API of the request log store (`telemetry.request_log`).

    GET /logs        entries, newest first, without their contents; query parameters (all
                     optional, each at most once): start, end (Unix seconds or RFC 3339;
                     start <= time < end), route, key, user, team, model, tool, agent,
                     trace_id (exact matches), status (e.g. 502, or a class: 5xx), limit
                     (1-1000, default 100), cursor (the `next_cursor` of the previous page)
    GET /logs/{id}   one entry with its request and response contents (as stored: redacted;
                     cut at `max_entry_bytes` when `truncated`)

Same rule as the other sensitive admin routes: `admin.token` as a Bearer token when one is set;
without one, only on a loopback admin listener and never to a browser. Bad parameters are 400
with the error JSON naming the parameter.
"""

from __future__ import annotations

import asyncio
import datetime
import math
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crossway.config import Config
from crossway.errors import BadRequest, GatewayError, NotFound
from crossway.server.admin_auth import _check_change_allowed
from crossway.server.admin_pins import _error, _json
from crossway.store.request_log_sqlite import (
    DEFAULT_PAGE,
    FILTERS,
    MAX_PAGE,
    Query,
    RequestLogFile,
    decode_cursor,
    default_path,
)

ACTION: Final = "read the request log"
PARAMETERS: Final = ("start", "end", *FILTERS, "status", "limit", "cursor")
"""Every query parameter `GET /logs` takes."""

ConfigSource = Any
"""Anything with `current() -> Config` (the admin plane's `ConfigView`)."""


def log_path(cfg: Config) -> Path:
    """Where the gateway writes its request log for `cfg`."""
    request_log = cfg.telemetry.request_log
    if request_log is not None and request_log.path:
        return Path(request_log.path)
    return default_path()


def log_routes(view: ConfigSource) -> list[Route]:
    """The admin plane's `/logs` routes, reading the store `view.current()` names."""

    async def allowed(request: Request) -> Config:
        cfg: Config = await asyncio.to_thread(view.current)
        _check_change_allowed(request, cfg.admin, ACTION)
        return cfg

    async def list_logs(request: Request) -> Response:
        try:
            cfg = await allowed(request)
            query = parse_query(request)
            path = log_path(cfg)
            if not path.exists():
                return _json({"logs": [], "next_cursor": None})
            page, cursor = await asyncio.to_thread(_read, path, lambda f: f.query(query))
            return _json({"logs": page, "next_cursor": cursor})
        except GatewayError as exc:
            return _error(exc)

    async def get_log(request: Request) -> Response:
        try:
            cfg = await allowed(request)
            raw = str(request.path_params["id"])
            if not raw.isdigit() or len(raw) > 18:
                raise BadRequest("the entry id must be a positive integer", param="id")
            path = log_path(cfg)
            entry = None
            if path.exists():
                entry = await asyncio.to_thread(_read, path, lambda f: f.get(int(raw)))
            if entry is None:
                raise NotFound(f"no request log entry {raw}")
            return _json(entry)
        except GatewayError as exc:
            return _error(exc)

    return [
        Route("/logs", list_logs, methods=["GET"]),
        Route("/logs/{id}", get_log, methods=["GET"]),
    ]


def _read(path: Path, action: Any) -> Any:
    store = RequestLogFile(path)
    try:
        return action(store)
    except Exception as exc:
        raise GatewayError(
            f"the request log store cannot be read: {exc}", status=503, code="store_unavailable"
        ) from None
    finally:
        store.close()


def parse_query(request: Request) -> Query:
    """`GET /logs`'s parameters, checked: 400 naming the one that is unknown, repeated or bad."""
    params = request.query_params
    for name in params:
        if name not in PARAMETERS:
            raise BadRequest(f"unknown parameter {name!r}; use {', '.join(PARAMETERS)}", param=name)
        if len(params.getlist(name)) > 1:
            raise BadRequest(f"parameter {name!r} given more than once", param=name)
    start = _time(params.get("start"), "start")
    end = _time(params.get("end"), "end")
    if start is not None and end is not None and end < start:
        raise BadRequest("end must not be before start", param="end")
    equals = {name: params[name] for name in FILTERS if params.get(name)}
    status: int | None = None
    status_class: int | None = None
    raw_status = params.get("status")
    if raw_status:
        lowered = raw_status.lower()
        if len(lowered) == 3 and lowered.endswith("xx") and lowered[0] in "12345":
            status_class = int(lowered[0])
        elif raw_status.isdigit() and 100 <= int(raw_status) <= 599:
            status = int(raw_status)
        else:
            raise BadRequest(
                "status must be an HTTP status (100-599) or a class (4xx)", param="status"
            )
    limit = DEFAULT_PAGE
    raw_limit = params.get("limit")
    if raw_limit is not None:
        limit = int(raw_limit) if raw_limit.isdigit() and len(raw_limit) < 6 else 0
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}", param="limit")
    after = None
    raw_cursor = params.get("cursor")
    if raw_cursor:
        try:
            after = decode_cursor(raw_cursor)
        except ValueError as exc:
            raise BadRequest(str(exc), param="cursor") from None
    return Query(
        start=start,
        end=end,
        equals=equals,
        status=status,
        status_class=status_class,
        limit=limit,
        after=after,
    )


def _time(raw: str | None, name: str) -> float | None:
    """Unix seconds or an RFC 3339 time (without a zone: UTC)."""
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(
                f"{name} must be Unix seconds or an RFC 3339 time", param=name
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp()
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number of seconds", param=name)
    return value


# -- the OpenAPI document -------------------------------------------------------------------------


def log_paths() -> dict[str, Any]:
    """The OpenAPI path items of `/logs` and `/logs/{id}` (for `admin_openapi.build_document`)."""
    from crossway.server import admin_openapi as doc

    nullable_str: dict[str, Any] = {"type": ["string", "null"]}
    summary_props: dict[str, Any] = {
        "id": {"type": "integer"},
        "time": {"type": "number", "description": "Request start, Unix seconds."},
        "request_id": nullable_str,
        "trace_id": nullable_str,
        "route": nullable_str,
        "backend": nullable_str,
        "kind": {"type": "string", "enum": ["llm", "mcp", "a2a", "http"]},
        "method": {"type": "string"},
        "path": {"type": "string"},
        "status": {"type": "integer"},
        "duration_ms": {"type": "number"},
        "key": nullable_str,
        "user": nullable_str,
        "team": nullable_str,
        "model": nullable_str,
        "provider": nullable_str,
        "tool": nullable_str,
        "agent": nullable_str,
        "cost": {"type": ["number", "null"]},
        "truncated": {"type": "boolean"},
    }
    summary = doc._obj(summary_props, ["id", "time", "status", "truncated"])
    full = doc._obj(
        {
            **summary_props,
            "usage": {"type": ["object", "null"]},
            "request": {"description": "The request contents (redacted JSON, or cut text)."},
            "response": {"description": "The response contents (redacted JSON, or cut text)."},
        },
        ["id", "time", "status", "truncated", "request", "response"],
    )
    text = {"type": "string"}
    params = [
        doc._query("start", "Entries from this time on (Unix seconds or RFC 3339).", text),
        doc._query("end", "Entries before this time (Unix seconds or RFC 3339).", text),
        *(doc._query(name, f"Only entries whose {name} is exactly this.") for name in FILTERS),
        doc._query("status", "Only this status (502) or status class (5xx).", {"type": "string"}),
        doc._query(
            "limit",
            f"Most entries answered (default {DEFAULT_PAGE}).",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
        ),
        doc._query("cursor", "The previous page's `next_cursor`."),
    ]
    return {
        "/logs": {
            "get": doc._op(
                "listLogs",
                "logs",
                "Request log entries, newest first (without their contents).",
                doc._ok(
                    doc._obj(
                        {
                            "logs": {"type": "array", "items": summary},
                            "next_cursor": nullable_str,
                        },
                        ["logs", "next_cursor"],
                    )
                ),
                errors=(400, 401, 403, 503),
                params=params,
                sensitive=doc._TOKEN_WHEN_SET,
            )
        },
        "/logs/{id}": {
            "get": doc._op(
                "getLog",
                "logs",
                "One request log entry with its (redacted) request and response contents.",
                doc._ok(full),
                errors=(400, 401, 403, 404, 503),
                params=[doc._path_param("id", "The entry id (an integer).")],
                sensitive=doc._TOKEN_WHEN_SET,
            )
        },
    }


__all__ = ["PARAMETERS", "log_path", "log_paths", "log_routes", "parse_query"]
