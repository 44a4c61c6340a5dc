"""What the gateway-policy benches (bench/accounting.py, bench/observability.py) share.

Both load a handful of Crossway configurations ("rows") with the same ~1 KB OpenAI Chat request,
answered by nginx, one worker pinned to the proxy core, wrk on the load core, in interleaved
rounds; both compare every row with a base row and write the same kind of report. This module
holds that machinery once: the row and its figures, starting and checking a gateway, the loads
and their CPU accounting, the run loop, py-spy profiles, the ratios over the base row, the
common table cells and report paragraphs, the machine facts, the shared command-line flags and
the results files. Each bench keeps only what it measures on top (Redis commands, spans, access
log lines).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from bench import fixtures, profile
from bench.harness import CheckFailed, check_answer, combine
from bench.harness import _version as first_line
from bench.load import LoadResult, run_wrk
from bench.procs import (
    Answer,
    ServerProcess,
    free_port,
    load_average,
    post_once,
    raise_group_priority,
    start_pinned,
    wait_ready,
)
from bench.targets import CLIENT_PATH, MODES, UPSTREAM_KEY, Mode
from bench.upstream import Nginx, start_nginx

__all__ = ["CLIENT_PATH", "MODES", "UPSTREAM_KEY", "Mode"]

REPO: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = REPO / "bench" / "results"
CONFIGS: Final = REPO / "bench" / "configs"
PROXY_CPU: Final = 0
LOAD_CPU: Final = 1
READY_TIMEOUT_S: Final = 60.0
READY_RETRY_S: Final = 0.2
"""Pause between readiness attempts that got an answer, but not the right one yet."""
PROFILE_MIN_S: Final = 3


# --- a row and its figures -----------------------------------------------------------------------


@dataclass
class Row:
    """One gateway configuration started for one mode, with its figures so far."""

    name: str
    mode: Mode
    body: Path
    """The request file wrk and the checks send (`request_file`)."""
    server: ServerProcess | None = None
    port: int = 0
    key: str = ""
    """The client's bearer token."""
    command: str = ""
    """How the gateway was started, as the report shows it."""
    result: dict[str, Any] = field(default_factory=dict)
    rounds32: list[LoadResult] = field(default_factory=list)
    rounds1: list[LoadResult] = field(default_factory=list)
    cpu32: list[float] = field(default_factory=list)
    loads: int = 0
    """wrk runs against this row (each may leave up to its connections' requests uncounted)."""
    answered: int = 0
    """Every 200 this row gave: readiness, checks, warm-up and measured loads."""

    def __post_init__(self) -> None:
        self.result = {"target": self.name, "mode": self.mode, **self.result}

    def fail(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if self.server is not None and not self.server.alive():
            message += f"\nexited with code {self.server.process.returncode}:\n"
            message += self.server.log_tail()
        self.result.setdefault("failed", message)


R = TypeVar("R", bound=Row)

Breakdown = Callable[[Path, float | None], tuple[str, Any]]
"""A bench's own reading of the collapsed stacks: (its key in the profile, its figures)."""


def request_file(work: Path, mode: Mode) -> Path:
    """The benchmark's request for `mode`, written once under `work`."""
    path = work / "requests" / f"{mode}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fixtures.request_body(stream=mode == "stream"))
    return path


def upstream_base(nginx_port: int, mode: Mode) -> str:
    return f"http://127.0.0.1:{nginx_port}{'/stream' if mode == 'stream' else ''}/v1"


# --- starting and checking a gateway ---------------------------------------------------------------


def start_gateway(
    row: Row,
    work: Path,
    config: str,
    nginx_port: int,
    data_dir: Path,
    env: dict[str, str],
    shown: str = "",
) -> None:
    """Start `crossway serve` with bench/configs/`config`.yaml, one worker on the proxy core, its
    OpenAI upstream at nginx; `env` adds to the gateway's variables and `shown` is how the
    report's command line shows them."""
    row.port = free_port()
    argv = [str(REPO / ".venv" / "bin" / "crossway"), "serve", "--config"]
    argv += [str(CONFIGS / f"{config}.yaml"), "--workers", "1"]
    full_env = {
        "CROSSWAY_PORT": str(row.port),
        "CROSSWAY_ADMIN_PORT": str(free_port()),
        "CROSSWAY_DATA_DIR": str(data_dir),
        "OPENAI_BASE_URL": upstream_base(nginx_port, row.mode),
        "OPENAI_API_KEY": UPSTREAM_KEY,
        **env,
    }
    row.command = f"{shown}crossway serve --config bench/configs/{config}.yaml --workers 1"
    row.server = start_pinned(
        f"crossway-{row.name}",
        argv,
        cpu=PROXY_CPU,
        env=full_env,
        cwd=REPO,
        log=work / "logs" / f"crossway-{row.name}-{row.mode}.log",
    )


def ready(row: Row, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until the row answers the benchmark's request correctly (a gateway may answer before
    it is ready, e.g. 503 until its key ledger loaded); record a failure if it never does."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = wait_ready(
                row.server,
                row.port,
                CLIENT_PATH,
                row.body.read_bytes(),
                {"Authorization": f"Bearer {row.key}"},
                timeout_s=max(1.0, deadline - time.monotonic()),
            )
        except RuntimeError as exc:
            row.fail(exc)
            return
        try:
            check_answer(answer.status, answer.body, row.mode)
            row.answered += 1
            return
        except CheckFailed as exc:
            last = str(exc)
        time.sleep(READY_RETRY_S)
    row.fail(RuntimeError(f"never answered correctly in {timeout_s:.0f} s: {last}"))


