"""The server settings study: granian's interface, HTTP/1 options, backlog and event loop, measured.

    .venv/bin/python -m bench.server_options [--studies interface loop http1 backlog]
        [--modes json stream] [--rounds 3] [--seconds 6] [--seconds-one 2]

Each study starts its rows side by side (idle when not loaded) and loads them in short
interleaved rounds, the order reversed every other round, so noise from other work on this
shared machine falls on every row alike. Rows are the reference proxies (bench/reference_proxy.py
on aiohttp, bench/reference_proxy_reqwest.py on pyreqwest, bench/reference_rsgi.py on RSGI) and
Crossway itself (examples/openai.yaml), each one granian worker pinned to the proxy core, nginx
and wrk on the load core. The figure compared is requests per CPU-second of the proxy's process
tree at 32 connections (beside req/s and p50 at 1 connection); every row is given as a ratio to
its study's base row for the same proxy.

- interface: ASGI vs RSGI, with each upstream client (RSGI answers a sized body in one call;
  one ASGI row sends a sized body as one message, to tell the message count from the interface).
- loop: uvloop (what `crossway serve` runs) vs asyncio vs rloop (installed on demand into
  bench/.peers/rloop, never into .venv: granian's `--loop auto` would pick it up there).
- http1: `--http1-pipeline-flush`, a small `--http1-buffer-size`, `--no-http1-keep-alive`,
  `--runtime-mode st` and `--task-impl rust` against granian's defaults.
- backlog: `--backlog` 128 / 1024 / 2048 at 512 connections, plus a burst of new connections.
  granian derives its per-worker `--backpressure` from it (backlog / workers), and that caps the
  connections a worker serves at once: past it, a new connection waits until another closes. The
  table shows how many connections were really served (Little's law: req/s x mean latency).

Crossway rows run `crossway.server.app:create_app` through granian's own CLI (`--factory`), the
path `crossway serve --workers N` takes, so every granian option can be tried without editing
src/crossway/server/serve.py; a `crossway serve` row in the loop study checks that the CLI row
measures the same thing as the real command. The script takes bench/.work/bench.lock itself.
Results: bench/results/server-options-YYYY-MM-DD-HHMM.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench import fixtures, procs
from bench.harness import CheckFailed, check_answer, combine
from bench.harness import _version as first_line
from bench.load import LoadResult, run_wrk
from bench.procs import (
    ServerProcess,
    free_port,
    load_average,
    post_once,
    raise_group_priority,
    start_pinned,
    wait_ready,
)
from bench.targets import CLIENT_KEY, CLIENT_PATH, MODES, UPSTREAM_KEY, Mode
from bench.upstream import start_nginx

REPO: Final = Path(__file__).resolve().parent.parent
WORK: Final = REPO / "bench" / ".work" / "server-options"
RESULTS: Final = REPO / "bench" / "results"
RLOOP_DIR: Final = REPO / "bench" / ".peers" / "rloop"
RLOOP_VERSION: Final = os.environ.get("RLOOP_VERSION", "0.5.0")
RLOOP_PIN: Final = f"rloop=={RLOOP_VERSION}"
PROXY_CPU: Final = 0
LOAD_CPU: Final = 1
READY_TIMEOUT_S: Final = 60.0
BACKLOG_CONNECTIONS: Final = 512
"""wrk connections in the backlog study: more than the smallest backlog (and backpressure)."""
BURST_CONNECTIONS: Final = 1000
"""New connections opened at once, each sending one request, in the backlog study."""
SLOW_CONNECT_S: Final = 0.9
"""A burst request slower than this waited for a SYN retransmission (the kernel's first is 1 s)."""
STUDIES: Final = ("interface", "loop", "http1", "backlog")
CROSSWAY_BACKLOG: Final = "2048"
"""What src/crossway/server/serve.py passes granian today."""
BACKPRESSURE_TRIED: Final = "65536"
"""granian caps open connections per worker at `--backpressure` (default backlog / workers)."""


@dataclass(frozen=True)
class Variant:
    """One row: which proxy, served how."""

    name: str
    proxy: str
    """`reference`, `reference-reqwest`, `reference-rsgi` or `crossway`: rows compare within one."""
    app: str
    interface: str = "asgi"
    loop: str = "uvloop"
    options: tuple[str, ...] = ()
    """Further granian options."""
    env: tuple[tuple[str, str], ...] = ()
    serve: bool = False
    """Run `crossway serve --workers 1` (embedded granian, uvloop) instead of granian's CLI."""
    base: bool = False
    """The row the others of its proxy are compared with."""


REF: Final = "bench.reference_proxy:app"
REQWEST: Final = "bench.reference_proxy_reqwest:app"
RSGI: Final = "bench.reference_rsgi:app"
CROSSWAY: Final = "crossway.server.app:create_app"
CW_OPTS: Final = ("--factory", "--backlog", CROSSWAY_BACKLOG)


def study_rows(study: str) -> list[Variant]:
    """The rows of one study, base rows first."""
    if study == "interface":
        return [
            Variant("asgi + aiohttp", "reference", REF, base=True),
            Variant(
                "rsgi + aiohttp", "reference", RSGI, "rsgi", env=(("REFERENCE_CLIENT", "aiohttp"),)
            ),
            Variant("asgi + pyreqwest", "reference-reqwest", REQWEST, base=True),
            Variant(
                "asgi + pyreqwest, sized answer as one body message",
                "reference-reqwest",
                REQWEST,
                env=(("REFERENCE_ONE_BODY", "1"),),
            ),
            Variant(
                "rsgi + pyreqwest",
                "reference-reqwest",
                RSGI,
                "rsgi",
                env=(("REFERENCE_CLIENT", "reqwest"),),
            ),
        ]
    if study == "loop":
        return [
            Variant("reference-reqwest uvloop", "reference-reqwest", REQWEST, base=True),
            Variant("reference-reqwest asyncio", "reference-reqwest", REQWEST, loop="asyncio"),
            Variant("reference-reqwest rloop", "reference-reqwest", REQWEST, loop="rloop"),
            Variant("crossway serve (uvloop)", "crossway", CROSSWAY, serve=True, base=True),
            Variant("crossway uvloop", "crossway", CROSSWAY, options=CW_OPTS),
            Variant("crossway asyncio", "crossway", CROSSWAY, loop="asyncio", options=CW_OPTS),
            Variant("crossway rloop", "crossway", CROSSWAY, loop="rloop", options=CW_OPTS),
        ]
    if study == "http1":
        ref = [
            ("defaults", ()),
            ("--http1-pipeline-flush", ("--http1-pipeline-flush",)),
            ("--http1-buffer-size 65536", ("--http1-buffer-size", "65536")),
            ("--no-http1-keep-alive", ("--no-http1-keep-alive",)),
            ("--runtime-mode st", ("--runtime-mode", "st")),
            ("--task-impl rust", ("--task-impl", "rust")),
        ]
        cw = [
            ("defaults", ()),
            ("--http1-pipeline-flush", ("--http1-pipeline-flush",)),
            ("--runtime-mode st", ("--runtime-mode", "st")),
            ("--task-impl rust", ("--task-impl", "rust")),
        ]
        return [
            *(
                Variant(
                    f"reference-reqwest {n}", "reference-reqwest", REQWEST, options=o, base=not o
                )
                for n, o in ref
            ),
            *(
                Variant(f"crossway {n}", "crossway", CROSSWAY, options=CW_OPTS + o, base=not o)
                for n, o in cw
            ),
        ]
    if study == "backlog":
        return [
            *(
                Variant(
                    f"reference-reqwest --backlog {b}",
                    "reference-reqwest",
                    REQWEST,
                    options=("--backlog", b),
                    base=b == "1024",
                )
                for b in ("1024", "128", "2048")
            ),
            *(
                Variant(
                    f"crossway --backlog {b}",
                    "crossway",
                    CROSSWAY,
                    options=("--factory", "--backlog", b),
                    base=b == CROSSWAY_BACKLOG,
                )
                for b in (CROSSWAY_BACKLOG, "128", "1024")
            ),
            Variant(
                f"crossway --backlog {CROSSWAY_BACKLOG} --backpressure {BACKPRESSURE_TRIED}",
                "crossway",
                CROSSWAY,
                options=(
                    "--factory",
                    "--backlog",
                    CROSSWAY_BACKLOG,
                    "--backpressure",
                    BACKPRESSURE_TRIED,
                ),
            ),
        ]
    raise ValueError(f"unknown study {study!r}")


# --- starting a row ------------------------------------------------------------------------------


@dataclass
class Row:
    """A variant started for one mode, with its figures so far."""

    variant: Variant
    mode: Mode
    body: Path
    server: ServerProcess | None = None
    port: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    rounds32: list[LoadResult] = field(default_factory=list)
    rounds1: list[LoadResult] = field(default_factory=list)
    cpu32: list[float] = field(default_factory=list)
    bursts: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if self.server is not None and not self.server.alive():
            message += f"\nexited with code {self.server.process.returncode}:\n"
            message += self.server.log_tail()
        self.result.setdefault("failed", message)


def ensure_rloop() -> str | None:
    """bench/.peers/rloop holds rloop (pip --target); None if it is there, else why not."""
    if (RLOOP_DIR / "rloop").is_dir():
        return None
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(RLOOP_DIR), RLOOP_PIN],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        return f"pip install {RLOOP_PIN} failed: {done.stderr.strip()[-300:]}"
    return None


