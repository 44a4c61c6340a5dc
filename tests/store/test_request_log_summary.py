"""The request log store's aggregates (`rollup`, `guard_counts`, `guarded`, `id_range`) on a
real SQLite file with hand-made entries: sums per time bucket, latency bin and route/model/
tool/agent, tokens under both usage spellings, guard decisions by name only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from crossway.store.request_log_sqlite import LATENCY_EDGES_MS, Query, RequestLogFile

T0 = 1_800_000_000.0


def entry(when: float, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "time": when,
        "route": "llm",
        "kind": "llm",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "duration_ms": 10.0,
        "truncated": 0,
    }
    for name in ("usage", "guards"):
        if name in fields and not isinstance(fields[name], str) and fields[name] is not None:
            fields[name] = orjson.dumps(fields[name]).decode()
    row.update(fields)
    return row


@pytest.fixture
def store(tmp_path: Path) -> Any:
    log = RequestLogFile(tmp_path / "log.sqlite3")
    yield log
    log.close()


def test_rollup_sums_per_bucket_bin_and_dimension(store: RequestLogFile) -> None:
    store.insert(
        [
            # bucket 0: two LLM calls (gateway's usage names, then OpenAI's), one 4xx
            entry(
                T0 + 1,
                model="m1",
                duration_ms=5.0,
                cost=0.5,
                usage={"input_tokens": 10, "output_tokens": 4, "total_tokens": 14},
            ),
            entry(
                T0 + 2,
                model="m1",
                status=404,
                duration_ms=5.5,
                cost=0.25,
                usage={"prompt_tokens": 3, "completion_tokens": 2},
            ),
            # bucket 1: a failing tool call and an agent call without a duration
            entry(T0 + 61, route="mcp", tool="echo", status=502, duration_ms=250.0),
            entry(T0 + 62, route="a2a", agent="writer", duration_ms=None),
            # outside the window
            entry(T0 + 200, model="m1"),
        ]
    )
    rows = store.rollup(Query(start=T0, end=T0 + 120), T0, 60.0, (0, 10))
    by_key = {
        (r["bucket"], r["bin"], r["route"], r["tool"], r["agent"], r["model"]): r for r in rows
    }
    five = LATENCY_EDGES_MS.index(5)  # 5 ms is in the bin whose upper bound is 5 (inclusive)
    first = by_key[(0, five, "llm", None, None, "m1")]
    assert (first["requests"], first["client_errors"], first["tokens_in"]) == (1, 0, 10)
    second = by_key[(0, five + 1, "llm", None, None, "m1")]  # 5.5 ms: the next bin
    assert (second["client_errors"], second["tokens_in"], second["tokens_out"]) == (1, 3, 2)
    assert second["cost"] == pytest.approx(0.25)
    tool = by_key[(1, LATENCY_EDGES_MS.index(300), "mcp", "echo", None, None)]
    assert (tool["requests"], tool["errors"], tool["duration_ms_total"]) == (1, 1, 250.0)
    agent = by_key[(1, None, "a2a", None, "writer", None)]
    assert agent["requests"] == 1 and agent["tokens_in"] == 0
    assert sum(r["requests"] for r in rows) == 4
    # Only the ids asked for: (lowest excluded, highest included].
    assert sum(r["requests"] for r in store.rollup(Query(start=T0), T0, 60.0, (2, 4))) == 2


def test_filters_apply_to_aggregates(store: RequestLogFile) -> None:
    store.insert(
        [
            entry(
                T0,
                key="k1",
                model="m1",
                guards=[
                    {
                        "guard": "pii",
                        "detector": "email",
                        "action": "mask",
                        "direction": "response",
                        "count": 2,
                    }
                ],
            ),
            entry(
                T0 + 1,
                key="k2",
                model="m2",
                guards=[
                    {
                        "guard": "pii",
                        "detector": "email",
                        "action": "mask",
                        "direction": "response",
                        "count": 1,
                    }
                ],
            ),
        ]
    )
    only_k1 = Query(start=T0, end=T0 + 10, equals={"key": "k1"})
    assert [r["model"] for r in store.rollup(only_k1, T0, 10.0, (0, 9))] == ["m1"]
    # `key` is also a column of json_each: the filter still means the entry's key.
    counts = store.guard_counts(only_k1, (0, 9))
    assert counts == [
        {
            "guard": "pii",
            "detector": "email",
            "action": "mask",
            "direction": "response",
            "findings": 2,
            "requests": 1,
        }
    ]
    assert [e["key"] for e in store.guarded(only_k1, 10)] == ["k1"]


def test_guard_counts_and_guarded(store: RequestLogFile) -> None:
    block = {"guard": "pii", "detector": "credit_card", "action": "block", "direction": "request"}
    mask = {"guard": "pii", "detector": "email", "action": "mask", "direction": "response"}
    store.insert(
        [
            entry(T0, guards=[{**mask, "count": 3}, {**block, "count": 1}]),
            entry(T0 + 1, guards=[{**mask, "count": 1}]),
            entry(T0 + 2, guards=None, request='{"text": "alice@example.org"}'),
            entry(T0 + 3, guards="not json"),
            entry(T0 + 4, guards='{"an": "object"}'),
        ]
    )
    counts = {(c["detector"], c["action"]): c for c in store.guard_counts(Query(), (0, 10))}
    assert counts[("email", "mask")]["findings"] == 4
    assert counts[("email", "mask")]["requests"] == 2
    assert counts[("credit_card", "block")]["findings"] == 1
    assert len(counts) == 2  # the unreadable guards values count nothing
    recent = store.guarded(Query(), 2)
    assert [e["time"] for e in recent] == [T0 + 4, T0 + 3]
    assert [e["time"] for e in store.guarded(Query(end=T0 + 2), 5)] == [T0 + 1, T0]


def test_id_range(store: RequestLogFile) -> None:
    assert store.id_range() == (0, 0)
    store.insert([entry(T0 + i) for i in range(5)])
    assert store.id_range() == (1, 5)
    store.prune(max_rows=3, older_than=0)
    assert store.id_range() == (3, 5)


def test_guard_queries_read_only_guarded_entries(tmp_path: Path) -> None:
    """A file from before the `guards` column gets it and the partial index on open, and the
    guard queries search that index (not every entry's last column)."""
    import sqlite3

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE request_log (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,"
        " request_id TEXT, trace_id TEXT, route TEXT, backend TEXT, kind TEXT, method TEXT,"
        " path TEXT, status INTEGER, duration_ms REAL, key TEXT, user TEXT, team TEXT,"
        " model TEXT, provider TEXT, tool TEXT, agent TEXT, cost REAL, usage TEXT, request TEXT,"
        " response TEXT, truncated INTEGER NOT NULL DEFAULT 0)"
    )
    old.commit()
    old.close()
    log = RequestLogFile(path)
    try:
        conn = log.db()
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM request_log WHERE time >= ? AND time < ?"
            " AND guards IS NOT NULL ORDER BY time DESC, id DESC LIMIT 5",
            (T0, T0 + 10),
        ).fetchall()
        assert "request_log_guarded" in str(plan)
        log.insert(
            [
                entry(
                    T0,
                    guards=[
                        {
                            "guard": "g",
                            "detector": "d",
                            "action": "log",
                            "direction": "request",
                            "count": 1,
                        }
                    ],
                )
            ]
        )
        assert store_count(log) == 1
    finally:
        log.close()


def store_count(log: RequestLogFile) -> int:
    return sum(c["findings"] for c in log.guard_counts(Query(), (0, 10)))