def post_checked(row: Row) -> Answer:
    """One request: a 200 with the completion (raises CheckFailed otherwise)."""
    answer = post_once(
        row.port,
        CLIENT_PATH,
        row.body.read_bytes(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {row.key}"},
    )
    check_answer(answer.status, answer.body, row.mode)
    row.answered += 1
    return answer


def guard(row: Row, step: Callable[..., object], *args: Any) -> None:
    """Run `step(*args)` unless the row already failed; record a failure."""
    if "failed" in row.result:
        return
    try:
        step(*args)
    except (RuntimeError, CheckFailed, OSError, subprocess.SubprocessError) as exc:
        row.fail(exc)


# --- loads -----------------------------------------------------------------------------------------


def load(row: Row, connections: int, seconds: float) -> LoadResult:
    """One wrk run against the row from the load core (its answers counted, not kept)."""
    result = run_wrk(
        f"http://127.0.0.1:{row.port}{CLIENT_PATH}",
        body=row.body,
        key=row.key,
        connections=connections,
        seconds=seconds,
        cpu=LOAD_CPU,
    )
    row.answered += result.requests - result.errors
    row.loads += 1
    return result


def measured(row: Row, connections: int, seconds: float) -> LoadResult:
    """One measured load: wrk and, at 32 connections, the gateway's CPU time."""
    cpu_before = row.server.cpu_seconds() if row.server is not None else 0.0
    result = load(row, connections, seconds)
    if row.server is not None and connections > 1:
        row.cpu32.append(row.server.cpu_seconds() - cpu_before)
    (row.rounds32 if connections > 1 else row.rounds1).append(result)
    return result


def summarize(row: Row) -> bool:
    """The row's figures over its rounds into its result (False: nothing to summarize)."""
    result = row.result
    if "failed" in result or not row.rounds32:
        return False
    result["c32"] = combine(row.rounds32)
    if row.rounds1:
        result["c1"] = combine(row.rounds1)
    errors = result["c32"]["errors"] + result.get("c1", {}).get("errors", 0)
    if errors:
        result["non_2xx_or_socket_errors"] = errors
    if row.cpu32:
        cpu = sum(row.cpu32)
        result["gateway_cpu_percent"] = round(
            100 * cpu / sum(r.duration_s for r in row.rounds32), 1
        )
        result["requests_per_cpu_second"] = round(sum(r.requests for r in row.rounds32) / cpu, 1)
    return True


# --- the run loop ----------------------------------------------------------------------------------


def run_rows(
    tag: str,
    mode: Mode,
    names: list[str],
    start: Callable[[str], R],
    failed: Callable[[str], R],
    args: argparse.Namespace,
    *,
    work: Path,
    measure: Callable[[R, int, float], object],
    check: Callable[[R], object],
    after_loads: Callable[[R], None] = lambda _row: None,
    breakdown: Breakdown | None = None,
) -> list[R]:
    """Start every row for `mode` (`failed` makes the stand-in of one that could not start),
    check and warm each, load them in turns round after round, then per row: summarize,
    `after_loads`, profile (`--profile`; `breakdown` adds the bench's reading of it), check
    again. Every gateway is stopped (SIGTERM, so it flushes what it queued) before this
    returns."""
    rows: list[R] = []
    try:
        for name in names:
            print(f"[{tag}] {mode}: starting {name}", flush=True)
            try:
                rows.append(start(name))
            except (RuntimeError, OSError) as exc:
                row = failed(name)
                row.fail(exc)
                rows.append(row)
        running = [row for row in rows if "failed" not in row.result]
        for row in running:
            row.result["command"] = row.command
            row.result["rss_idle_mb"] = round(row.server.rss_mb(), 1) if row.server else None
            guard(row, check, row)
            guard(row, load, row, 32, args.warmup)
        for _ in range(args.rounds):
            for row in running:
                guard(row, measure, row, 32, args.seconds / args.rounds)
            for row in running:
                guard(row, measure, row, 1, args.seconds_one / args.rounds)
        for row in running:
            summarize(row)
            after_loads(row)
            if args.profile:
                guard(row, profile_into, row, work, args.profile_seconds, breakdown)
            guard(row, check, row)
            if row.server is not None:
                row.result["rss_after_mb"] = round(row.server.rss_mb(), 1)
    finally:
        for row in rows:
            if row.server is not None:
                row.server.stop()
    return rows


# --- profiles --------------------------------------------------------------------------------------


def profile_worker(
    row: Row, work: Path, seconds: float, breakdown: Breakdown | None = None
) -> dict[str, Any]:
    """py-spy samples of the serving worker (all its threads) under 32 connections
    (bench/profile.py; the collapsed stacks go to `work`/profiles), plus `breakdown`'s figures."""
    assert row.server is not None
    binary = profile.pyspy_binary(REPO)
    if binary is None:
        return {"error": "py-spy not installed (BENCH_PROFILE=1 bash bench/run.sh installs it)"}
    out = work / "profiles" / f"{row.name}-{row.mode}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    seconds_int = max(PROFILE_MIN_S, int(seconds))
    recorder = profile.start_record(binary, row.server.worker_pid(), seconds_int, out, cpu=LOAD_CPU)
    load(row, 32, seconds_int + 1)
    _, err = recorder.communicate(timeout=60)
    if recorder.returncode != 0 or not out.exists():
        return {
            "error": f"py-spy exit {recorder.returncode}: {err.decode(errors='replace')[-300:]}"
        }
    per_cpu = row.result.get("requests_per_cpu_second")
    cpu_us = 1e6 / per_cpu if per_cpu else None
    summary = profile.summarize(out, cpu_us_per_request=cpu_us)
    if breakdown is not None:
        key, figures = breakdown(out, cpu_us)
        summary[key] = figures
    summary["collapsed"] = str(out.relative_to(REPO))
    return summary


def profile_into(row: Row, work: Path, seconds: float, breakdown: Breakdown | None) -> None:
    row.result["profile"] = profile_worker(row, work, seconds, breakdown)


def collapsed_stacks(collapsed: Path) -> Iterator[tuple[list[str], int]]:
    """py-spy's collapsed stacks: every sample line as its frames (`path:function`, outermost
    first) and its count."""
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            path, func, _ = profile._parse(frame)
            frames.append(f"{path}:{func}")
        yield frames, int(count_text)


# --- the report ------------------------------------------------------------------------------------


def ratios(
    runs: list[dict[str, Any]],
    base_name: str,
    goals: dict[str, float],
    *,
    latency: bool = False,
) -> dict[str, dict[str, Any]]:
    """Per mode: each row's throughput and requests per CPU-second over `base_name`'s, against
    its goal; with `latency`, also the p50 the row adds at 1 connection and whether it meets
    its goal per CPU-second."""
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        rows = {r["target"]: r for r in runs if r["mode"] == mode and "c32" in r}
        base = rows.get(base_name)
        if base is None:
            continue
        for name, row in rows.items():
            if name == base_name:
                continue
            entry: dict[str, Any] = {"rps": round(row["c32"]["rps"] / base["c32"]["rps"], 3)}
            if row.get("requests_per_cpu_second") and base.get("requests_per_cpu_second"):
                entry["requests_per_cpu_second"] = round(
                    row["requests_per_cpu_second"] / base["requests_per_cpu_second"], 3
                )
            if latency:
                p50 = row.get("c1", {}).get("latency_us", {}).get("p50")
                base_p50 = base.get("c1", {}).get("latency_us", {}).get("p50")
                if p50 and base_p50:
                    entry["p50_c1_added_us"] = round(p50 - base_p50, 1)
            goal = goals.get(name)
            if goal is not None:
                entry["goal"] = goal
                entry["meets_goal"] = entry["rps"] >= goal
                if latency and "requests_per_cpu_second" in entry:
                    entry["meets_goal_per_cpu"] = entry["requests_per_cpu_second"] >= goal
            out.setdefault(mode, {})[name] = entry
    return out


def one_line(r: dict[str, Any], details: Callable[[dict[str, Any]], str]) -> str:
    """A row's result in one console line: throughput, then the bench's `details`."""
    if "failed" in r:
        return "FAILED " + str(r["failed"]).splitlines()[0][:200]
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    c32 = r.get("c32", {})
    out = f"{c32.get('rps', 0):.0f} req/s, {r.get('requests_per_cpu_second', '-')} req/CPU-s"
    return out + details(r)


def _cpu_us(per_second: float | None) -> str:
    return "-" if not per_second else f"{1e6 / per_second:.0f}"


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def machine_paragraph(data: dict[str, Any], *, facts: str, sharing: str) -> str:
    """The report's first paragraph: machine, pinning (`sharing` names what shares the load core
    besides nginx and wrk), wrk settings and load average; `facts` follows the commit."""
    s, m = data["settings"], data["machine"]
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; Crossway at"
        f" `{m['crossway_commit']}`{facts}. Each gateway runs one worker pinned to core"
        f" {PROXY_CPU}; nginx (the upstream), wrk and {sharing} share core {LOAD_CPU}. wrk:"
        f" {s['seconds']:g} s at 32 connections and {s['seconds_one']:g} s at 1 connection per"
        f" target and mode, in {s['rounds']} interleaved round(s), after {s['warmup']:g} s"
        f" warm-up. Load average at the start {data['load_average_start']}, at the end"
        f" {data['load_average_end']}."
    )


