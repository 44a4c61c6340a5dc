"""`SqliteAccounting`: virtual keys, principals and spend in one SQLite file, shared by every
worker process, the admin plane and the CLI of one machine (see `crossway.store.accounting`
for the contract).

The file is in WAL mode with `synchronous=NORMAL`: a committed transaction survives the
process being killed (kill -9); only a power loss can take the last commits. Readers never
wait for the writer; writers take the lock with `BEGIN IMMEDIATE` and wait up to
`BUSY_TIMEOUT_MS` for another process's write to end.

The layout is versioned with `PRAGMA user_version`: `MIGRATIONS[n]` takes a file from version
`n` to `n + 1`, each in its own transaction. Opening an older file migrates it; a file written
by a newer Crossway (a version above `SCHEMA_VERSION`) is refused with `SchemaTooNew` rather
than read with the wrong layout.
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson

from crossway.config.accounting import BudgetLimits
from crossway.store.accounting import (
    GROUPS,
    SCHEMA_VERSION,
    Principal,
    PrincipalKind,
    SchemaTooNew,
    SpendRecord,
    StoreBroken,
    VirtualKey,
)

_T = TypeVar("_T")

_SPEND_ROW: Final = operator.attrgetter(
    "id", "ts", "request_id", "trace_id", "key_id", "user", "team", "model", "provider",
    "route", "api", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost",
)  # fmt: skip
"""A spend record as the `spend` table's row (in C, not attribute by attribute)."""
_ID_CHUNK: Final = 500
"""Record ids looked up per query when a batch is written (below SQLite's variable limit)."""
BUSY_TIMEOUT_MS: Final = 5000
"""How long a write waits for another process's write to end before it fails."""

MIGRATIONS: Final[list[tuple[str, ...]]] = [
    # 0 -> 1: the first layout.
    (
        "CREATE TABLE keys ("
        " id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, display TEXT NOT NULL,"
        " name TEXT, user TEXT, team TEXT,"
        " models TEXT NOT NULL DEFAULT '[]', mcp_tools TEXT NOT NULL DEFAULT '[]',"
        " agents TEXT NOT NULL DEFAULT '[]', metadata TEXT NOT NULL DEFAULT '{}',"
        " max_budget REAL, budget_period TEXT NOT NULL DEFAULT 'total', rpm INTEGER,"
        " tpm INTEGER, expires_at REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
        " revoked_at REAL)",
        "CREATE INDEX keys_by_user ON keys (user)",
        "CREATE INDEX keys_by_team ON keys (team)",
        "CREATE TABLE principals ("
        " kind TEXT NOT NULL, id TEXT NOT NULL,"
        " max_budget REAL, budget_period TEXT NOT NULL DEFAULT 'total', rpm INTEGER,"
        " tpm INTEGER, metadata TEXT NOT NULL DEFAULT '{}', updated_at REAL NOT NULL,"
        " PRIMARY KEY (kind, id))",
        "CREATE TABLE spend ("
        " id TEXT PRIMARY KEY, ts REAL NOT NULL, request_id TEXT NOT NULL DEFAULT '',"
        " trace_id TEXT NOT NULL DEFAULT '', key_id TEXT, user TEXT, team TEXT, model TEXT,"
        " provider TEXT, route TEXT, api TEXT,"
        " input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,"
        " cached_tokens INTEGER NOT NULL DEFAULT 0,"
        " reasoning_tokens INTEGER NOT NULL DEFAULT 0, cost REAL NOT NULL)",
        "CREATE INDEX spend_by_ts ON spend (ts)",
        "CREATE TABLE spend_totals ("
        " scope TEXT NOT NULL, period TEXT NOT NULL, cost REAL NOT NULL DEFAULT 0,"
        " PRIMARY KEY (scope, period)) WITHOUT ROWID",
        "CREATE TABLE alerts ("
        " scope TEXT NOT NULL, period TEXT NOT NULL, claimed_at REAL NOT NULL,"
        " PRIMARY KEY (scope, period)) WITHOUT ROWID",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO meta (name, value) VALUES ('version', 0)",
    ),
]
"""`MIGRATIONS[n]`: the statements that take the layout from version `n` to `n + 1`."""

_GROUP_COLUMNS: Final[Mapping[str, str]] = {
    "key": "key_id",
    "user": "user",
    "team": "team",
    "model": "model",
    "provider": "provider",
    "route": "route",
}
"""Spend columns by the group names of `GROUPS` (the only names that reach SQL)."""

