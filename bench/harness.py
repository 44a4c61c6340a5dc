"""`make bench`: direct vs reference proxy vs Crossway vs LiteLLM, and the translation paths, in one run.

    .venv/bin/python -m bench.harness [--seconds 10] [--quick] [--profile] [--only NAME ...]

nginx and wrk run on the load core, each proxy on the proxy core with one worker. For every
target and mode (non-streaming `json`, streaming `stream`) the run measures requests/s and
latency at 32 connections, latency at 1 connection, time to first streamed byte and token
(streaming), and idle and peak RSS; it writes bench/results/YYYY-MM-DD-HHMM.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench import fixtures, profile, report
from bench.load import run_wrk
from bench.procs import RssSampler, ServerProcess, free_port, load_average, post_once, wait_ready
from bench.targets import CLIENT_KEY, MODES, Context, Mode, Target, all_targets
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


def measure(ctx: Context, target: Target, mode: Mode, settings: Settings) -> dict[str, Any]:
    """Start `target` for `mode`, load it, and return its figures (or why it was skipped)."""
    result: dict[str, Any] = {"target": target.name, "group": target.group, "mode": mode}
    reason = target.check(ctx)
    if reason is not None:
        result["skipped"] = reason
        return result
    body_path = request_file(ctx, target.model, mode)
    body = body_path.read_bytes()
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    if target.launch is None:
        port = int(ctx.upstream.rsplit(":", 1)[1])
        server: ServerProcess | None = None
    else:
        port = free_port()
        server = target.launch(ctx, mode, port)
    path = target.url_path(mode)
    url = f"http://127.0.0.1:{port}{path}"
    result["load_average_before"] = load_average()
    try:
        started = time.monotonic()
        answer = wait_ready(server, port, path, body, headers, timeout_s=target.ready_timeout_s)
        result["startup_s"] = round(time.monotonic() - started, 2)
        check_answer(answer.status, answer.body, mode)
        if server is not None:
            result["rss_idle_mb"] = round(server.rss_mb(), 1)
        run_wrk(
            url,
            body=body_path,
            key=CLIENT_KEY,
            connections=32,
            seconds=settings.warmup,
            cpu=ctx.load_cpu,
        )
        cpu_before = server.cpu_seconds() if server else 0.0
        wall_before = time.monotonic()
        if server is not None:
            with RssSampler(server) as sampler:
                many = run_wrk(
                    url,
                    body=body_path,
                    key=CLIENT_KEY,
                    connections=32,
                    seconds=settings.seconds,
                    cpu=ctx.load_cpu,
                )
            result["rss_peak_mb"] = round(sampler.peak_mb, 1)
            result["proxy_cpu_percent"] = round(
                100 * (server.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before), 1
            )
        else:
            many = run_wrk(
                url,
                body=body_path,
                key=CLIENT_KEY,
                connections=32,
                seconds=settings.seconds,
                cpu=ctx.load_cpu,
            )
        one = run_wrk(
            url,
            body=body_path,
            key=CLIENT_KEY,
            connections=1,
            seconds=settings.seconds_one,
            cpu=ctx.load_cpu,
        )
        result["c32"] = many.as_dict()
        result["c1"] = one.as_dict()
        if mode == "stream":
            result["first_byte"] = _probe(port, path, body, headers, settings)
        if settings.profile and target.profile and server is not None:
            result["profile"] = _profile(ctx, target, mode, server, url, body_path, settings)
        # One more check after load: the target still answers correctly.
        after = post_once(port, path, body, headers)
        check_answer(after.status, after.body, mode)
        if server is not None:
            result["rss_after_mb"] = round(server.rss_mb(), 1)
    except (RuntimeError, CheckFailed, ProbeError, OSError) as exc:
        result["failed"] = f"{type(exc).__name__}: {exc}"
    finally:
        if server is not None:
            server.stop()
    result["load_average_after"] = load_average()
    return result


def _probe(
    port: int, path: str, body: bytes, headers: dict[str, str], settings: Settings
) -> dict[str, Any]:
    # The probe runs on the load core, like wrk.
    os.sched_setaffinity(0, {LOAD_CPU})
    try:
        summary = probe(
            "127.0.0.1",
            port,
            path,
            body,
            headers=headers,
            marker=fixtures.FIRST_TOKEN_MARKER,
            count=settings.probe_count,
            warmup=max(20, settings.probe_count // 10),
        ).summary()
    finally:
        os.sched_setaffinity(0, {0, 1})
    return summary


def _profile(
    ctx: Context,
    target: Target,
    mode: Mode,
    server: ServerProcess,
    url: str,
    body_path: Path,
    settings: Settings,
) -> dict[str, Any]:
    binary = profile.pyspy_binary(ctx.repo)
    if binary is None:
        return {"error": "py-spy not installed (BENCH_PROFILE=1 bash bench/run.sh installs it)"}
    seconds = max(3, int(settings.seconds))
    output = ctx.work / "profiles" / f"{target.name}-{mode}.txt"
    output.parent.mkdir(parents=True, exist_ok=True)
    recorder = profile.start_record(binary, server.worker_pid(), seconds, output)
    run_wrk(
        url, body=body_path, key=CLIENT_KEY, connections=32, seconds=seconds + 1, cpu=ctx.load_cpu
    )
    _, err = recorder.communicate(timeout=60)
    if recorder.returncode != 0 or not output.exists():
        return {
            "error": f"py-spy exit {recorder.returncode}: {err.decode(errors='replace').strip()[-300:]}"
        }
    summary = profile.summarize(output)
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
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="wrk duration at 32 connections"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="wrk warm-up before measuring")
    parser.add_argument(
        "--seconds-one", type=float, default=5.0, help="wrk duration at 1 connection"
    )
    parser.add_argument("--probe-count", type=int, default=300, help="sequential first-byte probes")
    parser.add_argument(
        "--quick", action="store_true", help="short smoke run (2 s per measurement)"
    )
    parser.add_argument("--profile", action="store_true", help="also profile Crossway with py-spy")
    parser.add_argument("--only", nargs="*", default=[], help="target names to run (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.seconds_one, args.probe_count = 2.0, 1.0, 1.0, 50
    return Settings(
        args.seconds,
        args.warmup,
        args.seconds_one,
        args.probe_count,
        args.profile,
        args.only,
        args.out,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
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
            "warmup_s": settings.warmup,
            "seconds_c1": settings.seconds_one,
            "probe_count": settings.probe_count,
            "request_body_bytes": fixtures.REQUEST_BODY_SIZE,
            "proxy_cpu": PROXY_CPU,
            "load_cpu": LOAD_CPU,
        },
        "machine": machine_facts(ctx),
        "load_average_start": load_average(),
        "runs": [],
    }
    try:
        wait_ready(None, nginx_port, "/healthz", b"", {}, timeout_s=10)
        targets = [t for t in all_targets() if not settings.only or t.name in settings.only]
        for mode in MODES:
            for target in targets:
                print(f"[bench] {target.name} / {mode} ...", flush=True)
                run = measure(ctx, target, mode, settings)
                results["runs"].append(run)
                print(f"[bench]   {report.one_line(run)}", flush=True)
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
        f"[bench] wrote bench/results/{stem}.md and .json in {results['elapsed_s']} s", flush=True
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