TABLE_COLUMNS: Final = 13
"""Columns the results table has before a bench's own."""
REQUEST_SENTENCE: Final = (
    "The request is the same OpenAI Chat body (~1 KB, `gpt-4o-mini`) for every row;"
    " `stream` asks for `stream: true`. Rows: "
)


def table_head(base_name: str, extra: list[str]) -> list[str]:
    """The results table's header and separator: the shared columns, then `extra`."""
    names = [
        "mode",
        "target",
        "req/s (c32)",
        f"vs {base_name}",
        "gateway req per CPU-s",
        f"vs {base_name}",
        "CPU us/req",
        "gateway CPU %",
        "p50 ms (c32)",
        "p99 ms (c32)",
        "p50 ms (c1)",
        "p99 ms (c1)",
        "errors",
        *extra,
    ]
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def table_cells(r: dict[str, Any], ratio: dict[str, Any], extra: list[str]) -> str:
    """One results table line: the shared cells of run `r` (with its `ratio` over the base),
    then `extra`'s."""
    c32, c1 = r["c32"], r.get("c1", {})
    c1_latency = c1.get("latency_us", {})
    cells = [
        r["mode"],
        r["target"],
        f"{c32['rps']:.0f}",
        str(ratio.get("rps", "-")),
        str(r.get("requests_per_cpu_second", "-")),
        str(ratio.get("requests_per_cpu_second", "-")),
        _cpu_us(r.get("requests_per_cpu_second")),
        str(r.get("gateway_cpu_percent", "-")),
        _ms(c32["latency_us"].get("p50")),
        _ms(c32["latency_us"].get("p99")),
        _ms(c1_latency.get("p50")),
        _ms(c1_latency.get("p99")),
        str(c32["errors"] + c1.get("errors", 0)),
        *extra,
    ]
    return "| " + " | ".join(cells) + " |"