_KEY_COLUMNS: Final = (
    "id, digest, display, name, user, team, models, mcp_tools, agents, metadata,"
    " max_budget, budget_period, rpm, tpm, expires_at, created_at, updated_at, revoked_at"
)
_PRINCIPAL_COLUMNS: Final = "kind, id, max_budget, budget_period, rpm, tpm, metadata, updated_at"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _limits(max_budget: Any, budget_period: Any, rpm: Any, tpm: Any) -> BudgetLimits:
    return BudgetLimits.model_validate(
        {"max_budget": max_budget, "budget_period": budget_period, "rpm": rpm, "tpm": tpm}
    )


def _limit_values(limits: BudgetLimits) -> tuple[Any, ...]:
    return (limits.max_budget, limits.budget_period, limits.rpm, limits.tpm)


def _row_key(row: Sequence[Any]) -> VirtualKey:
    return VirtualKey(
        id=row[0],
        digest=row[1],
        display=row[2],
        name=row[3],
        user=row[4],
        team=row[5],
        models=tuple(orjson.loads(row[6])),
        mcp_tools=tuple(orjson.loads(row[7])),
        agents=tuple(orjson.loads(row[8])),
        metadata=orjson.loads(row[9]),
        limits=_limits(row[10], row[11], row[12], row[13]),
        expires_at=row[14],
        created_at=row[15],
        updated_at=row[16],
        revoked_at=row[17],
    )


def _row_principal(row: Sequence[Any]) -> Principal:
    return Principal(
        kind=row[0],
        id=row[1],
        limits=_limits(row[2], row[3], row[4], row[5]),
        metadata=orjson.loads(row[6]),
        updated_at=row[7],
    )


