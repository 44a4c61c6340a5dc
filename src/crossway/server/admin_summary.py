"""Aggregates of the request log store (`telemetry.request_log`), for the console's Overview and
Guardrails pages and for scripts.

    GET /summary          per time bucket: requests, errors (5xx) and client errors (4xx),
                          latency p50/p95/p99, tokens in and out, cost; the window's totals;
                          the top routes, models, tools and agents. Query parameters (each at
                          most once): start, end (Unix seconds or RFC 3339; default the last
                          hour), bucket (seconds; default a round size giving about 60
                          buckets), top (1-100, default 10), and the filters of `GET /logs`
                          (route, key, user, team, model, tool, agent, trace_id, status)
    GET /summary/guards   guard decisions in the window per guard, detector, action and
                          direction (counts only, never the matched text) and the newest
                          entries that had some (`limit`, default 20); same window and
                          filters; and `crossway_guard_decisions_total` since the start

Latency percentiles are approximate: SQL counts durations into fixed bins
(`LATENCY_EDGES_MS`), and a percentile is interpolated inside its bin as Prometheus'
`histogram_quantile` does. Without `end` the window is widened to whole buckets (multiples of
`bucket` since the Unix epoch), so consecutive calls share their buckets: the answer is kept
and brought up to date with only the entries written since (the store's id range tells which;
a prune starts it afresh). Same rule as `/logs`. With the request log off `/summary` answers
409 `request_log_off`, saying how to turn it on; `/summary/guards` still answers the metric
counters, with `request_log.enabled: false` and that message.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import threading
import time
import urllib.parse
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crossway.config import Config
from crossway.errors import BadRequest, GatewayError
from crossway.server.admin_auth import _check_change_allowed
from crossway.server.admin_logs import ACTION, log_path, parse_query
from crossway.server.admin_models import default_registry
from crossway.server.admin_pins import _error, _json
from crossway.server.admin_stats import quantile
from crossway.store.request_log_sqlite import (
    DIMENSIONS,
    FILTERS,
    LATENCY_EDGES_MS,
    SUM_FIELDS,
    Query,
    RequestLogFile,
)

Json = dict[str, Any]
ConfigSource = Any
"""Anything with `current() -> Config` (the admin plane's `ConfigView`)."""

DEFAULT_WINDOW_SECONDS: Final = 3600.0
TARGET_BUCKETS: Final = 60
MAX_BUCKETS: Final = 1000
BUCKET_SIZES: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800)
"""Round bucket sizes (seconds) the default picks from; longer windows use multiples of a day."""
DEFAULT_TOP: Final = 10
MAX_TOP: Final = 100
DEFAULT_RECENT: Final = 20
MAX_SCANS: Final = 4
"""Most pieces one long scan is cut into (one per core, up to this)."""
CACHED_WINDOWS: Final = 32
"""Summaries kept for reuse (each a few thousand small rows at most)."""
QUANTILES: Final = (0.5, 0.95, 0.99)
SUMMARY_PARAMS: Final = ("start", "end", "bucket", "top", *FILTERS, "status")
GUARD_PARAMS: Final = ("start", "end", *FILTERS, "status", "limit")
GUARD_GROUP: Final = ("guard", "detector", "action", "direction")
GUARD_METRIC: Final = "crossway_guard_decisions"
"""The guard decision counter's family name (its samples end in `_total`)."""
REQUEST_LOG_OFF: Final = (
    "the request log is off: set telemetry.request_log.enabled: true to keep request "
    "summaries and guard decisions"
)
_EDGES: Final = [*(float(e) for e in LATENCY_EDGES_MS), math.inf]


class Window:
    """The time range and bucket size of one call, and the store query behind it."""

    def __init__(
        self, query: Query, start: float, end: float, bucket: float, *, aligned: bool = False
    ) -> None:
        self.query = query
        self.start = start
        self.end = end
        self.bucket = bucket
        self.aligned = aligned
        """Whole buckets since the epoch: calls with other starts share the same buckets."""
        self.count = max(1, math.ceil((end - start) / bucket - 1e-9))

    @property
    def origin(self) -> float:
        """Where bucket 0 starts: the epoch for an aligned window, else the window's start."""
        return 0.0 if self.aligned else self.start

    def key(self) -> Hashable:
        """What the kept aggregates are kept under (an aligned window's range is not part of
        it: the buckets slide with the window)."""
        q = self.query
        equals = tuple(sorted((q.equals or {}).items()))
        span = None if self.aligned else (self.start, self.end)
        return (span, self.bucket, equals, q.status, q.status_class)


