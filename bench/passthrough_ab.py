"""A/B of the OpenAI passthrough: the working tree against the same tree with some files as of a
git ref, in interleaved rounds (requests per CPU-second of the gateway, p50 at one connection).

    flock bench/.work/bench.lock .venv/bin/python -m bench.passthrough_ab --ref REF FILE ... \\
        [--seconds 4] [--rounds 3] [--modes json stream]

`A` is `src/` copied from the working tree with FILE ... (paths under src/) taken from REF and
`--overlay DIR`'s files on top (put first on PYTHONPATH); `B` is the working tree. Both run examples/openai.yaml with one worker on the
proxy core, nginx and wrk on the load core (bench/gateway_rows.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

from bench import gateway_rows as rows
from bench.harness import combine
from bench.procs import load_average

REPO: Final = Path(__file__).resolve().parent.parent
WORK: Final = REPO / "bench" / ".work" / "passthrough_ab"
CONFIG: Final = "../../examples/openai"


def tree_with(ref: str, files: list[str], overlay: Path | None = None) -> Path:
    """The working tree's src/ with `files` as of `ref`, then `overlay`'s files on top (a
    directory laid out like src/)."""
    target = WORK / "a-src"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(REPO / "src", target, ignore=shutil.ignore_patterns("__pycache__"))
    for name in files:
        rel = Path(name).relative_to("src")
        shown = subprocess.run(
            ["git", "show", f"{ref}:{name}"], cwd=REPO, capture_output=True, check=True
        ).stdout
        (target / rel).write_bytes(shown)
    if overlay is not None:
        shutil.copytree(overlay, target, dirs_exist_ok=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD")
    parser.add_argument("files", nargs="*")
    parser.add_argument("--overlay", type=Path, help="files laid out like src/, put over A")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--seconds-one", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["json", "stream"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    src_a = tree_with(args.ref, args.files, args.overlay)
    nginx, nginx_port = rows.start_upstream(WORK)
    report: dict[str, Any] = {
        "ref": args.ref,
        "files": args.files,
        "overlay": str(args.overlay),
        "load_start": load_average(),
    }
    try:
        for mode in args.modes:
            body = rows.request_file(WORK, mode)
            pair = {}
            for name, env in (("A", {"PYTHONPATH": str(src_a)}), ("B", {})):
                row = rows.Row(name, mode, body, key="sk-bench")
                rows.start_gateway(row, WORK, CONFIG, nginx_port, WORK / f"data-{name}", env)
                rows.ready(row)
                if "failed" in row.result:
                    raise RuntimeError(row.result["failed"])
                rows.load(row, 32, 1)  # warm-up
                pair[name] = row
            for _ in range(args.rounds):
                for row in pair.values():
                    rows.measured(row, 32, args.seconds)
                    rows.measured(row, 1, args.seconds_one)
            for name, row in pair.items():
                rows.summarize(row)
                c1 = combine(row.rounds1)
                report[f"{mode}-{name}"] = {
                    "req_per_cpu_s": row.result.get("requests_per_cpu_second"),
                    "rps32": row.result["c32"]["rps"],
                    "p50_1_us": c1["latency_us"].get("p50"),
                    "cpu_percent": row.result.get("gateway_cpu_percent"),
                }
                assert row.server is not None
                row.server.stop()
    finally:
        nginx.stop()
    report["load_end"] = load_average()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