def table_gap(r: dict[str, Any], extra_columns: int) -> str:
    """The table line of a run without figures: why, in the first free cell."""
    why = r.get("failed") or r.get("skipped") or "no figures"
    empty = TABLE_COLUMNS - 2 + extra_columns  # one more than the header has, as it always was
    return f"| {r['mode']} | {r['target']} | {why.splitlines()[0][:160]} |" + " |" * empty


def results_table(
    data: dict[str, Any],
    base_name: str,
    extra: list[str],
    extra_cells: Callable[[dict[str, Any]], list[str]],
) -> list[str]:
    """The results table of every run: the shared columns, then the bench's `extra` ones
    (`extra_cells` fills them)."""
    lines = table_head(base_name, extra)
    for r in data["runs"]:
        if "c32" not in r:
            lines.append(table_gap(r, len(extra)))
            continue
        ratio = data["ratios"].get(r["mode"], {}).get(r["target"], {})
        lines.append(table_cells(r, ratio, extra_cells(r)))
    return lines


CPU_PERCENT_NOTE: Final = (
    "`gateway CPU %` below ~95 means the gateway waited for its core (other work on this"
    " shared machine): requests per CPU-second is then the steadier figure."
)


def goal_lines(
    rat: dict[str, dict[str, Any]], base_name: str, more: Callable[[dict[str, Any]], str]
) -> list[str]:
    """The "against the goals" section: one line per row with a goal (`more` ends it)."""
    lines = [f"## Against the goals (throughput at 32 connections over {base_name})", ""]
    for mode, rows in rat.items():
        for name, entry in rows.items():
            if "goal" in entry:
                verdict = "meets" if entry["meets_goal"] else "MISSES"
                lines.append(
                    f"- {mode} {name}: {entry['rps']:.3f} (goal >= {entry['goal']:.2f}: {verdict});"
                    f" per gateway CPU-second {entry.get('requests_per_cpu_second', '-')}"
                    + more(entry)
                )
    return lines


