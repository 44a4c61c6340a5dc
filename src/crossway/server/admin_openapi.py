"""The OpenAPI 3.1 document of the admin API, served at `GET /openapi.json` on the admin port.

Written by hand next to the routes it describes (`admin.py`, `admin_stats.py`, `admin_pins.py`,
`admin_a2a.py`, `admin_keys.py`, `admin_logs.py`); tests/server/test_admin_openapi.py checks that
it is valid OpenAPI and that every route of the admin app is in it, and only those.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crossway import __version__

OPENAPI_VERSION: Final = "3.1.0"
"""The OpenAPI version the document is written in."""
OPENAPI_PATH: Final = "/openapi.json"
"""Where the admin plane serves the document."""

GROUPS: Final = ("key", "user", "team", "model", "provider", "route")
"""`GET /spend`'s group and filter names (`crossway.store.accounting.GROUPS`; a test keeps them
equal, so this module imports nothing heavy)."""
TASK_STATES: Final = (
    "submitted",
    "working",
    "input-required",
    "auth-required",
    "completed",
    "failed",
    "canceled",
    "rejected",
)
"""A2A task states (the v1.0 `TASK_STATE_*` names are accepted too)."""

Json = dict[str, Any]

_SENSITIVE: Final[list[Json]] = [{}, {"adminToken": []}]
"""Security of routes that need `admin.token` when one is set (and loopback without it)."""
_TOKEN_WHEN_SET: Final = (
    " Needs `admin.token` as a Bearer token when one is set; without one it is served only on "
    "a loopback admin listener and never to a browser (a request with an `Origin` header)."
)
_READ_TOKEN_WHEN_SET: Final = " Needs `admin.token` as a Bearer token when one is set."


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Json]:
    descriptions = {
        400: "Bad request (an unknown, repeated or invalid parameter, or a bad body).",
        401: "`admin.token` is set and the request does not carry it.",
        403: "Refused: no `admin.token` and a non-loopback listener or a browser request.",
        404: "Not found.",
        405: "Method not allowed on this path.",
        409: "Conflict.",
        413: "Body too large.",
        422: "Cannot be done here (for instance, the data is in another process's memory).",
        503: "A store the route needs is failing.",
    }
    return {
        str(status): {
            "description": descriptions[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for status in statuses
    }


def _path_param(name: str, description: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(name: str, description: str, schema: Json | None = None) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _op(
    op_id: str,
    tag: str,
    summary: str,
    ok: Json,
    *,
    errors: tuple[int, ...] = (),
    params: list[Json] | None = None,
    body: Json | None = None,
    sensitive: str = "",
    ok_status: str = "200",
) -> Json:
    op: Json = {
        "operationId": op_id,
        "tags": [tag],
        "summary": summary,
        "responses": {ok_status: ok, **_errors(*errors)},
    }
    if sensitive:
        op["description"] = summary + sensitive
        op["security"] = _SENSITIVE
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


def _ok(schema: Json, description: str = "OK.") -> Json:
    return _json_body(schema, description)


def _obj(props: Json, required: list[str] | None = None, extra: bool = True) -> Json:
    schema: Json = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        schema["required"] = required
    return schema


_NUM_OR_NULL: Final[Json] = {"type": ["number", "null"]}
_STR_OR_NULL: Final[Json] = {"type": ["string", "null"]}
_INT_OR_NULL: Final[Json] = {"type": ["integer", "null"]}
_STR_LIST: Final[Json] = {"type": "array", "items": {"type": "string"}}
_PERIOD: Final[Json] = {"type": "string", "enum": ["daily", "weekly", "monthly", "total"]}


_DEFINITION: Final[Json] = {
    "description": "The tool definition (name, description, inputSchema) with that "
    "fingerprint; null when its text was not kept (pinned before definitions were stored).",
    "type": ["object", "null"],
}


def _schemas() -> Json:
    limits = {
        "max_budget": {**_NUM_OR_NULL, "description": "USD per budget_period; null: none."},
        "budget_period": _PERIOD,
        "rpm": {**_INT_OR_NULL, "description": "Requests per minute; null: no limit."},
        "tpm": {**_INT_OR_NULL, "description": "LLM tokens per minute; null: no limit."},
    }
    latency = _obj(
        {
            "count": {"type": "integer"},
            "mean_seconds": _NUM_OR_NULL,
            "p50_seconds": _NUM_OR_NULL,
            "p90_seconds": _NUM_OR_NULL,
            "p99_seconds": _NUM_OR_NULL,
        }
    )
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    return {
        "Error": _obj(
            {
                "error": _obj(
                    {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": _STR_OR_NULL,
                        "code": {"type": ["string", "integer", "null"]},
                    },
                    ["message"],
                )
            },
            ["error"],
        ),
        "Health": _obj({"status": {"const": "ok"}, "version": {"type": "string"}}, ["status"]),
        "Readiness": _obj(
            {
                "ready": {"type": "boolean"},
                "workers_ready": {"type": "integer"},
                "config": _obj(
                    {
                        "loaded": {"type": "boolean"},
                        "path": {"type": "string"},
                        "rejected_reload": {
                            "type": "string",
                            "description": "Why the file on disk was not taken (when it is not).",
                        },
                    }
                ),
                "backends": {
                    "type": "object",
                    "description": "Per backend: whether every upstream answered the last probe.",
                    "additionalProperties": _ref("BackendReadiness"),
                },
                "stores": {"type": "object", "additionalProperties": {"type": "object"}},
                "degraded": {"type": "boolean"},
            },
            ["ready", "workers_ready"],
        ),
        "BackendReadiness": _obj(
            {
                "reachable": {
                    "type": ["boolean", "null"],
                    "description": "null: not probed yet, or nothing to probe.",
                },
                "upstreams": {
                    "type": "object",
                    "additionalProperties": _obj(
                        {
                            "kind": {"type": "string", "enum": ["tcp", "command", "none"]},
                            "address": {"type": "string"},
                            "reachable": {"type": ["boolean", "null"]},
                            "error": _STR_OR_NULL,
                            "checked_at": _NUM_OR_NULL,
                        }
                    ),
                },
            },
            ["reachable", "upstreams"],
        ),
        "EffectiveConfig": _obj(
            {
                "path": {"type": "string"},
                "config": {"type": "object", "description": "Secrets shown as `**********`."},
                "rejected_reload": {"type": "string"},
            },
            ["path", "config"],
        ),
        "Stats": _obj(
            {
                "version": {"type": "string"},
                "pid": {"type": "integer"},
                "started_at": {"type": "number"},
                "uptime_seconds": {"type": "number"},
                "workers": _obj({"ready": {"type": "integer"}, "mode": {"type": "string"}}),
                "requests": _obj(
                    {
                        "in_flight": {"type": "integer"},
                        "total": {"type": "integer"},
                        "errors": {"type": "integer"},
                    }
                ),
                "routes": {
                    "type": "array",
                    "items": _obj(
                        {
                            "route": {"type": "string"},
                            "requests": {"type": "integer"},
                            "errors": {"type": "integer"},
                            "by_status": counts,
                            "latency": latency,
                        }
                    ),
                },
                "upstreams": {
                    "type": "array",
                    "items": _obj(
                        {
                            "backend": {"type": "string"},
                            "calls": {"type": "integer"},
                            "by_status": counts,
                            "latency": latency,
                        }
                    ),
                },
                "llm": _obj(
                    {
                        "models": {"type": "array", "items": {"type": "object"}},
                        "cost_usd": {"type": "number"},
                    }
                ),
            },
            ["version", "uptime_seconds", "workers", "requests", "routes"],
        ),
        "Pin": _obj(
            {
                "backend": {"type": "string"},
                "server": {"type": "string"},
                "tool": {"type": "string"},
                "pinned_sha256": _STR_OR_NULL,
                "current_sha256": _STR_OR_NULL,
                "status": {"type": "string", "enum": ["ok", "flagged", "blocked"]},
                "changed": {"type": "boolean"},
                "findings": {"type": "array", "items": {}},
            }
        ),
        "Task": _obj(
            {
                "backend": {"type": "string"},
                "task_id": {"type": "string"},
                "agent": {"type": "string"},
                "context_id": _STR_OR_NULL,
                "state": {"type": "string"},
                "created": {"type": "number"},
                "updated": {"type": "number"},
                "terminal": {"type": "boolean"},
                "history": {
                    "type": "array",
                    "items": _obj({"state": {"type": "string"}, "at": {"type": "number"}}),
                },
            }
        ),
        "Key": _obj(
            {
                "id": {"type": "string"},
                "key_display": {"type": "string", "description": "The secret's first characters."},
                "name": _STR_OR_NULL,
                "user": _STR_OR_NULL,
                "team": _STR_OR_NULL,
                "models": _STR_LIST,
                "mcp_tools": _STR_LIST,
                "agents": _STR_LIST,
                **limits,
                "expires_at": _NUM_OR_NULL,
                "metadata": {"type": "object"},
                "created_at": {"type": "number"},
                "updated_at": {"type": "number"},
                "revoked_at": _NUM_OR_NULL,
                "status": {"type": "string", "enum": ["active", "expired", "revoked"]},
            }
        ),
        "KeyWithSecret": {
            "allOf": [
                _ref("Key"),
                _obj(
                    {"key": {"type": "string", "description": "The secret, shown only now."}},
                    ["key"],
                ),
            ]
        },
        "KeyFields": _obj(
            {
                "name": _STR_OR_NULL,
                "user": _STR_OR_NULL,
                "team": _STR_OR_NULL,
                "models": _STR_LIST,
                "mcp_tools": _STR_LIST,
                "agents": _STR_LIST,
                **limits,
                "expires_in": {
                    "type": ["string", "number", "null"],
                    "description": "`30d`, `12h`, `15m`, `90s`, `2w` or seconds.",
                },
                "expires_at": _NUM_OR_NULL,
                "metadata": {"type": ["object", "null"]},
            },
            extra=False,
        ),
        "Principal": _obj(
            {
                "kind": {"type": "string", "enum": ["user", "team"]},
                "id": {"type": "string"},
                **limits,
                "metadata": {"type": "object"},
                "updated_at": _NUM_OR_NULL,
                "source": {"type": "string", "enum": ["store", "config"]},
            }
        ),
        "PrincipalFields": _obj({**limits, "metadata": {"type": ["object", "null"]}}, extra=False),
        "Spend": _obj(
            {
                "group_by": _STR_LIST,
                "start": _NUM_OR_NULL,
                "end": _NUM_OR_NULL,
                "filters": {"type": "object", "additionalProperties": {"type": "string"}},
                "rows": {"type": "array", "items": {"type": "object"}},
                "total_cost": {"type": "number"},
                "total_requests": {"type": "integer"},
            },
            ["rows", "total_cost", "total_requests"],
        ),
        "Budget": _obj(
            {
                "kind": {"type": "string", "enum": ["key", "user", "team"]},
                "id": {"type": "string"},
                "max_budget": _NUM_OR_NULL,
                "budget_period": _PERIOD,
                "spent": {"type": "number"},
                "remaining": _NUM_OR_NULL,
                "period": {"type": "string"},
                "resets_at": _NUM_OR_NULL,
            }
        ),
    }


def _health_paths() -> Json:
    return {
        "/healthz": {
            "get": _op(
                "healthz", "health", "Liveness: the admin plane answers.", _ok(_ref("Health"))
            )
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["health"],
                "summary": (
                    "Readiness: workers serving a loaded config, each backend's upstreams "
                    "reachable (cached results of a background probe), stores writable."
                ),
                "responses": {
                    "200": _ok(_ref("Readiness"), "Ready (possibly degraded)."),
                    "503": _ok(_ref("Readiness"), "No worker is serving yet."),
                },
            }
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "health",
                "Prometheus metrics of every worker (text exposition format).",
                {
                    "description": "OK.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            )
        },
        "/config": {
            "get": _op(
                "getConfig",
                "config",
                "The effective config, secrets redacted (re-read from the file).",
                _ok(_ref("EffectiveConfig")),
            )
        },
        "/stats": {
            "get": _op(
                "getStats",
                "health",
                "Live stats: requests in flight, per route counts and latency, upstream calls, "
                "LLM tokens and cost, uptime, version, workers.",
                _ok(_ref("Stats")),
            )
        },
        OPENAPI_PATH: {
            "get": _op(
                "getOpenApi",
                "config",
                "This document.",
                _ok({"type": "object"}),
            )
        },
    }


def _pin_paths() -> Json:
    target = [
        _path_param("backend", "The MCP backend's name."),
        _path_param("server", "The upstream server's own name."),
        _path_param("tool", "The upstream tool's own name (not the federated one)."),
    ]
    return {
        "/pins": {
            "get": _op(
                "listPins",
                "pins",
                "Every pinned or blocked MCP tool.",
                _ok(
                    _obj(
                        {
                            "pins": {"type": "array", "items": _ref("Pin")},
                            "notes": _STR_LIST,
                        },
                        ["pins", "notes"],
                    )
                ),
                errors=(401,),
                params=[_query("backend", "Only this backend's pins.")],
                sensitive=_READ_TOKEN_WHEN_SET,
            )
        },
        "/pins/{backend}/{server}/{tool}/approve": {
            "post": _op(
                "approvePin",
                "pins",
                "The definition listed now becomes the pin.",
                _ok(_ref("Pin")),
                errors=(400, 401, 403, 404, 422),
                params=target,
                body={
                    "required": False,
                    "description": "Approve only if this is still the current definition.",
                    "content": {
                        "application/json": {
                            "schema": _obj({"sha256": {"type": "string"}}, extra=False)
                        }
                    },
                },
                sensitive=_TOKEN_WHEN_SET,
            )
        },
        "/pins/{backend}/{server}/{tool}": {
            "get": _op(
                "getPin",
                "pins",
                "One tool's pin with the pinned and the current definitions.",
                _ok(
                    {
                        "allOf": [
                            _ref("Pin"),
                            _obj(
                                {
                                    "pinned_definition": _DEFINITION,
                                    "current_definition": _DEFINITION,
                                }
                            ),
                        ]
                    }
                ),
                errors=(401, 404, 422),
                params=target,
                sensitive=_READ_TOKEN_WHEN_SET,
            ),
            "delete": _op(
                "forgetPin",
                "pins",
                "Forget the pin (the next listing pins anew).",
                _ok(
                    _obj(
                        {
                            "backend": {"type": "string"},
                            "server": {"type": "string"},
                            "tool": {"type": "string"},
                            "forgotten": {"const": True},
                        }
                    )
                ),
                errors=(401, 403, 404, 422),
                params=target,
                sensitive=_TOKEN_WHEN_SET,
            ),
        },
    }


def _task_paths() -> Json:
    return {
        "/a2a/tasks": {
            "get": _op(
                "listTasks",
                "a2a",
                "A2A tasks, most recently updated first.",
                _ok(
                    _obj(
                        {
                            "tasks": {"type": "array", "items": _ref("Task")},
                            "notes": _STR_LIST,
                        },
                        ["tasks", "notes"],
                    )
                ),
                errors=(400, 401, 404, 422),
                params=[
                    _query("backend", "Only this A2A backend's tasks."),
                    _query("agent", "Only this agent's tasks."),
                    _query(
                        "state",
                        "Only tasks in this state (or its v1.0 TASK_STATE_* name).",
                        {"type": "string", "examples": list(TASK_STATES)},
                    ),
                    _query(
                        "older_than_seconds",
                        "State last changed at least this long ago.",
                        {"type": "number", "minimum": 0},
                    ),
                    _query(
                        "limit",
                        "Most tasks answered (default 100).",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                    ),
                ],
                sensitive=_READ_TOKEN_WHEN_SET,
            )
        },
        "/a2a/tasks/{task_id}": {
            "get": _op(
                "getTask",
                "a2a",
                "One task with its history.",
                _ok(_ref("Task")),
                errors=(401, 404, 422),
                params=[
                    _path_param("task_id", "The task id."),
                    _query("backend", "Look only in this A2A backend."),
                ],
                sensitive=_READ_TOKEN_WHEN_SET,
            )
        },
    }


def _key_paths() -> Json:
    sensitive = _TOKEN_WHEN_SET
    common = (401, 403, 503)
    key_id = _path_param("key_id", "The key's id.")
    key_body = _json_body(_ref("KeyFields"), "Fields to set (null clears one).")
    paths: Json = {
        "/keys": {
            "post": _op(
                "createKey",
                "keys",
                "Create a virtual key; its secret is shown once.",
                _ok(_ref("KeyWithSecret"), "Created."),
                ok_status="201",
                errors=(400, *common, 413),
                body={**key_body, "required": False},
                sensitive=sensitive,
            ),
            "get": _op(
                "listKeys",
                "keys",
                "Virtual keys, oldest first (never their secrets).",
                _ok(_obj({"keys": {"type": "array", "items": _ref("Key")}}, ["keys"])),
                errors=(400, *common),
                params=[
                    _query("user", "Only this user's keys."),
                    _query("team", "Only this team's keys."),
                    _query("include_revoked", "Also revoked keys.", {"type": "boolean"}),
                    _query(
                        "with_spend",
                        "Add each key's `budget` (as `GET /budgets/key/{id}` answers).",
                        {"type": "boolean"},
                    ),
                ],
                sensitive=sensitive,
            ),
        },
        "/keys/{key_id}": {
            "get": _op(
                "getKey",
                "keys",
                "One key (never its secret or digest).",
                _ok(_ref("Key")),
                errors=(*common, 404),
                params=[key_id],
                sensitive=sensitive,
            ),
            "patch": _op(
                "updateKey",
                "keys",
                "Change any settable field of a key.",
                _ok(_ref("Key")),
                errors=(400, *common, 404, 413),
                params=[key_id],
                body={**key_body, "required": True},
                sensitive=sensitive,
            ),
            "delete": _op(
                "deleteKey",
                "keys",
                "Revoke the key for good (as POST .../revoke).",
                _ok(_ref("Key")),
                errors=(*common, 404),
                params=[key_id],
                sensitive=sensitive,
            ),
        },
        "/keys/{key_id}/rotate": {
            "post": _op(
                "rotateKey",
                "keys",
                "A new secret for the same key.",
                _ok(_ref("KeyWithSecret")),
                errors=(*common, 404),
                params=[key_id],
                sensitive=sensitive,
            )
        },
        "/keys/{key_id}/revoke": {
            "post": _op(
                "revokeKey",
                "keys",
                "Revoke the key for good.",
                _ok(_ref("Key")),
                errors=(*common, 404),
                params=[key_id],
                sensitive=sensitive,
            )
        },
        "/spend": {
            "get": _op(
                "getSpend",
                "spend",
                "Spend grouped and filtered.",
                _ok(_ref("Spend")),
                errors=(400, *common),
                params=[
                    _query("group_by", f"Comma-separated, of: {', '.join(GROUPS)} (default key)."),
                    _query("start", "From this time (ISO-8601 or Unix seconds)."),
                    _query("end", "Until this time (ISO-8601 or Unix seconds)."),
                    *(_query(group, f"Only records of this {group}.") for group in GROUPS),
                    _query(
                        "interval",
                        "Bucket length (`1h`, `1d` or seconds, at least 60): one row per group "
                        "and bucket, each with its bucket's `start`; without `start` the last 24 "
                        "buckets up to `end` (default now), at most 400.",
                    ),
                ],
                sensitive=sensitive,
            )
        },
        "/budgets/{kind}/{principal_id}": {
            "get": _op(
                "getBudget",
                "spend",
                "The current period's spend against the budget of a key, user or team.",
                _ok(_ref("Budget")),
                errors=(*common, 404),
                params=[
                    {
                        **_path_param("kind", "key, user or team."),
                        "schema": {"type": "string", "enum": ["key", "user", "team"]},
                    },
                    _path_param("principal_id", "The key's, user's or team's id."),
                ],
                sensitive=sensitive,
            )
        },
    }
    for kind, plural in (("team", "teams"), ("user", "users")):
        principal_id = _path_param("principal_id", f"The {kind}'s id.")
        title = kind.capitalize()
        paths[f"/{plural}"] = {
            "get": _op(
                f"list{title}s",
                "keys",
                f"Stored {plural} and those of `accounting.{plural}`.",
                _ok(_obj({plural: {"type": "array", "items": _ref("Principal")}}, [plural])),
                errors=(400, *common),
                params=[
                    _query(
                        "with_spend",
                        f"Add each {kind}'s `budget` (as `GET /budgets/{kind}/{{id}}` answers).",
                        {"type": "boolean"},
                    )
                ],
                sensitive=sensitive,
            )
        }
        paths[f"/{plural}/{{principal_id}}"] = {
            "get": _op(
                f"get{title}",
                "keys",
                f"One {kind} (the store's, else the config's).",
                _ok(_ref("Principal")),
                errors=(*common, 404),
                params=[principal_id],
                sensitive=sensitive,
            ),
            "put": _op(
                f"put{title}",
                "keys",
                f"Store the {kind}'s budget, limits and metadata (replaces them).",
                _ok(_ref("Principal")),
                errors=(400, *common, 413),
                params=[principal_id],
                body={
                    **_json_body(_ref("PrincipalFields"), "The limits and metadata."),
                    "required": False,
                },
                sensitive=sensitive,
            ),
            "delete": _op(
                f"delete{title}",
                "keys",
                f"Forget the stored {kind}.",
                _ok(
                    _obj(
                        {
                            "kind": {"type": "string"},
                            "id": {"type": "string"},
                            "deleted": {"const": True},
                        }
                    )
                ),
                errors=(*common, 404),
                params=[principal_id],
                sensitive=sensitive,
            ),
        }
    return paths


def build_document(extra_paths: Json | None = None) -> Json:
    """The admin API's OpenAPI document; `extra_paths` adds the path items of routes defined
    elsewhere (the request log's `/logs`)."""
    paths: Json = {
        **_health_paths(),
        **_pin_paths(),
        **_task_paths(),
        **_key_paths(),
        **(extra_paths or {}),
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Crossway admin API",
            "version": __version__,
            "description": (
                "Health, readiness, metrics, the effective config, live stats, MCP tool pins, "
                "A2A tasks, virtual keys, teams, users, spend, budgets and request logs. Served "
                "on the admin port (default 127.0.0.1:15000). Errors are "
                '`{"error": {"message", "type", "param", "code"}}` with the matching status.'
            ),
        },
        "servers": [{"url": "http://127.0.0.1:15000", "description": "The default admin port."}],
        "tags": [
            {"name": "health", "description": "Liveness, readiness, metrics, stats."},
            {"name": "config", "description": "The effective config and this document."},
            {"name": "pins", "description": "MCP tool pins."},
            {"name": "a2a", "description": "A2A task ownership and states."},
            {"name": "keys", "description": "Virtual keys, teams and users."},
            {"name": "spend", "description": "Spend and budgets."},
            {"name": "logs", "description": "The request log store."},
        ],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`admin.token` from the config.",
                }
            },
        },
    }


def openapi_route(document: Json) -> Route:
    """`GET /openapi.json` answering `document`."""

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    return Route(OPENAPI_PATH, openapi, methods=["GET"])


__all__ = ["OPENAPI_PATH", "build_document", "openapi_route"]
