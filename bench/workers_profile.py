"""Where a `--workers 2` worker spends more per request than the single process (issue 11).

Starts nginx (the bench fixtures), then `crossway serve --workers 1` and `--workers 2` in
turn, each worker pinned to its own core with all its threads and capped at 0.6 of a core by
a cgroup (as `bench/scale.py --only workers` does), loads them with wrk at 32 connections on
core 1, measures the first worker's CPU per request, and samples that worker with py-spy.

    flock bench/.work/bench.lock .venv/bin/python -m bench.workers_profile [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from bench import fixtures, scale
from bench.gateway_rows import start_upstream
from bench.load import run_wrk
from bench.procs import cpu_seconds
from bench.profile import pyspy_binary, start_record, summarize

REPO = Path(__file__).resolve().parent.parent
QUOTA = 0.6
MEASURE_S = 8.0
PROFILE_S = 10


def profile_workers(workers: int, work: Path, nginx_port: int, spy: str) -> dict[str, Any]:
    body = work / "request.json"
    body.write_bytes(fixtures.request_body(stream=False))
    server, port, _ = scale.start_crossway(
        f"prof-w{workers}",
        "scale-llm",
        workers=workers,
        cpus=scale.PROXY_CPU if workers == 1 else scale.BOTH_CPUS,
        env={"OPENAI_BASE_URL": f"http://127.0.0.1:{nginx_port}/v1"},
        work=work,
    )
    groups: list[scale.CpuCgroup] = []
    try:
        pids = scale.worker_pids(server)
        for core, pid in enumerate(pids):
            subprocess.run(
                ["taskset", "-a", "-p", "-c", str(core), str(pid)], check=True, capture_output=True
            )
            group = scale.CpuCgroup(f"crossway-prof-{workers}-{core}", QUOTA)
            group.add(pid)
            groups.append(group)
        url = f"http://127.0.0.1:{port}{scale.CLIENT_PATH}"
        run_wrk(url, body=body, key="sk-bench", connections=32, seconds=2, cpu=scale.LOAD_CPU)
        before = cpu_seconds(pids[0])
        result = run_wrk(
            url, body=body, key="sk-bench", connections=32, seconds=MEASURE_S, cpu=scale.LOAD_CPU
        )
        per_request_us = (
            (cpu_seconds(pids[0]) - before) / (result.rps * MEASURE_S / len(pids)) * 1e6
        )
        collapsed = work / f"workers-{workers}.txt"
        recording = start_record(spy, pids[0], PROFILE_S, collapsed, cpu=scale.LOAD_CPU)
        run_wrk(
            url,
            body=body,
            key="sk-bench",
            connections=32,
            seconds=PROFILE_S + 1,
            cpu=scale.LOAD_CPU,
        )
        recording.wait()
        summary = summarize(collapsed, cpu_us_per_request=per_request_us, top=25)
        return {"rps": result.rps, "worker_cpu_us_per_request": per_request_us, "profile": summary}
    finally:
        server.stop()
        for group in groups:
            group.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "workers-profile.json"
    )
    args = parser.parse_args()
    spy = pyspy_binary(REPO)
    if spy is None:
        raise SystemExit("py-spy not found: BENCH_PROFILE=1 bash bench/run.sh installs it")
    work = REPO / "bench" / ".work" / "workers-profile"
    work.mkdir(parents=True, exist_ok=True)
    nginx, nginx_port = start_upstream(work)
    try:
        rows = {str(n): profile_workers(n, work, nginx_port, spy) for n in (1, 2)}
    finally:
        nginx.stop()
    args.out.write_text(json.dumps(rows, indent=1, default=str) + "\n")
    for n, row in rows.items():
        print(
            f"workers {n}: {row['rps']:.0f} req/s, {row['worker_cpu_us_per_request']:.1f} µs a request"
        )


if __name__ == "__main__":
    main()
