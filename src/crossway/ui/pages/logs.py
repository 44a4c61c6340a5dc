"""The Logs page: search the request log store, and one request's detail.

    GET /ui/logs        entries, newest first, filtered by the query (`GET /logs`' parameters,
                        plus `since=1h` for "the last hour"): bookmarkable; the filter form
                        updates the table with htmx and pushes the URL
    GET /ui/logs/{id}   one entry: who called what, status, timings, usage, cost, the guard
                        decisions, the trace id, and the stored (redacted) request and answer

Read through the admin API's `/logs` and `/logs/{id}`. When `telemetry.request_log` is off the
page says so (and still shows what an earlier run stored).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crossway.config import Config
from crossway.ui.console import config_of
from crossway.ui.render import render

if TYPE_CHECKING:
    from crossway.ui.console import Console

FILTER_FIELDS: Final = (
    "route",
    "key",
    "user",
    "team",
    "model",
    "tool",
    "agent",
    "trace_id",
    "status",
    "start",
    "end",
)
"""The `GET /logs` parameters the filter form sets (besides `limit` and `cursor`)."""
SINCE: Final = (("15m", 900), ("1h", 3600), ("24h", 86400), ("7d", 7 * 86400))
"""The form's "last ..." choices: (value of `since`, seconds)."""
PAGE_SIZES: Final = (50, 100, 200, 500)
DEFAULT_LIMIT: Final = 50


def log_enabled(cfg: Config) -> bool:
    request_log = cfg.telemetry.request_log
    return request_log is not None and request_log.enabled


def api_params(query: dict[str, str], now: float) -> dict[str, str]:
    """The `GET /logs` query for the page's query (`since` becomes `start`)."""
    params = {name: query[name] for name in FILTER_FIELDS if query.get(name)}
    since = dict(SINCE).get(query.get("since", ""))
    if since is not None and not params.get("start"):
        params["start"] = f"{now - since:.3f}"
    params["limit"] = query.get("limit") or str(DEFAULT_LIMIT)
    if query.get("cursor"):
        params["cursor"] = query["cursor"]
    return params


def page_link(query: dict[str, str], **changes: str | None) -> str:
    """`/ui/logs` with `query` changed (None drops a parameter)."""
    merged = {k: v for k, v in query.items() if v}
    for name, value in changes.items():
        if value:
            merged[name] = value
        else:
            merged.pop(name, None)
    encoded = urllib.parse.urlencode(merged)
    return "/ui/logs" + ("?" + encoded if encoded else "")


def pretty(value: Any) -> str:
    """Stored contents for reading: JSON indented, text as it is."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def status_level(status: Any) -> str:
    if not isinstance(status, int):
        return "warn"
    return "bad" if status >= 500 else "warn" if status >= 400 else "ok"


def usage_rows(usage: Any) -> list[tuple[str, Any]]:
    """Usage counters as (name, value), nested ones flattened (`input_tokens_details.cached`)."""
    if not isinstance(usage, dict):
        return []
    out: list[tuple[str, Any]] = []
    for name, value in usage.items():
        if isinstance(value, dict):
            out.extend((f"{name}.{inner}", item) for inner, item in value.items())
        else:
            out.append((name, value))
    return out


def routes(console: Console) -> list[BaseRoute]:
    async def list_logs(request: Request) -> Response:
        cfg = config_of(request)
        query = {name: value for name, value in request.query_params.items() if value}
        answer = await console.api.get(cfg, "/logs", **api_params(query, time.time()))
        rows = answer.body.get("logs", []) if answer.ok else []
        next_cursor = answer.body.get("next_cursor") if answer.ok else None
        # htmx swaps only 2xx answers: its search gets 200 with the error in the banner.
        htmx = request.headers.get("hx-request") == "true"
        return render(
            request,
            "logs.html",
            "logs",
            status=200 if answer.ok or htmx else answer.status,
            rows=rows,
            error=None if answer.ok else answer.error,
            values=query,
            log_on=log_enabled(cfg),
            since_choices=SINCE,
            page_sizes=PAGE_SIZES,
            limit=query.get("limit") or str(DEFAULT_LIMIT),
            older=page_link(query, cursor=next_cursor) if next_cursor else None,
            newest=page_link(query, cursor=None) if query.get("cursor") else None,
            filtered=any(query.get(name) for name in (*FILTER_FIELDS, "since")),
            level=status_level,
            link=lambda **changes: page_link({}, **changes),
        )

    async def detail(request: Request) -> Response:
        cfg = config_of(request)
        entry_id = str(request.path_params["entry_id"])
        answer = await console.api.get(cfg, "/logs/" + urllib.parse.quote(entry_id, safe=""))
        if not answer.ok:
            return render(
                request,
                "logs_detail.html",
                "logs",
                status=answer.status,
                entry=None,
                entry_id=entry_id,
                error=answer.error,
                log_on=log_enabled(cfg),
            )
        entry = answer.body
        guards = entry.get("guards")
        return render(
            request,
            "logs_detail.html",
            "logs",
            entry=entry,
            entry_id=entry_id,
            error=None,
            log_on=log_enabled(cfg),
            level=status_level(entry.get("status")),
            usage=usage_rows(entry.get("usage")),
            guards=guards if isinstance(guards, list) else [],
            guards_text=guards if isinstance(guards, str) else None,
            request_text=pretty(entry.get("request")),
            response_text=pretty(entry.get("response")),
            link=lambda **changes: page_link({}, **changes),
        )

    return [
        Route("/ui/logs", list_logs, methods=["GET"]),
        Route("/ui/logs/{entry_id}", detail, methods=["GET"]),
    ]