def round_bucket(span: float) -> float:
    """A round bucket size giving about `TARGET_BUCKETS` buckets over `span` seconds."""
    want = span / TARGET_BUCKETS
    for size in BUCKET_SIZES:
        if size >= want:
            return float(size)
    return float(math.ceil(want / 86400) * 86400)


def parse_window(request: Request, allowed: tuple[str, ...]) -> tuple[Window, int]:
    """The window of a call (and its `top` or `limit`), checked: 400 naming a bad parameter."""
    params = request.query_params
    for name in params:
        if name not in allowed:
            raise BadRequest(f"unknown parameter {name!r}; use {', '.join(allowed)}", param=name)
        if len(params.getlist(name)) > 1:
            raise BadRequest(f"parameter {name!r} given more than once", param=name)
    # The /logs parser checks the time range, filters, status and limit the same way for both.
    shared = [(k, v) for k, v in params.items() if k not in ("bucket", "top")]
    scope = {"type": "http", "query_string": urllib.parse.urlencode(shared).encode()}
    query = parse_query(Request(scope))
    now = time.time()
    end = query.end if query.end is not None else now
    start = query.start if query.start is not None else end - DEFAULT_WINDOW_SECONDS
    if end <= start:
        raise BadRequest("end must be after start", param="end")
    raw = params.get("bucket")
    if raw:
        try:
            bucket = float(raw)
        except ValueError:
            bucket = math.nan
        if not math.isfinite(bucket) or bucket < 1:
            raise BadRequest("bucket must be a number of seconds, at least 1", param="bucket")
        if (end - start) / bucket > MAX_BUCKETS:
            raise BadRequest(
                f"bucket is too small for this window (at most {MAX_BUCKETS} buckets)",
                param="bucket",
            )
    else:
        bucket = round_bucket(end - start)
    if query.end is None:  # an open window: whole buckets, so calls share them
        start = math.floor(start / bucket) * bucket
        end = math.ceil(end / bucket) * bucket
        if end <= now:
            end += bucket
    number = DEFAULT_TOP if "top" in allowed else DEFAULT_RECENT
    raw_number = params.get("top") if "top" in allowed else params.get("limit")
    if raw_number and "top" in allowed:
        number = int(raw_number) if raw_number.isdigit() and len(raw_number) < 4 else 0
        if not 1 <= number <= MAX_TOP:
            raise BadRequest(f"top must be an integer from 1 to {MAX_TOP}", param="top")
    elif raw_number:
        number = query.limit
    store_query = Query(
        start=start,
        end=end,
        equals=query.equals,
        status=query.status,
        status_class=query.status_class,
    )
    return Window(store_query, start, end, bucket, aligned=query.end is None), number


Table = dict[tuple[Any, ...], list[float]]
"""Aggregates: `{group values: sums}`."""
Fetch = Callable[[float, float, tuple[int, int]], list[Json]]
"""The store's aggregate rows for entries in a time range (start, end) and id range."""


