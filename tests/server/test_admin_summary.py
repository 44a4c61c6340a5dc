"""The admin API's `GET /summary` and `GET /summary/guards` through a real HTTP server (uvicorn)
over a real request log file: the numbers per bucket and per route/model, parameters checked by
name, the token rule, the request log off, answers kept up to date as entries arrive and after
a prune, never the matched text, and the time on a 100,000-entry store."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from crossway.store.request_log_sqlite import RequestLogFile
from tests.helpers import serve_admin
from tests.ui.logstore import fill_request_log

TOKEN = "summary-test-token"
EMAIL = "bob.secret@example.net"
BUDGET_MS = 300.0


def config_text(store: Path, *, enabled: bool = True, token: bool = True) -> str:
    lines = []
    if token:
        lines.append(f"admin:\n  token: {TOKEN}\n")
    lines.append(f"telemetry:\n  request_log:\n    enabled: {str(enabled).lower()}\n")
    lines.append(f"    path: {store}\n")
    lines.append("routes: []\n")
    return "".join(lines)


@asynccontextmanager
async def served(tmp_path: Path, text: str) -> AsyncIterator[str]:
    """The admin app under uvicorn on a free loopback port."""
    path = tmp_path / "crossway.yaml"
    path.write_text(text)
    async with serve_admin(path) as base:
        yield base


async def get(url: str, path: str, *, token: str | None = TOKEN, **headers: str) -> tuple[int, Any]:
    if token:
        headers["authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.get(url + path, headers=headers) as r:
        return r.status, orjson.loads(await r.read())


def row(when: float, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": when,
        "route": "llm",
        "kind": "llm",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "duration_ms": 40.0,
        "model": "m1",
        "cost": 0.01,
        "usage": '{"input_tokens": 7, "output_tokens": 3}',
        "truncated": 0,
    }
    out.update(fields)
    return out


def write(store: Path, rows: list[dict[str, Any]]) -> None:
    log = RequestLogFile(store)
    try:
        log.insert(rows)
    finally:
        log.close()


async def test_summary_numbers(tmp_path: Path) -> None:
    store = tmp_path / "log.sqlite3"
    start = 1_800_000_000.0
    write(
        store,
        [
            row(start + 10, duration_ms=40.0),
            row(start + 20, duration_ms=40.0, status=429),
            row(start + 70, duration_ms=900.0, status=502, model="m2"),
            row(
                start + 80, route="mcp", kind="mcp", tool="echo", model=None, cost=None, usage=None
            ),
        ],
    )
    async with served(tmp_path, config_text(store)) as url:
        status, body = await get(url, f"/summary?start={start}&end={start + 120}&bucket=60")
        assert status == 200, body
        assert (body["start"], body["end"], body["bucket"]) == (start, start + 120, 60)
        totals = body["totals"]
        assert totals["requests"] == 4 and totals["errors"] == 1 and totals["client_errors"] == 1
        assert (totals["tokens_in"], totals["tokens_out"]) == (21, 9)
        assert totals["cost"] == pytest.approx(0.03)
        first, second = body["buckets"]
        assert (first["start"], first["requests"], first["client_errors"]) == (start, 2, 1)
        assert 30 <= first["p50_ms"] <= 50  # 40 ms lies in the (30, 50] bin
        assert (second["requests"], second["errors"]) == (2, 1)
        assert 700 < second["p99_ms"] <= 1000
        by = body["by"]
        assert [(r["name"], r["requests"]) for r in by["route"]] == [("llm", 3), ("mcp", 1)]
        assert [r["name"] for r in by["model"]] == ["m1", "m2"]
        assert [r["name"] for r in by["tool"]] == ["echo"] and by["agent"] == []
        # Filters and top, as /logs takes them.
        status, only = await get(url, f"/summary?start={start}&end={start + 120}&model=m2&top=1")
        assert status == 200 and only["totals"]["requests"] == 1
        assert len(only["by"]["route"]) == 1
        # An open window (no end) is whole buckets ending after now.
        status, recent = await get(url, "/summary?bucket=60")
        assert status == 200 and recent["start"] % 60 == 0 and recent["end"] > time.time()
        assert len(recent["buckets"]) == (recent["end"] - recent["start"]) / 60


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("foo=1", "foo"),
        ("bucket=0.5", "bucket"),
        ("bucket=abc", "bucket"),
        ("start=0&end=100000&bucket=1", "bucket"),
        ("top=0", "top"),
        ("top=1000", "top"),
        ("start=yesterday", "start"),
        ("start=10&end=5", "end"),
        ("status=9xx", "status"),
        ("model=a&model=b", "model"),
    ],
)
async def test_bad_parameters_are_named(tmp_path: Path, query: str, param: str) -> None:
    async with served(tmp_path, config_text(tmp_path / "log.sqlite3")) as url:
        status, body = await get(url, "/summary?" + query)
        assert status == 400, body
        assert body["error"]["param"] == param


async def test_token_rule_and_the_log_off(tmp_path: Path) -> None:
    store = tmp_path / "log.sqlite3"
    async with served(tmp_path, config_text(store)) as url:
        for path in ("/summary", "/summary/guards"):
            assert (await get(url, path, token=None))[0] == 401
            assert (await get(url, path, token="wrong"))[0] == 401
            status, body = await get(url, path)
            assert status == 200, body  # no file yet: empty, not an error
        assert (await get(url, "/summary"))[1]["totals"]["requests"] == 0
    async with served(tmp_path, config_text(store, token=False)) as url:
        assert (await get(url, "/summary", token=None))[0] == 200
        status, body = await get(url, "/summary", token=None, origin="http://evil.example")
        assert status == 403, body
    async with served(tmp_path, config_text(store, enabled=False)) as url:
        status, body = await get(url, "/summary")
        assert status == 409 and body["error"]["code"] == "request_log_off"
        assert "telemetry.request_log.enabled" in body["error"]["message"]
        status, body = await get(url, "/summary/guards")
        assert status == 200 and body["request_log"]["enabled"] is False
        assert "telemetry.request_log.enabled" in body["request_log"]["message"]
        assert isinstance(body["metrics"], list) and body["decisions"] == []


async def test_answers_follow_new_entries_and_prunes(tmp_path: Path) -> None:
    store = tmp_path / "log.sqlite3"
    now = time.time()
    write(store, [row(now - 30), row(now - 20)])
    async with served(tmp_path, config_text(store)) as url:
        assert (await get(url, "/summary"))[1]["totals"]["requests"] == 2
        write(store, [row(now - 10, status=500), row(now - 5)])  # written after the first call
        totals = (await get(url, "/summary"))[1]["totals"]
        assert (totals["requests"], totals["errors"]) == (4, 1)
        assert (await get(url, "/summary"))[1]["totals"]["requests"] == 4  # nothing twice
        log = RequestLogFile(store)
        try:
            log.prune(max_rows=1, older_than=0)
        finally:
            log.close()
        assert (await get(url, "/summary"))[1]["totals"]["requests"] == 1


async def test_guards_names_and_counts_never_the_text(tmp_path: Path) -> None:
    store = tmp_path / "log.sqlite3"
    now = time.time()
    mask = {"guard": "pii", "detector": "email", "action": "mask", "direction": "response"}
    write(
        store,
        [
            row(
                now - 20,
                request=f'{{"text": "mail {EMAIL}"}}',
                guards=orjson.dumps([{**mask, "count": 2}]).decode(),
            ),
            row(now - 10, key="k9", guards=orjson.dumps([{**mask, "count": 1}]).decode()),
            row(now - 5),
        ],
    )
    async with served(tmp_path, config_text(store)) as url:
        status, body = await get(url, "/summary/guards")
        assert status == 200, body
        assert body["decisions"] == [{**mask, "findings": 3, "requests": 2}]
        assert [e["guards"][0]["count"] for e in body["recent"]] == [1, 2]
        assert body["request_log"] == {"enabled": True, "message": None}
        assert EMAIL not in orjson.dumps(body).decode()
        status, limited = await get(url, "/summary/guards?key=k9&limit=1")
        assert status == 200 and len(limited["recent"]) == 1
        assert limited["decisions"][0]["findings"] == 1


async def test_time_on_100k_entries(tmp_path: Path) -> None:
    store = tmp_path / "log.sqlite3"
    fill_request_log(store, 100_000)
    now = time.time()
    async with served(tmp_path, config_text(store)) as url:
        cold: dict[str, float] = {}
        warm: dict[str, float] = {}
        for name, span in (("1h", 3600), ("24h", 86400), ("7d", 7 * 86400 + 60)):
            for path in (f"/summary?start={now - span}", f"/summary/guards?start={now - span}"):
                times = []
                for _ in range(6):
                    started = time.perf_counter()
                    status, body = await get(url, path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert status == 200, body
                key = name + (" guards" if "guards" in path else "")
                cold[key], warm[key] = times[0], statistics.median(times[1:])
            if name == "7d":
                assert body["decisions"][0]["requests"] > 4000
        status, body = await get(url, f"/summary?start={now - 7 * 86400 - 60}")
        assert body["totals"]["requests"] == 100_000
    print("summary first call (ms):", {k: round(v) for k, v in cold.items()})
    print("summary median after (ms):", {k: round(v, 1) for k, v in warm.items()})
    slow = {k: v for k, v in warm.items() if v >= BUDGET_MS}
    assert not slow, f"over {BUDGET_MS} ms: {slow}"


def test_kept_aggregates_slide_with_the_window(tmp_path: Path) -> None:
    """An aligned window that moved on fetches only the time it newly covers and the entries
    written since, and answers what a fresh computation answers."""
    from dataclasses import replace

    from crossway.server.admin_summary import Rollups
    from crossway.store.request_log_sqlite import SUM_FIELDS, Query

    store_path = tmp_path / "log.sqlite3"
    write(store_path, [row(float(t)) for t in range(0, 600, 7)])
    log = RequestLogFile(store_path)
    calls: list[tuple[float, float, tuple[int, int]]] = []

    def fetch(start: float, end: float, ids: tuple[int, int]) -> list[dict[str, Any]]:
        calls.append((start, end, ids))
        return log.rollup(replace(Query(), start=start, end=end), 0.0, 60.0, ids)

    group = ("bucket", "bin", "route", "model", "tool", "agent")

    def first(start: float) -> int:
        return round(start / 60)

    try:
        kept = Rollups()
        kept.rows("k", log.id_range(), (0.0, 600.0), fetch, group, SUM_FIELDS, first)
        write(store_path, [row(float(t)) for t in range(600, 720, 5)] + [row(300.0)])
        calls.clear()
        slid = kept.rows("k", log.id_range(), (120.0, 720.0), fetch, group, SUM_FIELDS, first)
        low, high = log.id_range()
        # Only the new minute with the old ids, then every new id over what is covered.
        assert calls == [(600.0, 720.0, (low - 1, 86)), (0.0, 720.0, (86, high))]
        fresh = Rollups().rows("f", log.id_range(), (120.0, 720.0), fetch, group, SUM_FIELDS)
        assert slid == fresh
        assert min(k[0] for k in slid) == 2  # the buckets the window left are gone
    finally:
        log.close()


def test_a_long_scan_cut_in_pieces_adds_up_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window of many buckets is scanned in pieces at once (one per core): the same sums as
    one scan, a bucket cut between two pieces included."""
    from crossway.server import admin_summary
    from crossway.store.request_log_sqlite import SUM_FIELDS, Query

    store_path = tmp_path / "log.sqlite3"
    write(store_path, [row(float(t), duration_ms=float(t % 97)) for t in range(0, 7250, 3)])
    monkeypatch.setattr(admin_summary.os, "cpu_count", lambda: 3)
    window = admin_summary.Window(Query(start=0.0, end=7250.0), 0.0, 7250.0, 100.0)
    group = ("bucket", "bin", "route", "model", "tool", "agent")
    log = RequestLogFile(store_path)
    try:
        whole = log.rollup(window.query, 0.0, 100.0, (0, 10**6))
        pieces = admin_summary.parallel_rollup(log, store_path, window, (0.0, 7250.0), (0, 10**6))
    finally:
        log.close()
    assert len(pieces) > len(whole)  # pieces of 2416.7 s: buckets 24 and 48 are cut in two

    def merged(rows: list[dict[str, Any]]) -> dict[Any, list[float]]:
        return admin_summary.Rollups().rows(
            "k", (0, 10**6), (0.0, 7250.0), lambda *_: rows, group, SUM_FIELDS
        )

    cut, one = merged(pieces), merged(whole)
    assert cut.keys() == one.keys()
    for key, sums in one.items():
        assert cut[key] == pytest.approx(sums)  # the same sums, added in another order
