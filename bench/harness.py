"""`make bench`: direct vs the reference proxies vs Crossway vs LiteLLM, and translation, in one run.

    .venv/bin/python -m bench.harness [--seconds 10] [--quick] [--profile] [--only NAME ...]

The references are the thinnest passthroughs on Crossway's own stack: granian + aiohttp
(`reference`) and granian + pyreqwest (`reference-reqwest`), so the ceiling moves with the
client Crossway uses. nginx and wrk run on the load core, each proxy on the proxy core with one
worker. For every target and mode (non-streaming `json`, streaming `stream`) the run measures
requests/s and requests per CPU-second of the proxy at 32 connections, latency at 32 and at 1
connection, time to first streamed byte and token (streaming), and idle and peak RSS; it writes
bench/results/YYYY-MM-DD-HHMM.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from bench import fixtures, profile, report
from bench.load import LoadResult, run_wrk
from bench.procs import (
    RssSampler,
    ServerProcess,
    free_port,
    load_average,
    post_once,
    raise_group_priority,
    wait_ready,
)
from bench.targets import MODES, Context, Mode, Target, all_targets
from bench.ttfb import ProbeError, probe
from bench.upstream import start_nginx

REPO: Final = Path(__file__).resolve().parent.parent
PROXY_CPU: Final = 0
LOAD_CPU: Final = 1


@dataclass
class Settings:
    seconds: float
    warmup: float
    seconds_one: float
    probe_count: int
    profile: bool
    only: list[str]
    rounds: int
    out: Path


class CheckFailed(Exception):
    """A target answered, but not what a client expects."""


def check_answer(status: int, body: bytes, mode: Mode) -> None:
    """The answer is a 200 with the completion's text (and, streamed, a closing `[DONE]`)."""
    if status != 200:
        raise CheckFailed(f"status {status}: {body[:300]!r}")
    if mode == "json" and b"Hello! Crossway is a gateway" not in body:
        raise CheckFailed(f"completion text missing: {body[:300]!r}")
    if mode == "stream" and (fixtures.FIRST_TOKEN_MARKER not in body or b"[DONE]" not in body):
        raise CheckFailed(f"not an OpenAI chunk stream ending in [DONE]: {body[:300]!r}")


def request_file(ctx: Context, model: str, mode: Mode) -> Path:
    path = ctx.work / "requests" / f"{model}-{mode}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fixtures.request_body(stream=mode == "stream", model=model))
    return path


@dataclass
class Live:
    """A target started for one mode, with its figures so far."""

    target: Target
    mode: Mode
    server: ServerProcess | None
    port: int
    body_path: Path
    result: dict[str, Any]
    rounds32: list[LoadResult] = field(default_factory=list)
    rounds1: list[LoadResult] = field(default_factory=list)
    cpu32: list[float] = field(default_factory=list)
    sampler: RssSampler | None = None

    @property
    def path(self) -> str:
        return self.target.url_path(self.mode)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def fail(self, exc: BaseException) -> None:
        self.result["failed"] = f"{type(exc).__name__}: {exc}"


def headers(target: Target) -> dict[str, str]:
    """The headers every request to `target` carries."""
    return {"Authorization": f"Bearer {target.key()}"}


def start(ctx: Context, target: Target, mode: Mode) -> Live:
    """Start `target` for `mode` and wait until it answers correctly (or record why not)."""
    result: dict[str, Any] = {"target": target.name, "group": target.group, "mode": mode}
    body_path = request_file(ctx, target.model, mode)
    live = Live(target, mode, None, 0, body_path, result)
    reason = target.check(ctx)
    if reason is not None:
        result["skipped"] = reason
        return live
    if target.launch is None:
        live.port = int(ctx.upstream.rsplit(":", 1)[1])
    else:
        live.port = free_port()
        live.server = target.launch(ctx, mode, live.port)
        result["command"] = " ".join(a.replace(str(ctx.repo) + "/", "") for a in live.server.argv)
    started = time.monotonic()
    try:
        answer = wait_ready(
            live.server,
            live.port,
            live.path,
            body_path.read_bytes(),
            headers(target),
            timeout_s=target.ready_timeout_s,
        )
        result["startup_s"] = round(time.monotonic() - started, 2)
        check_answer(answer.status, answer.body, mode)
    except (RuntimeError, CheckFailed, OSError) as exc:
        live.fail(exc)
    return live


def load(ctx: Context, live: Live, connections: int, seconds: float) -> LoadResult:
    return run_wrk(
        live.url,
        body=live.body_path,
        key=live.target.key(),
        connections=connections,
        seconds=seconds,
        cpu=ctx.load_cpu,
    )