def argv_env(
    variant: Variant, mode: Mode, port: int, upstream: str
) -> tuple[list[str], dict[str, str]]:
    """How to start `variant`: its command line and environment."""
    prefix = "/stream" if mode == "stream" else ""
    env = dict(variant.env)
    if variant.proxy == "crossway":
        env |= {
            "CROSSWAY_CONFIG": str(REPO / "examples" / "openai.yaml"),
            "CROSSWAY_PORT": str(port),
            "CROSSWAY_ADMIN_PORT": str(free_port()),
            "OPENAI_BASE_URL": f"{upstream}{prefix}/v1",
            "OPENAI_API_KEY": UPSTREAM_KEY,
        }
    else:
        env["REFERENCE_UPSTREAM"] = upstream + prefix
    if variant.loop == "rloop":
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(RLOOP_DIR), os.environ.get("PYTHONPATH", "")) if p
        )
    if variant.serve:
        crossway = REPO / ".venv" / "bin" / "crossway"
        return [str(crossway), "serve", "--config", env["CROSSWAY_CONFIG"], "--workers", "1"], env
    granian = REPO / ".venv" / "bin" / "granian"
    argv = [
        str(granian),
        "--interface",
        variant.interface,
        "--loop",
        variant.loop,
        "--http",
        "1",
        "--no-ws",
        "--workers",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *variant.options,
        variant.app,
    ]
    return argv, env


