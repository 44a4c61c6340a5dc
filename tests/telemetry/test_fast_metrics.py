"""The request path's metric writers (`FastCounter`, `FastHistogram`) record exactly what
prometheus_client's own `inc` and `observe` record, in one process and in multiprocess mode
(the mmap files `crossway serve` aggregates), including after a fork."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

from crossway.telemetry.metrics import LATENCY_BUCKETS, FastCounter, FastHistogram

AMOUNTS = (0.0, 0.0005, 0.0004, 0.001, 0.003, 0.7, 60.0, 121.0, 2.5, 1e-9)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_fast_writers_match_prometheus_client() -> None:
    registries = []
    for fast in (False, True):
        registry = CollectorRegistry()
        counter = Counter("c_total", "c", ["x"], registry=registry)
        histogram = Histogram("h", "h", ["x"], buckets=LATENCY_BUCKETS, registry=registry)
        c = FastCounter.of(counter.labels("a")) if fast else counter.labels("a")
        h = FastHistogram(histogram.labels("a")) if fast else histogram.labels("a")
        for amount in AMOUNTS:
            c.inc(amount)
            c.inc()
            h.observe(amount)
        registries.append(registry)
    slow, fast = (_samples(r) for r in registries)
    assert fast == slow
    assert fast[("h_bucket", (("le", "0.0005"), ("x", "a")))] == 4  # 0, 1e-9, 0.0004, 0.0005
    assert fast[("h_bucket", (("le", "+Inf"), ("x", "a")))] == len(AMOUNTS)


MULTIPROCESS = textwrap.dedent(
    """
    import os, sys
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    from crossway.telemetry import metrics

    metrics.observe_request("r", 200, 0.003)
    for i in range(2000):  # the mmap file grows (is mapped again) under bound values
        metrics.observe_llm_attempt("b", f"p/model-{i}", "ok")
    metrics.observe_llm_usage("b", "m", "p", (10, 5, 0, 2), 0.25)
    metrics.observe_llm_attempt("b", "p/model-0", "ok")
    pid = os.fork()
    if pid == 0:  # a forked worker writes its own file, not its parent's
        metrics.observe_request("r", 200, 0.003)
        metrics.observe_upstream("b", 200, 0.2)
        os._exit(0)
    os.waitpid(pid, 0)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    for family in registry.collect():
        for s in family.samples:
            print(s.name, sorted(s.labels.items()), s.value)
    from prometheus_client.mmap_dict import MmapedDict
    for who, p in (("parent", os.getpid()), ("child", pid)):
        path = os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], f"counter_{p}.db")
        for key, value, _, _ in MmapedDict.read_all_values_from_file(path):
            if "crossway_requests_total" in key:
                print(who, "requests", value)
    """
)


def test_multiprocess_files_hold_the_fast_writes(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS], env=env, capture_output=True, text=True, check=True
    ).stdout
    lines = set(out.splitlines())
    assert "crossway_requests_total [('route', 'r'), ('status', '200')] 2.0" in lines
    assert (
        "crossway_request_duration_seconds_bucket [('le', '0.005'), ('route', 'r'), "
        "('status', '200')] 2.0" in lines
    )
    assert (
        "crossway_upstream_duration_seconds_bucket [('backend', 'b'), ('le', '0.25'), "
        "('status', '200')] 1.0" in lines
    )
    assert (
        "crossway_llm_tokens_total [('backend', 'b'), ('kind', 'reasoning'), ('model', 'm'), "
        "('provider', 'p')] 2.0" in lines
    )
    assert (
        "crossway_llm_cost_usd_total [('backend', 'b'), ('model', 'm'), ('provider', 'p')] 0.25"
        in lines
    )
    assert {"parent requests 1.0", "child requests 1.0"} <= lines
    assert (
        "crossway_llm_upstream_attempts_total [('backend', 'b'), ('deployment', 'p/model-0'), "
        "('result', 'ok')] 2.0" in lines
    )