def measure_group(
    ctx: Context, targets: list[Target], mode: Mode, settings: Settings
) -> list[dict[str, Any]]:
    """Start every target of the group, then load them in turns, round after round.

    Interleaving spreads each target's measurement over the same minutes, so bursts of other
    work on this shared machine hit every target alike instead of skewing one ratio.
    """
    lives = [start(ctx, target, mode) for target in targets]
    running = [lv for lv in lives if "skipped" not in lv.result and "failed" not in lv.result]
    try:
        for live in running:
            if live.server is not None:
                live.result["rss_idle_mb"] = round(live.server.rss_mb(), 1)
                live.result["rss_idle_breakdown_mb"] = live.server.rss_breakdown_mb()
                live.sampler = RssSampler(live.server).start()
            live.result["load_average_before"] = load_average()
        for live in running:
            _guard(live, lambda lv: load(ctx, lv, 32, settings.warmup))
        for _ in range(settings.rounds):
            for live in running:
                _guard(live, lambda lv: _round32(ctx, lv, settings.seconds / settings.rounds))
            for live in running:
                _guard(
                    live,
                    lambda lv: lv.rounds1.append(
                        load(ctx, lv, 1, settings.seconds_one / settings.rounds)
                    ),
                )
        for live in running:
            if live.sampler is not None:
                live.sampler.stop()
                live.result["rss_peak_mb"] = round(live.sampler.peak_mb, 1)
            if "failed" in live.result:
                continue
            live.result["c32"] = combine(live.rounds32)
            live.result["c1"] = combine(live.rounds1)
            if live.cpu32:
                cpu = sum(live.cpu32)
                live.result["proxy_cpu_percent"] = round(
                    100 * cpu / sum(r.duration_s for r in live.rounds32), 1
                )
                live.result["requests_per_cpu_second"] = round(
                    sum(r.requests for r in live.rounds32) / cpu, 1
                )
            if mode == "stream":
                _guard(live, lambda lv: lv.result.__setitem__("first_byte", _probe(lv, settings)))
            if settings.profile and live.target.profile and live.server is not None:
                _guard(
                    live, lambda lv: lv.result.__setitem__("profile", _profile(ctx, lv, settings))
                )
            # The target still answers correctly after the load.
            _guard(live, lambda lv: check_answer(*_post(lv), mode))
            if live.server is not None:
                live.result["rss_after_mb"] = round(live.server.rss_mb(), 1)
            live.result["load_average_after"] = load_average()
    finally:
        for live in lives:
            if live.sampler is not None:
                live.sampler.stop()
            if live.server is not None:
                live.server.stop()
    return [live.result for live in lives]


def _post(live: Live) -> tuple[int, bytes]:
    answer = post_once(live.port, live.path, live.body_path.read_bytes(), headers(live.target))
    return answer.status, answer.body


def _round32(ctx: Context, live: Live, seconds: float) -> None:
    cpu_before = live.server.cpu_seconds() if live.server else 0.0
    result = load(ctx, live, 32, seconds)
    if live.server is not None:
        live.cpu32.append(live.server.cpu_seconds() - cpu_before)
    live.rounds32.append(result)


def _guard(live: Live, step: Callable[[Live], object]) -> None:
    """Run one measuring step unless the target already failed; record a failure."""
    if "failed" in live.result:
        return
    try:
        step(live)
    except (RuntimeError, CheckFailed, ProbeError, OSError, subprocess.SubprocessError) as exc:
        live.fail(exc)
        if live.server is not None and not live.server.alive():
            live.result["failed"] += (
                f"\nthe server had exited with code {live.server.process.returncode}; log tail:\n"
                + live.server.log_tail()
            )


def combine(rounds: list[LoadResult]) -> dict[str, Any]:
    """Requests/s over all rounds; latency percentiles as the median of the rounds' own."""
    duration = sum(r.duration_s for r in rounds)
    requests = sum(r.requests for r in rounds)
    keys = rounds[0].latency_us.keys()
    return {
        "connections": rounds[0].connections,
        "duration_s": round(duration, 3),
        "requests": requests,
        "errors": sum(r.errors for r in rounds),
        "rps": round(requests / duration, 1) if duration else 0.0,
        "rps_rounds": [round(r.rps, 1) for r in rounds],
        "latency_us": {k: statistics.median(r.latency_us[k] for r in rounds) for k in keys},
    }