def start_row(variant: Variant, mode: Mode, body: Path, upstream: str) -> Row:
    row = Row(variant, mode, body)
    row.result = {"row": variant.name, "proxy": variant.proxy, "mode": mode, "base": variant.base}
    if variant.loop == "rloop" and (why := ensure_rloop()) is not None:
        row.result["skipped"] = why
        return row
    row.port = free_port()
    argv, env = argv_env(variant, mode, row.port, upstream)
    slug = "".join(c if c.isalnum() else "-" for c in variant.name)
    row.server = start_pinned(
        slug, argv, cpu=PROXY_CPU, env=env, cwd=REPO, log=WORK / "logs" / f"{slug}-{mode}.log"
    )
    shown = [f"{k}={v}" for k, v in variant.env]
    if variant.loop == "rloop":
        shown.append("PYTHONPATH=bench/.peers/rloop")
    row.result["command"] = " ".join([*shown, *(a.replace(str(REPO) + "/", "") for a in argv)])
    try:
        answer = wait_ready(
            row.server,
            row.port,
            CLIENT_PATH,
            body.read_bytes(),
            _headers(),
            timeout_s=READY_TIMEOUT_S,
        )
        check_answer(answer.status, answer.body, mode)
    except (RuntimeError, CheckFailed, OSError) as exc:
        row.fail(exc)
    return row


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEY}"}


# --- loads ---------------------------------------------------------------------------------------


def _wrk(row: Row, connections: int, seconds: float) -> LoadResult:
    return run_wrk(
        f"http://127.0.0.1:{row.port}{CLIENT_PATH}",
        body=row.body,
        key=CLIENT_KEY,
        connections=connections,
        seconds=seconds,
        cpu=LOAD_CPU,
    )


def _measured(row: Row, connections: int, seconds: float) -> None:
    assert row.server is not None
    before = row.server.cpu_seconds()
    result = _wrk(row, connections, seconds)
    row.cpu32.append(row.server.cpu_seconds() - before)
    row.rounds32.append(result)


async def _one_new_connection(port: int, request: bytes) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        status = await reader.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            raise CheckFailed(f"burst answer {status!r}")
        await reader.read()  # Connection: close
    finally:
        writer.close()
    return time.perf_counter() - started


