"""`SqliteAccounting` beyond the contract: several stores and processes on one file,
migrations, a full disk, and a kill -9 right after a write."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crossway.store import accounting_sqlite
from crossway.store.accounting import (
    SCHEMA_VERSION,
    Principal,
    SchemaTooNew,
    SpendRecord,
    StoreBroken,
    VirtualKey,
    digest,
    new_secret,
)
from crossway.store.accounting_sqlite import SqliteAccounting

T0 = 1_800_000_000.0
PERIODS = ("d2027-01-15", "w2027-01-11", "m2027-01", "total")


def record(record_id: str, cost: float = 1.0, *, key: str = "key_a", note: str = "") -> SpendRecord:
    return SpendRecord(
        id=record_id, ts=T0, cost=cost, key_id=key, team="t", request_id=note, periods=PERIODS
    )


def a_key(key_id: str = "key_a") -> VirtualKey:
    secret = new_secret()
    return VirtualKey(key_id, digest(secret), secret[:10], created_at=T0, updated_at=T0)


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_group_names_cover_the_contract() -> None:
    from crossway.store.accounting import GROUPS

    assert set(accounting_sqlite._GROUP_COLUMNS) == set(GROUPS)


# --- one file, several stores ----------------------------------------------------------------


async def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite3"
    a, b = SqliteAccounting(path), SqliteAccounting(path)
    await asyncio.gather(a.open(), b.open())  # both migrate a fresh file at once: one wins
    try:
        before = await b.version()
        key = a_key()
        await a.put_key(key)
        assert await b.version() != before
        assert await b.key_by_digest(key.digest) == key

        before = await a.version()
        await b.put_key(key.with_changes(revoked_at=T0 + 1))
        assert await a.version() != before
        found = await a.get_key(key.id)
        assert found is not None and found.status() == "revoked"

        before = await a.version()
        await b.put_principal(Principal("team", "t"))
        assert await a.version() != before
        assert await a.get_principal("team", "t") == Principal("team", "t")

        written = await asyncio.gather(
            a.record_spend([record(f"a{i}") for i in range(50)]),
            b.record_spend([record(f"b{i}") for i in range(50)]),
            b.record_spend([record(f"a{i}") for i in range(50)]),  # a's again, through b
        )
        assert sorted(written) == [0, 50, 50]  # each batch is one transaction
        assert await a.period_spend([("team:t", "total")]) == [100.0]
        assert await b.period_spend([("key:key_a", "m2027-01")]) == [100.0]
    finally:
        await a.close()
        await b.close()
    assert user_version(path) == SCHEMA_VERSION


_WRITER: str = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from crossway.store.accounting import SpendRecord, VirtualKey
    from crossway.store.accounting_sqlite import SqliteAccounting

    async def main(path, name, batches, size):
        store = SqliteAccounting(Path(path))
        await store.put_key(VirtualKey("key_" + name, "digest-" + name, "sk-cw-" + name))
        written = 0
        for b in range(batches):
            written += await store.record_spend([
                SpendRecord(f"{name}-{b}-{i}", 1.8e9, 0.25, key_id="key_" + name, team="t",
                            periods=("total",))
                for i in range(size)
            ])
        print(written, flush=True)
        if sys.argv[5] == "wait":
            sys.stdin.read()  # killed here, the store still open
        else:
            await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


def _writer(path: Path, name: str, batches: int, size: int, then: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), name, str(batches), str(size), then],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def test_processes_write_one_file_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite3"
    procs = [_writer(path, name, 20, 10, "close") for name in ("p1", "p2", "p3")]
    outputs = [await asyncio.to_thread(p.communicate) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert [int(out) for out, _ in outputs] == [200, 200, 200]
    store = SqliteAccounting(path)
    try:
        assert await store.period_spend(
            [("team:t", "total"), ("key:key_p1", "total"), ("key:key_p3", "total")]
        ) == [150.0, 50.0, 50.0]
        assert sorted(k.id for k in await store.list_keys()) == ["key_p1", "key_p2", "key_p3"]
    finally:
        await store.close()


def test_kill_9_after_a_write_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite3"
    proc = _writer(path, "k", 3, 7, "wait")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "21"  # acknowledged: now kill it
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    async def check() -> None:
        store = SqliteAccounting(path)
        try:
            assert await store.period_spend([("key:key_k", "total")]) == [21 * 0.25]
            [row] = await store.spend_report([], None, None, {})
            assert row["requests"] == 21
            assert await store.get_key("key_k") is not None
        finally:
            await store.close()

    asyncio.run(check())


# --- migrations ------------------------------------------------------------------------------


async def test_a_version_0_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite3"
    with sqlite3.connect(path) as conn:  # an existing file without our layout
        conn.execute("CREATE TABLE unrelated (x)")
    assert user_version(path) == 0
    store = SqliteAccounting(path)
    await store.open()
    await store.open()  # idempotent
    try:
        await store.put_key(a_key())
    finally:
        await store.close()
    assert user_version(path) == SCHEMA_VERSION
    assert {"keys", "principals", "spend", "spend_totals", "alerts", "meta", "unrelated"} <= (
        tables(path)
    )


async def test_an_older_layout_is_migrated_and_keeps_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "acc.sqlite3"
    old = SqliteAccounting(path)
    key = a_key()
    await old.put_key(key)
    await old.record_spend([record("r1", 2.0)])
    await old.close()

    # This code's next layout: one more migration.
    migration = ("ALTER TABLE keys ADD COLUMN note TEXT", "CREATE TABLE extra (x)")
    monkeypatch.setattr(accounting_sqlite, "MIGRATIONS", [*accounting_sqlite.MIGRATIONS, migration])
    monkeypatch.setattr(accounting_sqlite, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    new = SqliteAccounting(path)
    try:
        await new.open()
        assert user_version(path) == SCHEMA_VERSION + 1
        assert "extra" in tables(path)
        assert await new.get_key(key.id) == key
        assert await new.period_spend([("key:key_a", "total")]) == [2.0]
    finally:
        await new.close()


async def test_a_newer_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    store = SqliteAccounting(path)
    try:
        with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
            await store.open()
        with pytest.raises(StoreBroken, match="newer"):  # every call, not only open
            await store.version()
    finally:
        await store.close()
    assert user_version(path) == SCHEMA_VERSION + 1
    assert tables(path) == set()  # nothing written into a layout it does not know


# --- failures --------------------------------------------------------------------------------


async def test_a_full_disk_writes_nothing_then_everything(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite3"
    first = SqliteAccounting(path)
    await first.record_spend([record("small", 1.0)])
    await first.close()
    with sqlite3.connect(path) as conn:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])

    # Room for two more pages: the batch (~100 KB) does not fit.
    batch = [record(f"big{i}", 0.5, note="x" * 2000) for i in range(50)]
    full = SqliteAccounting(path, max_pages=pages + 2)
    try:
        with pytest.raises(StoreBroken, match="full"):
            await full.record_spend(batch)
        assert await full.period_spend([("key:key_a", "total")]) == [1.0]
        assert await full.spend_report([], None, None, {}) == [
            {"requests": 1, "input_tokens": 0, "output_tokens": 0, "cost": 1.0}
        ]
        assert await full.claim_alert("key:key_a", "total")  # small writes still fit
    finally:
        await full.close()
    assert rows(path, "spend") == 1

    roomy = SqliteAccounting(path)
    try:
        assert await roomy.record_spend(batch) == 50
        assert await roomy.period_spend([("key:key_a", "total"), ("team:t", "m2027-01")]) == [
            26.0,
            26.0,
        ]
    finally:
        await roomy.close()


async def test_a_file_that_is_not_a_store_is_store_broken(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    for path in (garbage, directory):
        broken = SqliteAccounting(path)
        try:
            with pytest.raises(StoreBroken):
                await broken.record_spend([record("r1")])
            with pytest.raises(StoreBroken):
                await broken.version()
        finally:
            await broken.close()


async def test_unknown_groups_are_refused(tmp_path: Path) -> None:
    store = SqliteAccounting(tmp_path / "acc.sqlite3")
    try:
        with pytest.raises(ValueError, match="unknown spend group"):
            await store.spend_report(["cost; DROP TABLE spend"], None, None, {})
        with pytest.raises(ValueError, match="unknown spend group"):
            await store.spend_report([], None, None, {"api": "x"})
    finally:
        await store.close()


async def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = SqliteAccounting(tmp_path / "acc.sqlite3")
    await store.open()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreBroken, match="closed"):
        await store.version()


async def test_the_version_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "acc.sqlite3"
    store = SqliteAccounting(path)
    await store.put_key(a_key())
    version = await store.version()
    await store.close()
    again = SqliteAccounting(path)
    try:
        assert await again.version() == version
    finally:
        await again.close()
