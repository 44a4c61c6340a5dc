"""`RequestLogFile`: the request log store in a SQLite file (WAL), written by the gateway's
request-log thread (`crossway.telemetry.request_log`) and read by the admin API's `/logs`.

Blocking: call it from a thread (the writer's own, or `asyncio.to_thread`). Every worker
process writes the same file; WAL lets the admin plane read while they do.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

DATA_DIR_ENV: Final = "CROSSWAY_DATA_DIR"
DEFAULT_DATA_DIR: Final = ".crossway"
FILE_NAME: Final = "request-log.sqlite3"
BUSY_TIMEOUT_MS: Final = 5000
DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000

COLUMNS: Final = (
    "time",
    "request_id",
    "trace_id",
    "route",
    "backend",
    "kind",
    "method",
    "path",
    "status",
    "duration_ms",
    "key",
    "user",
    "team",
    "model",
    "provider",
    "tool",
    "agent",
    "cost",
    "usage",
    "request",
    "response",
    "truncated",
    "guards",
)
_SUMMARY: Final = tuple(c for c in COLUMNS if c not in ("request", "response", "usage"))
_JSON_COLUMNS: Final = ("usage", "request", "response", "guards")
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS request_log ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, request_id TEXT,"
    " trace_id TEXT, route TEXT, backend TEXT, kind TEXT, method TEXT, path TEXT,"
    " status INTEGER, duration_ms REAL, key TEXT, user TEXT, team TEXT, model TEXT,"
    " provider TEXT, tool TEXT, agent TEXT, cost REAL, usage TEXT, request TEXT,"
    " response TEXT, truncated INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS request_log_by_time ON request_log (time, id)",
    "CREATE INDEX IF NOT EXISTS request_log_by_trace ON request_log (trace_id)",
)
_ADDED_COLUMNS: Final = (("guards", "TEXT"),)
"""Columns later versions added: a file written by an older Crossway gets them on open."""
_ADDED_INDEXES: Final = (
    # The entries with guard decisions (usually few): the Guardrails page's counts and recent
    # list read only them instead of every entry's last column (past its stored contents).
    "CREATE INDEX IF NOT EXISTS request_log_guarded ON request_log (time) WHERE guards IS NOT NULL",
)
"""Indexes on added columns (created after the columns are)."""
FILTERS: Final = ("route", "key", "user", "team", "model", "tool", "agent", "trace_id")
"""Columns the query matches exactly."""
LATENCY_EDGES_MS: Final = (
    *(1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700),
    *(1000, 1500, 2000, 3000, 5000, 7000, 10000, 20000, 30000, 60000, 120000),
)
"""Upper bounds (ms, inclusive) of the latency histogram the summaries count in SQL; bin `i` is
`(edge[i-1], edge[i]]`, bin `len(edges)` everything slower. Percentiles read from it are
approximate (interpolated inside a bin), as Prometheus' `histogram_quantile` is."""
_LATENCY_BIN: Final = (
    "CASE WHEN duration_ms IS NULL THEN NULL "
    + " ".join(f"WHEN duration_ms <= {edge} THEN {i}" for i, edge in enumerate(LATENCY_EDGES_MS))
    + f" ELSE {len(LATENCY_EDGES_MS)} END"
)
_TOKENS_IN: Final = "json_extract(usage, '$.input_tokens'), json_extract(usage, '$.prompt_tokens')"
_TOKENS_OUT: Final = (
    "json_extract(usage, '$.output_tokens'), json_extract(usage, '$.completion_tokens')"
)
# The gateway writes `input_tokens`/`output_tokens`; older or foreign rows may hold OpenAI's names.
_SUMS: Final = (
    "COUNT(*), SUM(status >= 500), SUM(status >= 400 AND status < 500),"
    f" SUM(CASE WHEN usage IS NULL THEN 0 ELSE COALESCE({_TOKENS_IN}, 0) END),"
    f" SUM(CASE WHEN usage IS NULL THEN 0 ELSE COALESCE({_TOKENS_OUT}, 0) END),"
    " TOTAL(cost), TOTAL(duration_ms)"
)
SUM_FIELDS: Final = (
    "requests",
    "errors",
    "client_errors",
    "tokens_in",
    "tokens_out",
    "cost",
    "duration_ms_total",
)
"""What each summary row adds up: requests, 5xx, 4xx, tokens in and out, cost, latency."""
DIMENSIONS: Final = ("route", "model", "tool", "agent")
"""The columns `RequestLogFile.rollup` groups by (besides time and latency)."""


