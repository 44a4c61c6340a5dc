"""The cache bench (bench/cache/run.py) at toy size: real wordllama, a real `crossway serve` in
front of the sample upstream, a few entries and requests, so the real run's pieces are known to
work. Only what must hold at any size is checked (hits are hits, tables are there)."""

from __future__ import annotations

from pathlib import Path

from bench.cache import run


def test_the_cache_bench_runs_small(tmp_path: Path) -> None:
    out = tmp_path / "cache.md"
    run.main(["--entries", "40", "--requests", "20", "--repeat", "50", "--out", str(out)])
    report = out.read_text()
    for title in ("Semantic threshold", "Embedding cost", "in process", "Through the gateway"):
        assert title in report
    assert "0.86 (default)" in report
    gateway = report.split("## Through the gateway")[1]
    for row in ("miss (sample upstream)", "exact hit", "semantic hit"):
        line = next(line for line in gateway.splitlines() if line.startswith(f"| {row}"))
        assert line.rstrip(" |").endswith("20/20"), line
