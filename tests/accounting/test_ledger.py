"""The ledger in one process: spend survives a failing store (a full disk) and is written once
when it recovers; budget totals are read from the store at most once per refresh interval; a
soft-budget alert fires once across two processes; `/readyz` reports a failing store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from crossway.config.accounting import AccountingConfig, BudgetLimits
from crossway.errors import BudgetExceeded
from crossway.policy.ledger import Budget, Ledger
from crossway.store.accounting import SpendRecord, new_id
from crossway.store.accounting_sqlite import SqliteAccounting


class CountingStore(SqliteAccounting):
    """The SQLite store, counting the reads of budget totals."""

    def __init__(self, path: Path, **kw: Any) -> None:
        super().__init__(path, **kw)
        self.period_reads = 0

    async def period_spend(self, scopes: Any) -> list[float]:
        self.period_reads += 1
        return await super().period_spend(scopes)


def config(**kw: Any) -> AccountingConfig:
    base: dict[str, Any] = {"flush_interval": 60, "refresh_interval": 0.2, "key_poll_interval": 10}
    return AccountingConfig.model_validate({**base, **kw})


def record(cost: float, team: str = "t") -> SpendRecord:
    return SpendRecord(id=new_id("sp"), ts=time.time(), cost=cost, team=team, model="m")


async def test_full_disk_keeps_spend_queued_and_writes_it_once_later(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    full = SqliteAccounting(path, max_pages=1)  # nothing fits: a full disk
    ledger = Ledger(config(spend_queue_size=100), full)
    await ledger.acquire()
    try:
        assert ledger.health()["ok"]
        for _ in range(100):
            ledger.record(record(0.01))
        assert not await ledger.flush()
        health = ledger.health()
        assert not health["ok"] and "full" in health["error"]
        assert health["queued_spend"] == 100
        assert not ledger.accepting()  # new calls are refused rather than unrecorded
        # still counted against the budget from memory
        assert await ledger.spent("team:t", "total") == pytest.approx(1.0)
        await full.close()
        ledger.store = SqliteAccounting(path)  # the disk has room again
        await ledger.store.open()
        assert await ledger.flush()
        assert ledger.health() == {"ok": True, "error": None, "queued_spend": 0}
        assert await ledger.flush()  # nothing left: nothing written twice
        (total,) = await ledger.store.period_spend([("team:t", "total")])
        assert total == pytest.approx(1.0)
        rows = await ledger.store.spend_report(["team"], None, None, {})
        assert rows[0]["requests"] == 100
    finally:
        await ledger.release()


async def test_budget_totals_are_read_once_per_interval(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "b.sqlite3")
    cfg = config(refresh_interval=0.3)
    ledger = Ledger(cfg, store)
    await ledger.acquire()
    try:
        budget = Budget("team:t", BudgetLimits(max_budget=1.0))
        for _ in range(500):
            await ledger.check_budgets([budget])
        assert store.period_reads == 1  # the first check only
        await asyncio.sleep(0.35)  # one refresh interval
        for _ in range(500):
            await ledger.check_budgets([budget])
        await asyncio.sleep(0.05)  # the background refresh runs
        assert store.period_reads == 2
        # spend of this process counts at once, before any flush
        ledger.record(record(1.5))
        with pytest.raises(BudgetExceeded) as info:
            await ledger.check_budgets([budget])
        assert info.value.code == "budget_exceeded"
        assert info.value.detail["remaining"] == 0
        # after the flush the store has it, and it is not counted twice
        assert await ledger.flush()
        assert await ledger.spent("team:t", "total") == pytest.approx(1.5)
        await asyncio.sleep(0.35)
        await ledger.spent("team:t", "total")
        await asyncio.sleep(0.05)
        assert await ledger.spent("team:t", "total") == pytest.approx(1.5)
    finally:
        await ledger.release()


async def test_spend_of_another_process_stops_this_one_within_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    cfg = config(refresh_interval=0.2)
    one, two = Ledger(cfg, SqliteAccounting(path)), Ledger(cfg, SqliteAccounting(path))
    await one.acquire()
    await two.acquire()
    try:
        budget = Budget("team:shared", BudgetLimits(max_budget=0.5, budget_period="daily"))
        await one.check_budgets([budget])
        await two.check_budgets([budget])
        two.record(record(0.6, team="shared"))
        assert await two.flush()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                await one.check_budgets([budget])
            except BudgetExceeded as exc:
                assert "retry-after" in exc.headers  # a daily budget resets
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the other process's spend never reached this one")
    finally:
        await one.release()
        await two.release()


async def test_soft_budget_alert_fires_once_across_processes(tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(orjson.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    path = tmp_path / "d.sqlite3"
    cfg = config(alerts={"fraction": 0.5, "webhook": f"http://127.0.0.1:{port}/hook"})
    one, two = Ledger(cfg, SqliteAccounting(path)), Ledger(cfg, SqliteAccounting(path))
    await one.acquire()
    await two.acquire()
    try:
        budget = Budget("team:t", BudgetLimits(max_budget=1.0, budget_period="monthly"))
        for ledger in (one, two):
            await ledger.check_budgets([budget])
            ledger.record(record(0.3), [budget])  # 0.3 < 0.5: no alert yet
        assert not got
        for ledger in (one, two):
            ledger.record(record(0.3), [budget])  # each process is now past half
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # a second (wrong) alert would have arrived by now
        assert len(got) == 1
        assert got[0]["event"] == "budget_alert" and got[0]["scope"] == "team:t"
        assert got[0]["max_budget"] == 1.0
    finally:
        await one.release()
        await two.release()
        await runner.cleanup()


async def test_readyz_names_the_failing_store(tmp_path: Path) -> None:
    import httpx
    from starlette.applications import Starlette

    from crossway.config import Config
    from crossway.policy import ledger as ledger_module
    from crossway.server.admin import ConfigView, create_admin_app
    from crossway.telemetry import metrics

    ledger = Ledger(config(), SqliteAccounting(tmp_path / "e.sqlite3", max_pages=1))
    ledger_module._LEDGERS["test-readyz"] = ledger
    await ledger.acquire()
    metrics.WORKERS_READY.inc()
    try:
        for _ in range(200):  # more than the file's free pages hold
            ledger.record(record(0.1))
        assert not await ledger.flush()
        view = ConfigView(str(tmp_path / "missing.yaml"), Config())
        app: Starlette = create_admin_app(view, None)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            r = await client.get("/readyz")
        body = r.json()
        assert r.status_code == 200  # still serving
        assert body["degraded"] is True
        assert body["stores"]["accounting"]["ok"] is False
        assert "full" in body["stores"]["accounting"]["error"]
        assert body["stores"]["accounting"]["queued_spend"] == 200
    finally:
        metrics.WORKERS_READY.dec()
        ledger_module._LEDGERS.pop("test-readyz", None)
        metrics.set_store_up("accounting", True)
        await ledger.store.close()


def test_period_names_are_cached_per_period_and_roll_over() -> None:
    from zoneinfo import ZoneInfo

    from crossway.store.accounting import period_name

    ledger = Ledger(config(timezone="Europe/Paris"), SqliteAccounting(Path("/nonexistent")))
    zone = ZoneInfo("Europe/Paris")
    start = 1_798_675_200.0  # 2026-12-31T00:00:00Z = 01:00 in Paris
    for offset in (0, 3600 * 22, 3600 * 22 + 1, 3600 * 23 - 1, 3600 * 23, 3600 * 30, -7200):
        when = start + offset
        for period in ("daily", "weekly", "monthly", "total"):
            assert ledger.period(period, when) == period_name(period, when, zone), (period, when)
    assert ledger.period("monthly", start + 3600 * 23) == "m2027-01"  # midnight in Paris
    assert ledger.period("monthly", start + 3600 * 23 - 1) == "m2026-12"