def profiles(runs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Every run's profile with its section heading (an error in place of figures is its
    section's only line)."""
    for r in runs:
        prof = r.get("profile")
        if not prof:
            continue
        heading = ["", f"## Profile: {r['target']} / {r['mode']} (py-spy, worker process)", ""]
        if "error" in prof:
            yield {}, [*heading, prof["error"]]
        else:
            yield prof, heading


# --- machine, flags, results -----------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "crossway_commit": first_line(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"]),
        "redis": first_line(["redis-server", "--version"]).split(" sha=")[0],
        "wrk": first_line(["wrk", "--version"]).split(" [")[0],
    }


def add_load_flags(parser: argparse.ArgumentParser, targets: tuple[str, ...]) -> None:
    """--seconds, --seconds-one, --rounds, --warmup, --modes and --only (one of `targets`)."""
    parser.add_argument("--seconds", type=float, default=12.0, help="wrk time at 32 connections")
    parser.add_argument("--seconds-one", type=float, default=6.0, help="wrk time at 1 connection")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=float, default=2.0, help="wrk warm-up per target")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--only", nargs="*", default=list(targets), choices=targets)


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """--profile, --profile-seconds and --out."""
    parser.add_argument("--profile", action="store_true", help="py-spy every row after its loads")
    parser.add_argument("--profile-seconds", type=float, default=8.0, help="py-spy time per row")
    parser.add_argument("--out", type=Path, default=RESULTS)


def run_settings(
    args: argparse.Namespace, before: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any]:
    """The results' `settings`: the load flags, the bench's own (`before` the request size,
    `after` it), the cores."""
    return {
        "seconds": args.seconds,
        "seconds_one": args.seconds_one,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "modes": args.modes,
        **before,
        "request_body_bytes": fixtures.REQUEST_BODY_SIZE,
        **after,
        "proxy_cpu": PROXY_CPU,
        "load_cpu": LOAD_CPU,
    }


def start_upstream(work: Path) -> tuple[Nginx, int]:
    """nginx serving the fixed answers on the load core, answering: (it, its port). Also raises
    this process's priority and makes `work`'s logs folder."""
    raise_group_priority()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    files = fixtures.write_fixtures(work / "files")["openai-chat.json"].parent
    port = free_port()
    nginx = start_nginx(work, files, port, cpu=LOAD_CPU)
    try:
        wait_ready(None, port, "/healthz", b"", {}, timeout_s=10)
    except BaseException:
        nginx.stop()
        raise
    return nginx, port


def write_results(
    tag: str,
    out: Path,
    started: dt.datetime,
    data: dict[str, Any],
    rat: dict[str, dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
) -> None:
    """Finish `data` (ratios, end load, elapsed time) and write `tag`-YYYY-MM-DD-HHMM.json and .md
    into `out`; print the report."""
    data["ratios"] = rat
    data["load_average_end"] = load_average()
    data["elapsed_s"] = round((dt.datetime.now() - started).total_seconds(), 1)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{tag}-{started.strftime('%Y-%m-%d-%H%M')}"
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    markdown = render(data)
    (out / f"{stem}.md").write_text(markdown)
    print(markdown)
    print(f"[{tag}] wrote {out / stem}.md and .json in {data['elapsed_s']} s", flush=True)
