"""Profile a proxy under load with py-spy and summarize where its Python time goes."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Final

PYSPY_RATE: Final = 250
FRAME: Final = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def pyspy_binary(repo: Path) -> str | None:
    """py-spy from bench/.peers/tools (bench/run.sh installs it there) or PATH."""
    local = repo / "bench" / ".peers" / "tools" / "bin" / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


def start_record(
    binary: str, pid: int, seconds: int, output: Path, *, cpu: int
) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds` from core `cpu`, without pausing it."""
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            str(cpu),
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(PYSPY_RATE),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _parse(frame: str) -> tuple[str, str, str]:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> (`pkg/mod.py`, `func`, `12`)."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), "", ""
    path = match["file"]
    for anchor in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    return path, match["func"], match["line"] or ""


# Leaf frames in which the worker is really inside native code: the event loop (uvloop) or
# granian's Rust side, reached from the outermost Python frame.
LOOP_FRAMES: Final = ("asyncio/runners.py:", "uvloop/__init__.py:", "granian/server/")


def _component(name: str) -> str:
    if name.startswith(LOOP_FRAMES):
        return "event loop / granian (native)"
    return name.split("/", 1)[0].removesuffix(".py")


def summarize(
    collapsed: Path, *, cpu_us_per_request: float | None, top: int = 15
) -> dict[str, Any]:
    """Where the worker's Python-visible time goes, from py-spy's collapsed stacks.

    Shares are of the samples taken while the worker was not idle. `cpu_us_per_request` (the
    worker's CPU time per request, measured without the profiler) turns a share into
    microseconds per request, comparable across proxies; sample counts alone are not, since a
    sample is also taken while the thread waits on granian's Rust side or for the core.
    """
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        path, func, lineno = frames[-1]
        leaf = f"{path}:{func}"
        self_counts[leaf] += count
        components[_component(leaf)] += count
        if path.startswith("crossway/"):
            lines[f"{path}:{lineno} ({func})"] += count
        for name in {f"{p}:{f}" for p, f, _ in frames}:
            inclusive[name] += count

    def us(count: int) -> float | None:
        if not cpu_us_per_request or not total:
            return None
        return round(count / total * cpu_us_per_request, 1)

    def rows(counter: Counter[str], keep: Any = lambda _n: True) -> list[dict[str, Any]]:
        picked = [(n, c) for n, c in counter.most_common() if keep(n)][:top]
        return [
            {
                "function": n,
                "samples": c,
                "percent": round(100 * c / total, 1),
                "us_per_request": us(c),
            }
            for n, c in picked
        ]

    return {
        "samples": total,
        "rate_hz": PYSPY_RATE,
        "cpu_us_per_request": round(cpu_us_per_request, 1) if cpu_us_per_request else None,
        "components": rows(components),
        "self": rows(self_counts),
        "crossway_inclusive": rows(inclusive, lambda n: n.startswith("crossway/")),
        "crossway_lines": rows(lines),
    }
