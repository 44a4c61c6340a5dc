"""Drive load with wrk (pinned to the load core) and read its JSON summary line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

LUA_SCRIPT: Final = Path(__file__).parent / "wrk" / "post.lua"
WRK_TIMEOUT_S: Final = 10


@dataclass
class LoadResult:
    """One wrk run."""

    connections: int
    duration_s: float
    requests: int
    errors: int
    latency_us: dict[str, float]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "latency_us": self.latency_us,
        }


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk not found (bench/run.sh installs it with apt-get)")
    return found


def run_wrk(
    url: str,
    *,
    body: Path,
    key: str,
    connections: int,
    seconds: float,
    cpu: int,
) -> LoadResult:
    """Run wrk with one thread for `seconds` and return its summary."""
    argv = [
        "taskset",
        "-c",
        str(cpu),
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_KEY": key}
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(
            f"wrk printed no summary (exit {done.returncode}): {done.stderr.strip()[:500]}"
        )
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return LoadResult(
        connections=connections,
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        errors=sum(data["errors"].values()),
        latency_us={k: float(v) for k, v in data["latency_us"].items()},
    )