def _probe(live: Live, settings: Settings) -> dict[str, Any]:
    # The probe runs on the load core, like wrk.
    os.sched_setaffinity(0, {LOAD_CPU})
    try:
        summary = probe(
            "127.0.0.1",
            live.port,
            live.path,
            live.body_path.read_bytes(),
            headers=headers(live.target),
            marker=fixtures.FIRST_TOKEN_MARKER,
            count=settings.probe_count,
            warmup=max(20, settings.probe_count // 10),
        ).summary()
    finally:
        os.sched_setaffinity(0, {0, 1})
    return summary


def _profile(ctx: Context, live: Live, settings: Settings) -> dict[str, Any]:
    """Sample the serving worker with py-spy while wrk loads it at 32 connections."""
    assert live.server is not None
    binary = profile.pyspy_binary(ctx.repo)
    if binary is None:
        return {"error": "py-spy not installed (BENCH_PROFILE=1 bash bench/run.sh installs it)"}
    seconds = max(3, int(settings.seconds))
    output = ctx.work / "profiles" / f"{live.target.name}-{live.mode}.txt"
    output.parent.mkdir(parents=True, exist_ok=True)
    recorder = profile.start_record(
        binary, live.server.worker_pid(), seconds, output, cpu=ctx.load_cpu
    )
    load(ctx, live, 32, seconds + 1)
    _, err = recorder.communicate(timeout=60)
    if recorder.returncode != 0 or not output.exists():
        return {
            "error": f"py-spy exit {recorder.returncode}: {err.decode(errors='replace').strip()[-300:]}"
        }
    per_cpu_second = live.result.get("requests_per_cpu_second")
    summary = profile.summarize(
        output, cpu_us_per_request=1e6 / per_cpu_second if per_cpu_second else None
    )
    summary["collapsed"] = str(output.relative_to(ctx.repo))
    return summary


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not found"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine_facts(ctx: Context) -> dict[str, Any]:
    cpu_model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    litellm_version = _version(
        [
            str(ctx.repo / "bench/.peers/litellm/bin/python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ]
    )
    return {
        "cpu": cpu_model,
        "cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "granian": pkg("granian"),
        "aiohttp": pkg("aiohttp"),
        "pyreqwest": pkg("pyreqwest"),
        "uvloop": pkg("uvloop"),
        "crossway": pkg("crossway"),
        "crossway_commit": _version(["git", "-C", str(ctx.repo), "log", "-1", "--format=%h %s"]),
        "nginx": _version(["nginx", "-v"]) if Path("/usr/sbin/nginx").exists() else "not found",
        "wrk": _version(["wrk", "--version"]).split(" [")[0],
        "litellm": litellm_version,
    }


def parse_args(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=12.0, help="wrk time at 32 connections")
    parser.add_argument("--seconds-one", type=float, default=6.0, help="wrk time at 1 connection")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds those are split in"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="wrk warm-up per target")
    parser.add_argument("--probe-count", type=int, default=300, help="sequential first-byte probes")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 s / 1 s")
    parser.add_argument("--profile", action="store_true", help="also profile Crossway with py-spy")
    parser.add_argument("--only", nargs="*", default=[], help="target names to run (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.seconds_one, args.rounds, args.warmup, args.probe_count = 2, 1, 1, 1, 50
    return Settings(
        seconds=args.seconds,
        warmup=args.warmup,
        seconds_one=args.seconds_one,
        probe_count=args.probe_count,
        profile=args.profile,
        only=args.only,
        rounds=max(1, args.rounds),
        out=args.out,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    raise_group_priority()  # nginx, wrk and the probe run in this process's session
    work = REPO / "bench" / ".work" / "run"
    files = fixtures.write_fixtures(work / "files")["openai-chat.json"].parent
    nginx_port = free_port()
    nginx = start_nginx(work, files, nginx_port, cpu=LOAD_CPU)
    ctx = Context(
        repo=REPO,
        work=work,
        upstream=f"http://127.0.0.1:{nginx_port}",
        proxy_cpu=PROXY_CPU,
        load_cpu=LOAD_CPU,
    )
    started_at = dt.datetime.now()
    results: dict[str, Any] = {
        "started": started_at.isoformat(timespec="seconds"),
        "settings": {
            "seconds_c32": settings.seconds,
            "rounds": settings.rounds,
            "warmup_s": settings.warmup,
            "seconds_c1": settings.seconds_one,
            "probe_count": settings.probe_count,
            "request_body_bytes": fixtures.REQUEST_BODY_SIZE,
            "proxy_cpu": PROXY_CPU,
            "load_cpu": LOAD_CPU,
            "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        },
        "machine": machine_facts(ctx),
        "load_average_start": load_average(),
        "runs": [],
    }
    try:
        wait_ready(None, nginx_port, "/healthz", b"", {}, timeout_s=10)
        order = [t.name for t in all_targets()]
        targets = [t for t in all_targets() if not settings.only or t.name in settings.only]
        for mode in MODES:
            # Python proxies are measured in interleaved rounds; LiteLLM alone, in one round.
            together = [t for t in targets if t.interleave]
            alone = [t for t in targets if not t.interleave]
            if together:
                names = ", ".join(t.name for t in together)
                print(f"[bench] {mode}: {names} (interleaved)", flush=True)
            runs = measure_group(ctx, together, mode, settings) if together else []
            for target in alone:
                print(f"[bench] {mode}: {target.name}", flush=True)
                runs += measure_group(ctx, [target], mode, replace(settings, rounds=1))
            runs.sort(key=lambda run: order.index(run["target"]))
            for run in runs:
                print(f"[bench]   {run['target']} / {mode}: {report.one_line(run)}", flush=True)
            results["runs"] += runs
    finally:
        nginx.stop()
    results["load_average_end"] = load_average()
    results["elapsed_s"] = round((dt.datetime.now() - started_at).total_seconds(), 1)
    settings.out.mkdir(parents=True, exist_ok=True)
    stem = started_at.strftime("%Y-%m-%d-%H%M")
    (settings.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = report.render(results)
    (settings.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    print(
        f"[bench] wrote {settings.out / stem}.md and .json in {results['elapsed_s']} s", flush=True
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