class Rollups:
    """Aggregate rows kept per store and window key, brought up to date with only what they
    lack: the entries written since (ids above the highest seen; sums are additive) and, as an
    aligned window slides, the time it newly covers (buckets it left are dropped). A prune (the
    lowest id moved) starts afresh."""

    def __init__(self, keep: int = CACHED_WINDOWS) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[tuple[int, int], tuple[float, float], Table]]
        self._entries = OrderedDict()
        self._turns: dict[Hashable, threading.Lock] = {}

    def rows(
        self,
        key: Hashable,
        ids: tuple[int, int],
        span: tuple[float, float],
        fetch: Fetch,
        group: tuple[str, ...],
        sums: tuple[str, ...],
        first_bucket: Callable[[float], Any] | None = None,
    ) -> Table:
        """The aggregates over the entries with ids in `ids` (lowest, highest) and times in
        `span`; `first_bucket(start)` (for bucketed groups, whose first value is the bucket)
        gives the oldest bucket to keep. Calls for one key take turns: a second one waiting
        on a long first scan then finds its result kept, instead of scanning again."""
        with self._lock:
            turn = self._turns.setdefault(key, threading.Lock())
        with turn:
            return self._rows(key, ids, span, fetch, group, sums, first_bucket)

    def _rows(
        self,
        key: Hashable,
        ids: tuple[int, int],
        span: tuple[float, float],
        fetch: Fetch,
        group: tuple[str, ...],
        sums: tuple[str, ...],
        first_bucket: Callable[[float], Any] | None,
    ) -> Table:
        with self._lock:
            held = self._entries.get(key)
        start, end = span
        parts: list[tuple[float, float, tuple[int, int]]] = []
        if held is not None and held[0][0] == ids[0] and held[0][1] <= ids[1]:
            seen, (covered_start, covered_end), table = held
            old = (ids[0] - 1, seen[1])
            if start < covered_start:
                parts.append((start, covered_start, old))
            if end > covered_end:
                parts.append((covered_end, end, old))
            covered = (min(start, covered_start), max(end, covered_end))
            if seen[1] < ids[1]:
                parts.append((*covered, (seen[1], ids[1])))
        else:
            table, covered = {}, span
            parts.append((start, end, (ids[0] - 1, ids[1])))
        if parts:
            table = {k: list(v) for k, v in table.items()}
            for part_start, part_end, part_ids in parts:
                for row in fetch(part_start, part_end, part_ids):
                    values = table.setdefault(tuple(row[g] for g in group), [0.0] * len(sums))
                    for i, name in enumerate(sums):
                        values[i] += row[name] or 0
        if first_bucket is not None and covered[0] < start:  # the window slid on
            oldest = first_bucket(start)
            table = {k: v for k, v in table.items() if k[0] >= oldest}
            covered = (start, covered[1])
        with self._lock:
            self._entries[key] = (ids, covered, table)
            self._entries.move_to_end(key)
            while len(self._entries) > self._keep:
                dropped, _ = self._entries.popitem(last=False)
                self._turns.pop(dropped, None)
        return table


