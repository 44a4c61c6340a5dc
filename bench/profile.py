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


def start_record(binary: str, pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds` without pausing it; collapsed stacks go to `output`."""
    return subprocess.Popen(
        [
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


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `pkg/mod.py:func`."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for anchor in ("site-packages/", "/src/", "/lib/python3"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    return f"{path}:{match['func']}"


def summarize(collapsed: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares of samples per function, from py-spy's collapsed output."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def share(counter: Counter[str], keep: Any) -> list[dict[str, Any]]:
        rows = [(n, c) for n, c in counter.most_common() if keep(n)][:top]
        return [
            {"function": n, "samples": c, "percent": round(100 * c / total, 1)} for n, c in rows
        ]

    return {
        "samples": total,
        "self": share(self_counts, lambda _n: True),
        "crossway_inclusive": share(inclusive, lambda n: n.startswith("crossway/")),
    }