class _AccountingFile:
    """Blocking access to the file; only ever called from the store's one thread."""

    def __init__(self, path: Path, max_pages: int | None) -> None:
        self.path = path
        self.max_pages = max_pages
        self._conn: sqlite3.Connection | None = None

    def db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                self._migrate(conn)
                if self.max_pages is not None:
                    conn.execute(f"PRAGMA max_page_count={int(self.max_pages)}")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        target = SCHEMA_VERSION
        if len(MIGRATIONS) < target:
            raise AssertionError(f"no migration to schema version {target}")
        while True:
            # The version is read again under the write lock: of several processes opening
            # an old file at once, one migrates and the others see the result.
            with _write(conn):
                current = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if current > target:
                    raise SchemaTooNew(
                        f"accounting store {self.path} has schema version {current}, newer than"
                        f" this Crossway's {target}: it was written by a newer Crossway"
                        " (upgrade this one, or point accounting.store.path at another file)"
                    )
                if current == target:
                    return
                for statement in MIGRATIONS[current]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={current + 1}")

    def call(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `op` on the connection; any SQLite or file error becomes `StoreBroken`."""
        try:
            return op(self.db())
        except StoreBroken:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreBroken(str(exc)) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed whole, or rolled back whole."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def _read(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: every query in it sees the same snapshot."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _bump_version(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'version'")


# The operations: each takes the connection and runs on the store's thread.


def _put_key(conn: sqlite3.Connection, key: VirtualKey) -> None:
    with _write(conn):
        row = conn.execute("SELECT id FROM keys WHERE digest = ?", (key.digest,)).fetchone()
        if row is not None and row[0] != key.id:
            raise ValueError("another key has this digest")
        conn.execute(
            f"INSERT INTO keys ({_KEY_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET digest = excluded.digest,"
            " display = excluded.display, name = excluded.name, user = excluded.user,"
            " team = excluded.team, models = excluded.models, mcp_tools = excluded.mcp_tools,"
            " agents = excluded.agents, metadata = excluded.metadata,"
            " max_budget = excluded.max_budget, budget_period = excluded.budget_period,"
            " rpm = excluded.rpm, tpm = excluded.tpm, expires_at = excluded.expires_at,"
            " created_at = excluded.created_at, updated_at = excluded.updated_at,"
            " revoked_at = excluded.revoked_at",
            (
                key.id,
                key.digest,
                key.display,
                key.name,
                key.user,
                key.team,
                _json(list(key.models)),
                _json(list(key.mcp_tools)),
                _json(list(key.agents)),
                _json(dict(key.metadata)),
                *_limit_values(key.limits),
                key.expires_at,
                key.created_at,
                key.updated_at,
                key.revoked_at,
            ),
        )
        _bump_version(conn)


def _get_key(conn: sqlite3.Connection, column: str, value: str) -> VirtualKey | None:
    row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE {column} = ?", (value,)).fetchone()
    return None if row is None else _row_key(row)


def _list_keys(
    conn: sqlite3.Connection, user: str | None, team: str | None, include_revoked: bool
) -> list[VirtualKey]:
    where: list[str] = ["1"]
    args: list[Any] = []
    if user is not None:
        where.append("user = ?")
        args.append(user)
    if team is not None:
        where.append("team = ?")
        args.append(team)
    if not include_revoked:
        where.append("revoked_at IS NULL")
    rows = conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM keys WHERE {' AND '.join(where)} ORDER BY created_at, rowid",
        args,
    ).fetchall()
    return [_row_key(row) for row in rows]


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()[0])


def _put_principal(conn: sqlite3.Connection, principal: Principal) -> None:
    with _write(conn):
        conn.execute(
            f"INSERT OR REPLACE INTO principals ({_PRINCIPAL_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                principal.kind,
                principal.id,
                *_limit_values(principal.limits),
                _json(dict(principal.metadata)),
                principal.updated_at,
            ),
        )
        _bump_version(conn)


def _get_principal(
    conn: sqlite3.Connection, kind: PrincipalKind, principal_id: str
) -> Principal | None:
    row = conn.execute(
        f"SELECT {_PRINCIPAL_COLUMNS} FROM principals WHERE kind = ? AND id = ?",
        (kind, principal_id),
    ).fetchone()
    return None if row is None else _row_principal(row)


def _list_principals(conn: sqlite3.Connection, kind: PrincipalKind) -> list[Principal]:
    rows = conn.execute(
        f"SELECT {_PRINCIPAL_COLUMNS} FROM principals WHERE kind = ? ORDER BY id", (kind,)
    ).fetchall()
    return [_row_principal(row) for row in rows]


def _delete_principal(conn: sqlite3.Connection, kind: PrincipalKind, principal_id: str) -> bool:
    with _write(conn):
        deleted = conn.execute(
            "DELETE FROM principals WHERE kind = ? AND id = ?", (kind, principal_id)
        ).rowcount
        if deleted:
            _bump_version(conn)
    return bool(deleted)


def _record_spend(conn: sqlite3.Connection, records: Sequence[SpendRecord]) -> int:
    # Ids are random: a record already written only comes back in a retried batch. One indexed
    # lookup per chunk finds those; the rest go in with one `executemany` (SQLite's C loop).
    ids = [r.id for r in records]
    with _write(conn):
        seen: set[str] = set()
        for i in range(0, len(ids), _ID_CHUNK):
            chunk = ids[i : i + _ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            seen.update(
                row[0] for row in conn.execute(f"SELECT id FROM spend WHERE id IN ({marks})", chunk)
            )
        fresh: list[SpendRecord] = []
        for r in records:
            if r.id not in seen:  # and not twice within this batch either
                seen.add(r.id)
                fresh.append(r)
        conn.executemany(
            "INSERT INTO spend (id, ts, request_id, trace_id, key_id, user, team,"
            " model, provider, route, api, input_tokens, output_tokens, cached_tokens,"
            " reasoning_tokens, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            map(_SPEND_ROW, fresh),
        )
        added: dict[tuple[str, str], float] = {}
        for r in fresh:
            for scope in r.scopes():
                for period in r.periods:
                    added[scope, period] = added.get((scope, period), 0.0) + r.cost
        conn.executemany(
            "INSERT INTO spend_totals (scope, period, cost) VALUES (?, ?, ?)"
            " ON CONFLICT (scope, period) DO UPDATE SET cost = cost + excluded.cost",
            [(scope, period, cost) for (scope, period), cost in added.items()],
        )
    return len(fresh)


def _period_spend(conn: sqlite3.Connection, scopes: Sequence[tuple[str, str]]) -> list[float]:
    out = []
    with _read(conn):
        for scope, period in scopes:
            row = conn.execute(
                "SELECT cost FROM spend_totals WHERE scope = ? AND period = ?", (scope, period)
            ).fetchone()
            out.append(0.0 if row is None else float(row[0]))
    return out


def _spend_report(
    conn: sqlite3.Connection,
    group_by: Sequence[str],
    start: float | None,
    end: float | None,
    filters: Mapping[str, str],
) -> list[dict[str, Any]]:
    for name in (*group_by, *filters):
        if name not in _GROUP_COLUMNS:
            raise ValueError(f"unknown spend group {name!r} (use one of {', '.join(GROUPS)})")
    groups = list(dict.fromkeys(group_by))
    columns = [_GROUP_COLUMNS[g] for g in groups]
    where: list[str] = ["1"]
    args: list[Any] = []
    if start is not None:
        where.append("ts >= ?")
        args.append(start)
    if end is not None:
        where.append("ts < ?")
        args.append(end)
    for name, value in filters.items():
        where.append(f"{_GROUP_COLUMNS[name]} = ?")
        args.append(value)
    select = ", ".join(
        [*columns, "count(*)", "total(input_tokens)", "total(output_tokens)", "total(cost)"]
    )
    group = f" GROUP BY {', '.join(columns)}" if columns else ""
    order = ", ".join([f"{len(columns) + 4} DESC", *columns])  # cost, then the groups
    rows = conn.execute(
        f"SELECT {select} FROM spend WHERE {' AND '.join(where)}{group} ORDER BY {order}",
        args,
    ).fetchall()
    report = []
    for row in rows:
        requests = int(row[len(groups)])
        if not requests:
            continue  # no GROUP BY and nothing in range: one row of zeros
        entry: dict[str, Any] = dict(zip(groups, row, strict=False))
        entry["requests"] = requests
        entry["input_tokens"] = int(row[len(groups) + 1])
        entry["output_tokens"] = int(row[len(groups) + 2])
        entry["cost"] = float(row[len(groups) + 3])
        report.append(entry)
    return report


def _claim_alert(conn: sqlite3.Connection, scope: str, period: str) -> bool:
    with _write(conn):
        claimed = conn.execute(
            "INSERT OR IGNORE INTO alerts (scope, period, claimed_at) VALUES (?, ?, ?)",
            (scope, period, time.time()),
        ).rowcount
    return bool(claimed)


class SqliteAccounting:
    """Keys, principals and spend in a SQLite file (WAL), shared by every process of one
    machine.

    One connection, used only by one worker thread: nothing blocks the event loop, and calls
    from many tasks queue on that thread. `max_pages` caps the file's size in pages (for tests
    and quotas): a write that would grow it further fails like a full disk does.
    """

    def __init__(self, path: Path, *, max_pages: int | None = None) -> None:
        self.path = path
        self._file = _AccountingFile(path, max_pages)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crossway-accounting")
        self._closed = False

    async def _run(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._closed:
            raise StoreBroken("the accounting store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._file.call, op)

    async def open(self) -> None:
        await self._run(lambda conn: None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._file.close)
        self._thread.shutdown(wait=False)

    # -- keys -----------------------------------------------------------------------------------

    async def put_key(self, key: VirtualKey) -> None:
        await self._run(lambda conn: _put_key(conn, key))

    async def get_key(self, key_id: str) -> VirtualKey | None:
        return await self._run(lambda conn: _get_key(conn, "id", key_id))

    async def key_by_digest(self, key_digest: str) -> VirtualKey | None:
        return await self._run(lambda conn: _get_key(conn, "digest", key_digest))

    async def list_keys(
        self, *, user: str | None = None, team: str | None = None, include_revoked: bool = False
    ) -> list[VirtualKey]:
        return await self._run(lambda conn: _list_keys(conn, user, team, include_revoked))

    async def version(self) -> int:
        return await self._run(_version)

    # -- principals -----------------------------------------------------------------------------

    async def put_principal(self, principal: Principal) -> None:
        await self._run(lambda conn: _put_principal(conn, principal))

    async def get_principal(self, kind: PrincipalKind, principal_id: str) -> Principal | None:
        return await self._run(lambda conn: _get_principal(conn, kind, principal_id))

    async def list_principals(self, kind: PrincipalKind) -> list[Principal]:
        return await self._run(lambda conn: _list_principals(conn, kind))

    async def delete_principal(self, kind: PrincipalKind, principal_id: str) -> bool:
        return await self._run(lambda conn: _delete_principal(conn, kind, principal_id))

    # -- spend ----------------------------------------------------------------------------------

    async def record_spend(self, records: Sequence[SpendRecord]) -> int:
        if not records:
            return 0
        batch = list(records)
        return await self._run(lambda conn: _record_spend(conn, batch))

    async def period_spend(self, scopes: Sequence[tuple[str, str]]) -> list[float]:
        wanted = list(scopes)
        if not wanted:
            return []
        return await self._run(lambda conn: _period_spend(conn, wanted))

    async def spend_report(
        self,
        group_by: Sequence[str],
        start: float | None,
        end: float | None,
        filters: Mapping[str, str],
    ) -> list[dict[str, Any]]:
        groups, wanted = list(group_by), dict(filters)
        return await self._run(lambda conn: _spend_report(conn, groups, start, end, wanted))

    async def claim_alert(self, scope: str, period: str) -> bool:
        return await self._run(lambda conn: _claim_alert(conn, scope, period))


__all__ = ["MIGRATIONS", "SchemaTooNew", "SqliteAccounting"]