def parallel_rollup(
    store: RequestLogFile,
    path: Path,
    window: Window,
    span: tuple[float, float],
    ids: tuple[int, int],
) -> list[Json]:
    """The store's rollup rows for the entries in `span` and `ids`; a span of many buckets is
    cut into one piece per core, each scanned on its own connection at the same time (SQLite
    runs without the GIL). Rows of a bucket cut in two are added up by `Rollups`."""
    start, end = span
    pieces = min(MAX_SCANS, os.cpu_count() or 1, int((end - start) // (window.bucket * 4)))

    def scan(log: RequestLogFile, piece: tuple[float, float]) -> list[Json]:
        query = replace(window.query, start=piece[0], end=piece[1])
        return log.rollup(query, window.origin, window.bucket, ids)

    if pieces < 2:
        return scan(store, span)

    def scan_own(piece: tuple[float, float]) -> list[Json]:
        log = RequestLogFile(path)
        try:
            return scan(log, piece)
        finally:
            log.close()

    edges = [start + (end - start) * i / pieces for i in range(pieces)] + [end]
    with ThreadPoolExecutor(max_workers=pieces) as pool:
        parts = list(pool.map(scan_own, itertools.pairwise(edges)))
    return [row for part in parts for row in part]


def _latency(bins: dict[int, float]) -> Json:
    """p50/p95/p99 (ms) from counts per latency bin."""
    cumulative, running = [], 0.0
    for i, edge in enumerate(_EDGES):
        running += bins.get(i, 0.0)
        cumulative.append((edge, running))
    out: Json = {}
    for q in QUANTILES:
        value = quantile(q, cumulative)
        out[f"p{round(q * 100)}_ms"] = None if value is None else round(value, 2)
    return out


def _totals(values: list[float]) -> Json:
    out: Json = {name: values[i] for i, name in enumerate(SUM_FIELDS)}
    for name in ("requests", "errors", "client_errors", "tokens_in", "tokens_out"):
        out[name] = int(out[name])
    total_ms = out.pop("duration_ms_total")
    out["cost"] = round(out["cost"], 9)
    out["mean_ms"] = round(total_ms / out["requests"], 2) if out["requests"] else None
    return out


def build_summary(window: Window, table: Table, top: int) -> Json:
    """The `/summary` body from the rollup rows (bucket, bin, *DIMENSIONS) -> SUM_FIELDS."""
    width = len(SUM_FIELDS)
    per_bucket: dict[int, list[float]] = defaultdict(lambda: [0.0] * width)
    bucket_bins: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    all_bins: dict[int, float] = defaultdict(float)
    per_dim: dict[str, dict[str, list[float]]] = {d: {} for d in DIMENSIONS}
    total = [0.0] * width
    offset = round((window.start - window.origin) / window.bucket)
    for (absolute, latency_bin, *dims), values in table.items():
        bucket = absolute - offset
        if not 0 <= bucket < window.count:
            continue  # kept for a wider window than this call's
        sums = per_bucket[bucket]
        for i, value in enumerate(values):
            sums[i] += value
            total[i] += value
        if latency_bin is not None:
            bucket_bins[bucket][latency_bin] += values[0]
            all_bins[latency_bin] += values[0]
        for name, value in zip(DIMENSIONS, dims, strict=True):
            if value is not None:
                row = per_dim[name].setdefault(value, [0.0] * width)
                for i, v in enumerate(values):
                    row[i] += v
    buckets = []
    for i in range(window.count):
        entry: Json = {"start": window.start + i * window.bucket}
        entry.update(_totals(per_bucket.get(i, [0.0] * width)))
        entry.update(_latency(bucket_bins.get(i, {})))
        buckets.append(entry)
    by: Json = {}
    for name, rows in per_dim.items():
        ranked = sorted(rows.items(), key=lambda kv: (-kv[1][0], str(kv[0])))
        by[name] = [{"name": value, **_totals(sums)} for value, sums in ranked[:top]]
    return {
        "start": window.start,
        "end": window.end,
        "bucket": window.bucket,
        "totals": {**_totals(total), **_latency(all_bins)},
        "buckets": buckets,
        "by": by,
        "latency_edges_ms": list(LATENCY_EDGES_MS),
    }


def summary_routes(view: ConfigSource, probe: Any) -> list[Route]:
    """The admin plane's `/summary` routes over the store `view.current()` names."""
    rollups = Rollups()
    built: dict[Hashable, tuple[Table, Json]] = {}
    memo_lock = threading.Lock()
    guard_rollups = Rollups()
    rollup_group = ("bucket", "bin", *DIMENSIONS)
    guard_group = GUARD_GROUP

    async def allowed(request: Request, *, need_log: bool = True) -> tuple[Path | None, bool]:
        """The store to read (None: nothing written yet) and whether the log is on."""
        cfg: Config = await asyncio.to_thread(view.current)
        _check_change_allowed(request, cfg.admin, ACTION)
        settings = cfg.telemetry.request_log
        if settings is None or not settings.enabled:
            if need_log:
                raise GatewayError(REQUEST_LOG_OFF, status=409, code="request_log_off")
            return None, False
        path = log_path(cfg)
        return (path if path.exists() else None), True

    def summarize(path: Path | None, window: Window, top: int) -> Json:
        table: dict[tuple[Any, ...], list[float]] = {}
        if path is not None:
            store = RequestLogFile(path)
            try:
                ids = store.id_range()
                table = rollups.rows(
                    (str(path), window.key()),
                    ids,
                    (window.start, window.end),
                    lambda start, end, span: parallel_rollup(
                        store, path, window, (start, end), span
                    ),
                    rollup_group,
                    SUM_FIELDS,
                    lambda start: round((start - window.origin) / window.bucket),
                )
            finally:
                store.close()
        # The same aggregates for the same window: the body built last time still holds.
        memo_key = (str(path), window.key(), window.start, window.end, top)
        with memo_lock:
            held = built.get(memo_key)
        if held is not None and held[0] is table:
            return held[1]
        body = build_summary(window, table, top)
        with memo_lock:
            built[memo_key] = (table, body)
            while len(built) > CACHED_WINDOWS:
                built.pop(next(iter(built)))
        return body

    def guards(path: Path | None, log_on: bool, window: Window, limit: int) -> Json:
        table: dict[tuple[Any, ...], list[float]] = {}
        recent: list[Json] = []
        if path is not None:
            store = RequestLogFile(path)
            try:
                ids = store.id_range()
                # Counts for the whole window, not per bucket: kept per exact window.
                table = guard_rollups.rows(
                    (str(path), window.key(), window.start, window.end),
                    ids,
                    (window.start, window.end),
                    lambda start, end, span: store.guard_counts(
                        replace(window.query, start=start, end=end), span
                    ),
                    guard_group,
                    ("findings", "requests"),
                )
                recent = store.guarded(window.query, limit)
            finally:
                store.close()
        decisions = [
            {**dict(zip(guard_group, k, strict=True)), "findings": int(v[0]), "requests": int(v[1])}
            for k, v in sorted(table.items(), key=lambda kv: (-kv[1][0], str(kv[0])))
        ]
        return {
            "start": window.start,
            "end": window.end,
            "decisions": decisions,
            "recent": [_recent(entry) for entry in recent],
            "metrics": guard_metrics(default_registry()),
            "request_log": {"enabled": log_on, "message": None if log_on else REQUEST_LOG_OFF},
        }

    async def get_summary(request: Request) -> Response:
        try:
            path, _ = await allowed(request)
            window, top = parse_window(request, SUMMARY_PARAMS)
            return _json(await asyncio.to_thread(_guarded_read, summarize, path, window, top))
        except GatewayError as exc:
            return _error(exc)

    async def get_guards(request: Request) -> Response:
        try:
            path, log_on = await allowed(request, need_log=False)
            window, limit = parse_window(request, GUARD_PARAMS)
            body = await asyncio.to_thread(_guarded_read, guards, path, log_on, window, limit)
            return _json(body)
        except GatewayError as exc:
            return _error(exc)

    return [
        Route("/summary", get_summary, methods=["GET"]),
        Route("/summary/guards", get_guards, methods=["GET"]),
    ]


def guard_metrics(registry: CollectorRegistry) -> list[Json]:
    """`crossway_guard_decisions_total` since the gateway started, per label set (summed over
    workers), most findings first."""
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for family in registry.collect():
        if family.name != GUARD_METRIC:
            continue
        for sample in family.samples:
            if sample.name == GUARD_METRIC + "_total":
                totals[tuple(sample.labels.get(k, "") for k in GUARD_GROUP)] += sample.value
    return [
        {**dict(zip(GUARD_GROUP, labels, strict=True)), "findings": int(value)}
        for labels, value in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _recent(entry: Json) -> Json:
    """An entry that had guard decisions: who, where, and the decisions' names and counts."""
    raw = entry.get("guards")
    decisions: list[Any] = raw if isinstance(raw, list) else []
    keep = ("guard", "detector", "action", "direction", "count")
    return {
        **{k: entry.get(k) for k in ("id", "time", "route", "status", "model", "tool", "agent")},
        "guards": [{k: d.get(k) for k in keep} for d in decisions if isinstance(d, dict)],
    }


def _guarded_read(action: Callable[..., Json], *args: Any) -> Json:
    try:
        return action(*args)
    except GatewayError:
        raise
    except Exception as exc:
        raise GatewayError(
            f"the request log store cannot be read: {exc}", status=503, code="store_unavailable"
        ) from None


# -- the OpenAPI document -------------------------------------------------------------------------


def summary_paths() -> Json:
    """The OpenAPI path items of `/summary` and `/summary/guards`."""
    from crossway.server import admin_openapi as doc

    number: Json = {"type": "number"}
    nullable_number: Json = {"type": ["number", "null"]}
    sums: Json = {
        "requests": {"type": "integer"},
        "errors": {"type": "integer", "description": "Answers with status 500 and above."},
        "client_errors": {"type": "integer", "description": "Answers with a 4xx status."},
        "tokens_in": {"type": "integer"},
        "tokens_out": {"type": "integer"},
        "cost": number,
        "mean_ms": nullable_number,
    }
    latency = {f"p{round(q * 100)}_ms": nullable_number for q in QUANTILES}
    bucket = doc._obj({"start": number, **sums, **latency}, ["start", "requests"])
    named = doc._obj({"name": {"type": "string"}, **sums}, ["name", "requests"])
    summary = doc._obj(
        {
            "start": number,
            "end": number,
            "bucket": {"type": "number", "description": "Bucket size, seconds."},
            "totals": doc._obj({**sums, **latency}),
            "buckets": {"type": "array", "items": bucket},
            "by": doc._obj({d: {"type": "array", "items": named} for d in DIMENSIONS}),
            "latency_edges_ms": {"type": "array", "items": number},
        },
        ["start", "end", "bucket", "totals", "buckets", "by"],
    )
    text: Json = {"type": "string"}
    decision = doc._obj(
        {
            "guard": text,
            "detector": text,
            "action": text,
            "direction": text,
            "findings": {"type": "integer"},
            "requests": {"type": "integer"},
        },
        ["guard", "detector", "action", "direction", "findings", "requests"],
    )
    recent = doc._obj(
        {
            "id": {"type": "integer"},
            "time": number,
            "route": {"type": ["string", "null"]},
            "status": {"type": ["integer", "null"]},
            "guards": {"type": "array", "items": {"type": "object"}},
        },
        ["id", "time", "guards"],
    )
    guards = doc._obj(
        {
            "start": number,
            "end": number,
            "decisions": {"type": "array", "items": decision},
            "recent": {"type": "array", "items": recent},
            "request_log": doc._obj(
                {"enabled": {"type": "boolean"}, "message": {"type": ["string", "null"]}},
                ["enabled"],
            ),
            "metrics": {
                "type": "array",
                "description": "`crossway_guard_decisions_total` since the gateway started.",
                "items": doc._obj(
                    {
                        "guard": text,
                        "detector": text,
                        "action": text,
                        "direction": text,
                        "findings": {"type": "integer"},
                    }
                ),
            },
        },
        ["start", "end", "decisions", "recent", "metrics", "request_log"],
    )
    window = [
        doc._query("start", "Window start (Unix seconds or RFC 3339; default end - 1 h).", text),
        doc._query("end", "Window end (default now; then widened to whole buckets).", text),
        *(doc._query(name, f"Only entries whose {name} is exactly this.") for name in FILTERS),
        doc._query("status", "Only this status (502) or status class (5xx).", text),
    ]
    return {
        "/summary": {
            "get": doc._op(
                "getSummary",
                "logs",
                "Request log aggregates per time bucket (requests, errors, approximate latency "
                "percentiles, tokens, cost), totals, and the top routes, models, tools, agents.",
                doc._ok(summary),
                errors=(400, 401, 403, 409, 503),
                params=[
                    *window,
                    doc._query(
                        "bucket",
                        "Bucket size in seconds (default: round, about 60 buckets).",
                        {"type": "number", "minimum": 1},
                    ),
                    doc._query(
                        "top",
                        f"Entries per breakdown (default {DEFAULT_TOP}).",
                        {"type": "integer", "minimum": 1, "maximum": MAX_TOP},
                    ),
                ],
                sensitive=doc._TOKEN_WHEN_SET,
            )
        },
        "/summary/guards": {
            "get": doc._op(
                "getGuardSummary",
                "logs",
                "Guard decisions in the request log by guard, detector, action and direction "
                "(counts, never the matched text), and the newest entries that had some.",
                doc._ok(guards),
                errors=(400, 401, 403, 503),
                params=[
                    *window,
                    doc._query(
                        "limit",
                        f"Most recent entries answered (default {DEFAULT_RECENT}).",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                    ),
                ],
                sensitive=doc._TOKEN_WHEN_SET,
            )
        },
    }


__all__ = [
    "Rollups",
    "build_summary",
    "parse_window",
    "round_bucket",
    "summary_paths",
    "summary_routes",
]