def burst(row: Row, count: int) -> dict[str, Any]:
    """`count` new connections at once, one request each: time per request and how many waited."""
    body = row.body.read_bytes()
    request = (
        f"POST {CLIENT_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body

    async def run() -> list[float | BaseException]:
        return await asyncio.gather(
            *(_one_new_connection(row.port, request) for _ in range(count)),
            return_exceptions=True,
        )

    os.sched_setaffinity(0, {LOAD_CPU})
    try:
        started = time.perf_counter()
        outcomes = asyncio.run(run())
        wall = time.perf_counter() - started
    finally:
        os.sched_setaffinity(0, {PROXY_CPU, LOAD_CPU})
    times = sorted(t for t in outcomes if isinstance(t, float))
    errors = [o for o in outcomes if not isinstance(o, float)]
    return {
        "connections": count,
        "wall_s": round(wall, 3),
        "ok": len(times),
        "errors": len(errors),
        "first_error": f"{type(errors[0]).__name__}: {errors[0]}" if errors else None,
        "p50_ms": round(1000 * statistics.median(times), 1) if times else None,
        "max_ms": round(1000 * times[-1], 1) if times else None,
        "slow": sum(t > SLOW_CONNECT_S for t in times),
    }


def guard(row: Row, step: Any, *args: Any) -> None:
    if "failed" in row.result or "skipped" in row.result:
        return
    try:
        step(row, *args)
    except (RuntimeError, CheckFailed, OSError, subprocess.SubprocessError) as exc:
        row.fail(exc)


def run_study(
    study: str, mode: Mode, upstream: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    body = WORK / "requests" / f"{mode}.json"
    body.parent.mkdir(parents=True, exist_ok=True)
    body.write_bytes(fixtures.request_body(stream=mode == "stream"))
    connections = BACKLOG_CONNECTIONS if study == "backlog" else 32
    rows = [start_row(v, mode, body, upstream) for v in study_rows(study)]
    try:
        for row in rows:
            guard(row, lambda r: _wrk(r, connections, args.warmup))
        for n in range(args.rounds):
            order = rows if n % 2 == 0 else rows[::-1]
            for row in order:
                guard(row, _measured, connections, args.seconds / args.rounds)
            for row in order:
                guard(row, lambda r: r.rounds1.append(_wrk(r, 1, args.seconds_one / args.rounds)))
            if study == "backlog":
                for row in order:
                    guard(row, lambda r: r.bursts.append(burst(r, BURST_CONNECTIONS)))
        for row in rows:
            guard(row, lambda r: check_answer(*_post(r), mode))
            summarize(row, connections)
    finally:
        for row in rows:
            if row.server is not None:
                row.server.stop()
    return [row.result for row in rows]


def _post(row: Row) -> tuple[int, bytes]:
    answer = post_once(row.port, CLIENT_PATH, row.body.read_bytes(), _headers())
    return answer.status, answer.body


def summarize(row: Row, connections: int) -> None:
    if "failed" in row.result or "skipped" in row.result or not row.rounds32:
        return
    r = row.result
    r["load"] = combine(row.rounds32)
    r["c1"] = combine(row.rounds1)
    cpu = sum(row.cpu32)
    requests = sum(x.requests for x in row.rounds32)
    r["requests_per_cpu_second"] = round(requests / cpu, 1) if cpu else None
    r["requests_per_cpu_second_rounds"] = [
        round(x.requests / c, 1) if c else None
        for x, c in zip(row.rounds32, row.cpu32, strict=True)
    ]
    r["proxy_cpu_percent"] = round(100 * cpu / sum(x.duration_s for x in row.rounds32), 1)
    if row.bursts:
        r["bursts"] = row.bursts
    assert row.server is not None
    r["rss_mb"] = round(row.server.rss_mb(), 1)


# --- report --------------------------------------------------------------------------------------


def ratios(runs: list[dict[str, Any]]) -> None:
    """Each measured row's per-CPU-second and req/s ratio to its proxy's base row (same study, mode)."""
    for run in runs:
        base = next(
            (
                b
                for b in runs
                if b["base"]
                and b["proxy"] == run["proxy"]
                and b["mode"] == run["mode"]
                and b["study"] == run["study"]
                and b.get("requests_per_cpu_second")
            ),
            None,
        )
        if base is None or not run.get("requests_per_cpu_second"):
            continue
        run["per_cpu_vs_base"] = round(
            run["requests_per_cpu_second"] / base["requests_per_cpu_second"], 3
        )
        run["rps_vs_base"] = round(run["load"]["rps"] / base["load"]["rps"], 3)
        run["vs"] = base["row"]


def _wrk_s(seconds: float) -> int:
    """The whole seconds wrk runs for (bench/load.py rounds, at least 1)."""
    return max(1, round(seconds))


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(data: dict[str, Any]) -> str:
    m, s = data["machine"], data["settings"]
    lines = [
        f"# Server settings study — {data['started']}",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}; "
        f"granian {m['granian']}, uvloop {m['uvloop']}, rloop {m['rloop']}, aiohttp {m['aiohttp']}, "
        f"pyreqwest {m['pyreqwest']}; {m['wrk']}",
        f"- Crossway at `{m['crossway_commit']}`",
        f"- Method: one granian worker per row pinned to core {PROXY_CPU}; nginx, wrk and the burst "
        f"client on core {LOAD_CPU}; {fixtures.REQUEST_BODY_SIZE} B request. Per study and mode the rows run "
        f"side by side and are loaded in turns: {s['warmup']:g} s warm-up each, then {s['rounds']} "
        f"rounds (order reversed every other round) of {_wrk_s(s['seconds'] / s['rounds'])} s at 32 "
        f"connections ({BACKLOG_CONNECTIONS} in the backlog study) and "
        f"{_wrk_s(s['seconds_one'] / s['rounds'])} s at 1 connection. "
        "**req per CPU-s** (requests over the proxy tree's own CPU time) is the figure compared; "
        "vs base is that figure over the base row's of the same proxy (req/s ratio in brackets).",
        f"- Load average at start {data['load_average_start']}, at end {data['load_average_end']}; "
        f"whole run {data['elapsed_s']} s.",
        "",
    ]
    for study in s["studies"]:
        for mode in s["modes"]:
            runs = [r for r in data["runs"] if r["study"] == study and r["mode"] == mode]
            if not runs:
                continue
            conns = BACKLOG_CONNECTIONS if study == "backlog" else 32
            head = (
                f"| row | req/s @{conns} | req per CPU-s | per-round req per CPU-s | vs base "
                f"| proxy CPU % | p50 @{conns} (ms) | p99 @{conns} (ms) | p50 @1 (ms) | errors |"
            )
            extra = ""
            if study == "backlog":
                head += " connections served (req/s x mean latency) |"
                extra = "---:|"
                head += f" burst of {BURST_CONNECTIONS}: p50 / max (ms), waited > {SLOW_CONNECT_S} s, errors |"
                extra += "---|"
            lines += [f"## {study} / {mode}", "", head, "|---|" + "---:|" * 9 + extra]
            for r in runs:
                name = f"**{r['row']}**" if r["base"] else r["row"]
                if "skipped" in r or "failed" in r:
                    why = (r.get("skipped") or r["failed"]).splitlines()[0].replace("|", "/")
                    lines.append(f"| {name} | {'skipped' if 'skipped' in r else 'FAILED'}: {why} |")
                    continue
                load, c1 = r["load"], r["c1"]
                ratio = (
                    f"{r['per_cpu_vs_base']:.2f} ({r['rps_vs_base']:.2f})"
                    if "per_cpu_vs_base" in r
                    else "-"
                )
                per_round = " / ".join(_n(x) for x in r["requests_per_cpu_second_rounds"])
                line = (
                    f"| {name} | {_n(load['rps'])} | {_n(r['requests_per_cpu_second'])} | {per_round} "
                    f"| {ratio} | {_n(r['proxy_cpu_percent'])} "
                    f"| {load['latency_us']['p50'] / 1000:.3f} | {load['latency_us']['p99'] / 1000:.3f} "
                    f"| {c1['latency_us']['p50'] / 1000:.3f} | {load['errors'] + c1['errors']} |"
                )
                if study == "backlog":
                    b = r.get("bursts", [])
                    line += f" {load['rps'] * load['latency_us']['mean'] / 1e6:.0f} |"
                    line += (
                        " "
                        + "; ".join(
                            f"{x['p50_ms']} / {x['max_ms']}, {x['slow']}, {x['errors']}" for x in b
                        )
                        + " |"
                    )
                lines.append(line)
            lines.append("")
    lines += [
        "Commands (each under `taskset -c <proxy core>`):",
        "",
        *sorted(
            {
                f"- {r['row']}: `{re.sub(r'--port [0-9]+', '--port <port>', r['command'])}`"
                for r in data["runs"]
                if r.get("command")
            }
        ),
        "",
    ]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    import platform

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "granian": pkg("granian"),
        "uvloop": pkg("uvloop"),
        "aiohttp": pkg("aiohttp"),
        "pyreqwest": pkg("pyreqwest"),
        "rloop": RLOOP_VERSION if (RLOOP_DIR / "rloop").is_dir() else "not installed",
        "crossway_commit": first_line(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"]),
        "wrk": first_line(["wrk", "--version"]).split(" [")[0],
        "somaxconn": Path("/proc/sys/net/core/somaxconn").read_text().strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", nargs="*", default=list(STUDIES), choices=STUDIES)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="loaded time per row, all rounds"
    )
    parser.add_argument("--seconds-one", type=float, default=2.0, help="1-connection time per row")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--check", action="store_true", help="only start every row and check one answer (no load)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.rounds = max(1, args.rounds)
    if args.check:
        return check_rows(args)
    with procs.bench_lock("server-options"):
        raise_group_priority()
        (WORK / "logs").mkdir(parents=True, exist_ok=True)
        files = fixtures.write_fixtures(WORK / "files")["openai-chat.json"].parent
        nginx_port = free_port()
        nginx = start_nginx(WORK, files, nginx_port, cpu=LOAD_CPU)
        started = dt.datetime.now()
        data: dict[str, Any] = {
            "started": started.isoformat(timespec="seconds"),
            "settings": {
                "studies": args.studies,
                "modes": args.modes,
                "rounds": args.rounds,
                "seconds": args.seconds,
                "seconds_one": args.seconds_one,
                "warmup": args.warmup,
            },
            "machine": machine_facts(),
            "load_average_start": load_average(),
            "runs": [],
        }
        try:
            wait_ready(None, nginx_port, "/healthz", b"", {}, timeout_s=10)
            upstream = f"http://127.0.0.1:{nginx_port}"
            for study in args.studies:
                for mode in args.modes:
                    print(f"[server-options] {study} / {mode}", flush=True)
                    for run in run_study(study, mode, upstream, args):
                        run["study"] = study
                        data["runs"].append(run)
                        print(f"[server-options]   {_line(run)}", flush=True)
        finally:
            nginx.stop()
    ratios(data["runs"])
    data["load_average_end"] = load_average()
    data["elapsed_s"] = round((dt.datetime.now() - started).total_seconds(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"server-options-{started.strftime('%Y-%m-%d-%H%M')}"
    (args.out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    markdown = render(data)
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    print(f"[server-options] wrote {args.out / stem}.md and .json", flush=True)
    return 0


def check_rows(args: argparse.Namespace) -> int:
    """Start each row of the chosen studies and modes, check one answer, stop it: no load, no lock."""
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    files = fixtures.write_fixtures(WORK / "files")["openai-chat.json"].parent
    nginx_port = free_port()
    nginx = start_nginx(WORK, files, nginx_port, cpu=LOAD_CPU)
    bad = 0
    try:
        wait_ready(None, nginx_port, "/healthz", b"", {}, timeout_s=10)
        for study in args.studies:
            for mode in args.modes:
                body = WORK / "requests" / f"{mode}.json"
                body.parent.mkdir(parents=True, exist_ok=True)
                body.write_bytes(fixtures.request_body(stream=mode == "stream"))
                for variant in study_rows(study):
                    row = start_row(variant, mode, body, f"http://127.0.0.1:{nginx_port}")
                    if row.server is not None:
                        row.server.stop()
                    verdict = row.result.get("failed") or row.result.get("skipped") or "ok"
                    bad += verdict != "ok"
                    print(f"{study} / {mode} / {variant.name}: {verdict}", flush=True)
    finally:
        nginx.stop()
    return 1 if bad else 0


def _line(run: dict[str, Any]) -> str:
    if "skipped" in run or "failed" in run:
        why: str = run.get("skipped") or run["failed"]
        return f"{run['row']}: " + why.splitlines()[0]
    return (
        f"{run['row']}: {run['load']['rps']:,.0f} req/s, "
        f"{run['requests_per_cpu_second']:,.0f} req per CPU-s, "
        f"p50 @1 {run['c1']['latency_us']['p50'] / 1000:.3f} ms"
    )


if __name__ == "__main__":
    raise SystemExit(main())
