"""The scale bench's pieces at toy size (bench/scale.py, bench/paced_upstream.py): a real paced
upstream, a real `crossway serve` and the bench's own stream clients, with 20 streams instead of
ten thousand, so the big run's machinery is known to work before anyone spends minutes on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from bench.procs import free_port

from bench import scale

STREAMS: Final = 20
INTERVAL_S: Final = 0.2


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "SETTLE_S", 0.05)
    monkeypatch.setattr(scale, "PROBES", 3)
    monkeypatch.setattr(scale, "DRAIN_TIMEOUT_S", 3.0)


@pytest.fixture
def paced(tmp_path: Path) -> Iterator[scale.Upstream]:
    upstream = scale.Upstream(free_port())
    upstream.process = scale.start_paced(upstream.port, INTERVAL_S, tmp_path)
    try:
        yield upstream
    finally:
        scale.stop_process(upstream.process)


def test_llm_streams_are_held_get_chunks_and_close_upstream(
    paced: scale.Upstream, tmp_path: Path
) -> None:
    server, port, admin = scale.start_crossway(
        "llm",
        "scale-llm",
        workers=1,
        cpus=scale.BOTH_CPUS,
        env={"OPENAI_BASE_URL": f"http://127.0.0.1:{paced.port}/v1"},
        work=tmp_path,
    )
    try:
        result = asyncio.run(
            scale.llm_streams_async(server, port, admin, paced, STREAMS, INTERVAL_S, 0.5, rounds=1)
        )
    finally:
        server.stop()
    held = result["rounds"][0]
    assert held["first_event"] == held["status_200"] == held["upstream_open"] == STREAMS
    assert held["alive_after_hold"] == STREAMS
    assert held["chunks_relayed_during_hold"] >= STREAMS
    assert held["rss_held_mb"] > 0 and held["kb_per_stream"] is not None
    assert held["chat_json_latency"]["errors"] == 0
    assert held["healthz_latency"]["errors"] == 0


def test_mcp_get_streams_and_sessions(tmp_path: Path) -> None:
    server, port, admin = scale.start_crossway(
        "mcp", "scale-mcp", workers=1, cpus=scale.BOTH_CPUS, env={}, work=tmp_path
    )
    try:
        streams = asyncio.run(scale.mcp_streams_async(server, port, admin, STREAMS, 0))
        sessions = asyncio.run(scale.mcp_sessions_async(server, port, STREAMS))
    finally:
        server.stop()
    assert streams["sessions"] == streams["streams"] == STREAMS
    assert streams["closed_by_server"] == 0
    assert streams["ping_latency_held"]["errors"] == 0
    assert sessions["sessions"] == sessions["second_batch"] == STREAMS
    assert sessions["kb_per_session"] is not None


def test_paced_upstream_ends_a_stream_after_its_chunks(tmp_path: Path) -> None:
    port = free_port()
    process = scale.start_paced(port, 0.01, tmp_path, chunks=3)
    try:
        status, raw = asyncio.run(scale.http_exchange(port, scale.chat_request(port, stream=True)))
    finally:
        scale.stop_process(process)
    assert status == 200
    assert raw.count(b" tick") == 3
    assert raw.rstrip().endswith(b"0")  # the last chunk of the chunked body
    assert b"data: [DONE]" in raw


def test_report_renders_every_part() -> None:
    latency = {"count": 3, "errors": 0, "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 2.0}
    row: dict[str, Any] = {
        "name": "w1-pinned",
        "rps": 100.0,
        "gateway_cpu_percent": 90.0,
        "worker_cpu_percent": [90.0],
        "requests_per_cpu_second": 111.1,
        "load_cpu_percent": 10.0,
        "load_cpu_us_per_request": 30.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "errors": 0,
    }
    held = {
        "streams": 2,
        "first_event": 2,
        "upstream_open": 2,
        "rss_before_mb": 1.0,
        "rss_held_mb": 2.0,
        "kb_per_stream": 512.0,
        "alive_after_hold": 2,
        "chunks_relayed_during_hold": 4,
        "rss_growth_kb_per_1k_chunks": 0.0,
        "all_closed": True,
        "upstream_open_after_close": 0,
        "rss_after_close_mb": 2.0,
        "open_s": 0.1,
        "chat_json_latency": latency,
        "healthz_latency": latency,
    }
    data = {
        "started": "2026-12-02 00:00",
        "command": "python -m bench.scale",
        "machine": {"cpu": "x", "cores": 2, "python": "3.11", "crossway_commit": "abc"},
        "load_average_start": (0, 0, 0),
        "load_average_end": (0, 0, 0),
        "settings": {"seconds": 1.0, "rounds": 1, "warmup": 1.0},
        "workers": {
            "rows": [row, {**row, "name": "w2-pinned", "worker_cpu_percent": [45.0, 45.0]}],
            "ratios": {"pinned": {"rps": 1.0, "requests_per_cpu_second": 1.0}},
            "quota_cores_per_worker": 0.6,
        },
        "llm": {
            "interval_s": 1.0,
            "fd_limit": 100,
            "cpu_s": 1.0,
            "alive_at_end": True,
            "idle": {"chat_json_latency": latency, "healthz_latency": latency},
            "rounds": [held],
        },
        "mcp_streams": {"failed": "RuntimeError: no"},
        "sessions": {
            "sessions": 2,
            "rss_before_mb": 1.0,
            "rss_after_mb": 1.5,
            "kb_per_session": 256.0,
            "second_batch": 2,
            "rss_after_second_mb": 1.5,
            "kb_per_session_second": 0.0,
        },
    }
    text = scale.render(data)
    assert "| w2-pinned | 100 | 90.0 | 45.0 / 45.0 |" in text
    assert "pinned: `--workers 2` / `--workers 1` = 1.00x" in text
    assert "| 1 | 2 | 2 | 2 | 1.0 | 2.0 | 512.0 |" in text
    assert "FAILED: RuntimeError: no" in text
    assert "| 2 | 1.0 | 1.5 | 256.0 |" in text