def default_path() -> Path:
    """`$CROSSWAY_DATA_DIR/request-log.sqlite3`, the data dir defaulting to `./.crossway`."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR) / FILE_NAME


@dataclass(frozen=True, slots=True)
class Query:
    """What `GET /logs` asks: exact matches, a time range, a status (or class), a page."""

    start: float | None = None
    end: float | None = None
    equals: Mapping[str, str] | None = None
    status: int | None = None
    status_class: int | None = None
    """1..5: any status from `N00` to `N99`."""
    limit: int = DEFAULT_PAGE
    after: tuple[float, int] | None = None
    """The cursor: the last (time, id) of the previous page."""


def encode_cursor(when: float, row_id: int) -> str:
    """An opaque cursor for the page after the entry (when, row_id)."""
    return base64.urlsafe_b64encode(orjson.dumps([when, row_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    """The (time, id) in a cursor; `ValueError` if it is not one of ours."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise ValueError("not a cursor from GET /logs") from None
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not isinstance(data[0], (int, float))
        or not isinstance(data[1], int)
        or isinstance(data[1], bool)
    ):
        raise ValueError("not a cursor from GET /logs")
    return float(data[0]), int(data[1])


class RequestLogFile:
    """Blocking access to the SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            have = {row[1] for row in conn.execute("PRAGMA table_info(request_log)")}
            for column, kind in _ADDED_COLUMNS:
                if column not in have:
                    try:
                        conn.execute(f'ALTER TABLE request_log ADD COLUMN "{column}" {kind}')
                    except sqlite3.OperationalError:  # another worker added it just now
                        pass
            for statement in _ADDED_INDEXES:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writing ------------------------------------------------------------------------------

    def insert(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert entries (dicts with `COLUMNS`) in one transaction."""
        conn = self.db()
        marks = ", ".join("?" for _ in COLUMNS)
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                f"INSERT INTO request_log ({names}) VALUES ({marks})",
                [tuple(row.get(c) for c in COLUMNS) for row in rows],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def prune(self, max_rows: int, older_than: float) -> int:
        """Delete entries before `older_than` and beyond the newest `max_rows`; how many."""
        conn = self.db()
        deleted = conn.execute("DELETE FROM request_log WHERE time < ?", (older_than,)).rowcount
        row = conn.execute(
            "SELECT id FROM request_log ORDER BY id DESC LIMIT 1 OFFSET ?", (max_rows,)
        ).fetchone()
        if row is not None:
            deleted += conn.execute("DELETE FROM request_log WHERE id <= ?", (row[0],)).rowcount
        return int(deleted)

    # -- reading ------------------------------------------------------------------------------

    def query(self, q: Query) -> tuple[list[dict[str, Any]], str | None]:
        """One page of entry summaries, newest first, and the cursor of the next (or None)."""
        where, args = _conditions(q)
        if q.after is not None:
            where.append("(time < ? OR (time = ? AND id < ?))")
            args += [q.after[0], q.after[0], q.after[1]]
        names = ", ".join(f'"{c}"' for c in _SUMMARY)
        sql = f"SELECT id, {names} FROM request_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC, id DESC LIMIT ?"
        args.append(q.limit + 1)
        rows = self.db().execute(sql, args).fetchall()
        page = [_summary(row) for row in rows[: q.limit]]
        cursor = None
        if len(rows) > q.limit and page:
            last = page[-1]
            cursor = encode_cursor(last["time"], last["id"])
        return page, cursor

    def get(self, row_id: int) -> dict[str, Any] | None:
        """One entry with its contents, or None."""
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        row = (
            self.db()
            .execute(f"SELECT id, {names} FROM request_log WHERE id = ?", (row_id,))
            .fetchone()
        )
        if row is None:
            return None
        entry: dict[str, Any] = {"id": row[0], **dict(zip(COLUMNS, row[1:], strict=True))}
        entry["truncated"] = bool(entry["truncated"])
        for column in _JSON_COLUMNS:
            entry[column] = _json_or_text(entry[column])
        return entry

    # -- aggregates (the admin API's /logs/summary and /logs/guards) ---------------------------

    def id_range(self) -> tuple[int, int]:
        """The smallest and largest entry id (0, 0 when empty): new entries raise the second,
        pruning raises the first, so together they tell whether an aggregate is still current."""
        # Two subqueries: each is one index seek (MIN and MAX together would scan the table).
        row = (
            self.db()
            .execute("SELECT (SELECT MIN(id) FROM request_log), (SELECT MAX(id) FROM request_log)")
            .fetchone()
        )
        return int(row[0] or 0), int(row[1] or 0)

    def rollup(
        self, q: Query, origin: float, bucket: float, ids: tuple[int, int]
    ) -> list[dict[str, Any]]:
        """The `SUM_FIELDS` of the entries `q` matches with `ids[0] < id <= ids[1]`, per time
        bucket (`(time - origin) // bucket`), latency bin (`LATENCY_EDGES_MS`; None without a
        duration) and `DIMENSIONS`: one scan for a summary's timeline and breakdown."""
        where, args = _conditions(q)
        where.append("id > ? AND id <= ?")
        args += ids
        dims = ", ".join(f'"{c}"' for c in DIMENSIONS)
        sql = (
            f"SELECT CAST((time - ?) / ? AS INTEGER), {_LATENCY_BIN}, {dims}, {_SUMS}"
            f" FROM request_log{_where_sql(where)} GROUP BY 1, 2, {dims}"
        )
        width = 2 + len(DIMENSIONS)
        return [
            {
                "bucket": row[0],
                "bin": row[1],
                **dict(zip(DIMENSIONS, row[2:width], strict=True)),
                **dict(zip(SUM_FIELDS, row[width:], strict=True)),
            }
            for row in self.db().execute(sql, [origin, bucket, *args]).fetchall()
        ]

    def guard_counts(self, q: Query, ids: tuple[int, int]) -> list[dict[str, Any]]:
        """Guard decisions of the entries `q` matches with `ids[0] < id <= ids[1]`, per
        (guard, detector, action, direction): findings (their `count`s) and requests. Names
        only: the store keeps no matched text in `guards`."""
        where, args = _conditions(q)
        where.append("guards IS NOT NULL AND id > ? AND id <= ?")
        args += ids
        sql = (
            "SELECT json_extract(d.value, '$.guard'), json_extract(d.value, '$.detector'),"
            " json_extract(d.value, '$.action'), json_extract(d.value, '$.direction'),"
            " TOTAL(COALESCE(json_extract(d.value, '$.count'), 1)), COUNT(DISTINCT r.rid)"
            f" FROM (SELECT id AS rid, guards FROM request_log{_where_sql(where)}) AS r,"
            " json_each(CASE WHEN json_valid(r.guards) AND json_type(r.guards) = 'array'"
            " THEN r.guards ELSE '[]' END) AS d GROUP BY 1, 2, 3, 4"
        )
        return [
            {
                "guard": row[0],
                "detector": row[1],
                "action": row[2],
                "direction": row[3],
                "findings": int(row[4]),
                "requests": int(row[5]),
            }
            for row in self.db().execute(sql, args).fetchall()
        ]

    def guarded(self, q: Query, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` entries `q` matches that have guard decisions (summaries)."""
        where, args = _conditions(q)
        where.append("guards IS NOT NULL")
        names = ", ".join(f'"{c}"' for c in _SUMMARY)
        sql = (
            f"SELECT id, {names} FROM request_log{_where_sql(where)}"
            " ORDER BY time DESC, id DESC LIMIT ?"
        )
        return [_summary(row) for row in self.db().execute(sql, [*args, limit]).fetchall()]


def _where_sql(where: list[str]) -> str:
    return " WHERE " + " AND ".join(where) if where else ""


def _conditions(q: Query) -> tuple[list[str], list[Any]]:
    """The SQL conditions (and their arguments) of a query's time range, filters and status."""
    where: list[str] = []
    args: list[Any] = []
    if q.start is not None:
        where.append("time >= ?")
        args.append(q.start)
    if q.end is not None:
        where.append("time < ?")
        args.append(q.end)
    for column, value in (q.equals or {}).items():
        if column not in FILTERS:
            raise ValueError(f"cannot filter on {column!r}")
        where.append(f'"{column}" = ?')
        args.append(value)
    if q.status is not None:
        where.append("status = ?")
        args.append(q.status)
    if q.status_class is not None:
        where.append("status >= ? AND status < ?")
        args += [q.status_class * 100, q.status_class * 100 + 100]
    return where, args


def _summary(row: tuple[Any, ...]) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": row[0], **dict(zip(_SUMMARY, row[1:], strict=True))}
    entry["truncated"] = bool(entry["truncated"])
    entry["guards"] = _json_or_text(entry["guards"])
    return entry


def _json_or_text(value: str | None) -> Any:
    """A stored content: the JSON it holds, or (cut at the bound) its text."""
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


__all__ = [
    "COLUMNS",
    "DIMENSIONS",
    "FILTERS",
    "LATENCY_EDGES_MS",
    "SUM_FIELDS",
    "Query",
    "RequestLogFile",
    "decode_cursor",
    "default_path",
    "encode_cursor",
]
