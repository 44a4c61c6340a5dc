"""The accounting bench (issue 9): what virtual keys, rate limits and spend recording cost.

    .venv/bin/python -m bench.accounting [--seconds 12] [--rounds 3] [--modes json stream]
        [--only plain keys-local keys-redis litellm-key] [--profile]

In one run, the same OpenAI Chat request (bench/fixtures.py, about 1 KB; answered by nginx with a
fixed completion, streamed or not) through:

- `plain`: a Crossway route with no policies (bench/configs/accounting-plain.yaml);
- `keys-local`: the same route with `virtual_key` (a key made with
  `crossway.store.key_admin.create_key` in the SQLite store of a fresh `CROSSWAY_DATA_DIR`
  before the gateway starts; its budget, huge, is checked on every call), a `rate_limit` of
  requests and one of tokens per key (huge, local) and spend recorded for every call;
- `keys-redis`: the same with `accounting.store: redis` and both limits `mode: global`
  (redis-server started here on a free loopback port);
- `litellm-key`: LiteLLM's proxy with a virtual key and its Postgres database, when it runs here.

Each gateway runs with one worker pinned to core 0; nginx, wrk and redis-server share core 1.
wrk loads each target at 32 connections (requests/s, gateway requests per CPU-second, p50/p99)
and at 1 connection (latency), in interleaved rounds. Every target's answer is checked before
and after the load (200 and the completion; the keys rows also carry `x-ratelimit-*`), wrk's
non-2xx count is reported, and the spend records the store holds after the gateway stopped are
counted against the answers. For keys-redis, Redis `INFO commandstats` is read around every
measured load: commands per request. Writes bench/results/accounting-YYYY-MM-DD-HHMM.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from bench import fixtures, profile
from bench.harness import CheckFailed, check_answer, combine
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
from bench.upstream import start_nginx

REPO: Final = Path(__file__).resolve().parent.parent
WORK: Final = REPO / "bench" / ".work" / "accounting"
RESULTS: Final = REPO / "bench" / "results"
CONFIGS: Final = REPO / "bench" / "configs"
LITELLM: Final = REPO / "bench" / ".peers" / "litellm"
PROXY_CPU: Final = 0
LOAD_CPU: Final = 1
CLIENT_PATH: Final = "/v1/chat/completions"
UPSTREAM_KEY: Final = "sk-bench-upstream"
PLAIN_KEY: Final = "sk-bench-plain"
"""What the plain row's client sends (Crossway replaces it with the upstream key)."""
KEY_BUDGET_USD: Final = 1e6
"""The virtual key's monthly budget: checked on every call, never reached."""
HUGE: Final = 1_000_000_000
"""The limits in the keys configs: counted on every call, never reached."""
READY_TIMEOUT_S: Final = 60.0
LITELLM_READY_TIMEOUT_S: Final = 180.0
GOALS: Final = {"keys-local": 0.90, "keys-redis": 0.80}
"""Throughput of each row over `plain` that issue 9 asks for."""
LITELLM_MASTER_KEY: Final = "sk-bench-master"
PRISMA_PROBE_TIMEOUT_S: Final = 120.0
MONITOR_SECONDS: Final = 3.0
ACCOUNTING_TOP: Final = 25
READ_COMMANDS: Final = frozenset({"get", "mget", "hget", "hgetall", "zrange", "smembers"})
"""The extra (unmeasured) load during which Redis MONITOR attributes commands."""

Mode = Literal["json", "stream"]
MODES: Final[tuple[Mode, ...]] = ("json", "stream")
TARGETS: Final = ("plain", "keys-local", "keys-redis", "litellm-key")


# --- Redis ---------------------------------------------------------------------------------------


@dataclass
class Redis:
    """A redis-server of this run (no persistence), pinned to the load core."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command_calls(self) -> dict[str, int]:
        """`INFO commandstats`: calls so far per command (lower case)."""
        import redis

        client = redis.Redis(port=self.port)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        out: dict[str, int] = {}
        for name, value in stats.items():
            if name.startswith("cmdstat_") and isinstance(value, dict):
                out[name.removeprefix("cmdstat_")] = int(value.get("calls", 0))
        return out

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_redis() -> Redis:
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    argv = ["taskset", "-c", str(LOAD_CPU), binary, "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        argv,
        cwd=tempfile.mkdtemp(prefix="redis-", dir=WORK),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Redis(port, process)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                if client.ping():
                    return server
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    server.stop()
                    raise RuntimeError("redis-server did not answer PING") from None
            time.sleep(0.05)
    finally:
        client.close()


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


MONITOR_LINE: Final = re.compile(rb'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"')


def monitor_sample(redis: Redis, live: Live, seconds: float) -> dict[str, Any]:
    """Which commands the gateway sends Redis itself and which its Lua scripts run, per request:
    `redis-cli MONITOR` (it slows Redis, so this load is not one of the measured ones) while wrk
    loads the target at 32 connections. `INFO commandstats` counts both kinds together."""
    out = WORK / "logs" / f"monitor-{live.mode}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as sink:
        monitor = subprocess.Popen(
            ["taskset", "-c", str(LOAD_CPU), "redis-cli", "-p", str(redis.port), "monitor"],
            stdout=sink,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 5
            while out.stat().st_size == 0 and time.monotonic() < deadline:
                time.sleep(0.05)  # MONITOR answers OK once it is on
            result = load(live, 32, seconds)
        finally:
            monitor.terminate()
            monitor.wait(timeout=10)
    sent: dict[str, int] = {}
    scripted: dict[str, int] = {}
    for line in out.read_bytes().splitlines():
        match = MONITOR_LINE.match(line)
        if match is None:
            continue
        source, command = match.group(1), match.group(2).decode().lower()
        table = scripted if source == b"lua" else sent
        table[command] = table.get(command, 0) + 1
    requests = max(1, result.requests)
    return {
        "requests": result.requests,
        "sent_per_request": {k: round(v / requests, 4) for k, v in sorted(sent.items())},
        "in_scripts_per_request": {k: round(v / requests, 4) for k, v in sorted(scripted.items())},
        "sent": dict(sorted(sent.items())),
    }


# --- virtual keys ----------------------------------------------------------------------------------


def store_config(data_dir: Path, redis_url: str | None) -> Any:
    from crossway.config.accounting import RedisAccountingStore, SqliteAccountingStore

    if redis_url is not None:
        return RedisAccountingStore(type="redis", url=redis_url)  # type: ignore[arg-type]
    return SqliteAccountingStore(path=str(data_dir / "accounting.sqlite3"))


def create_key(data_dir: Path, redis_url: str | None, name: str) -> tuple[str, str]:
    """A virtual key with a huge monthly budget, made in the store the gateway will open:
    (its secret, its id)."""
    from crossway.store import key_admin
    from crossway.store.accounting import open_store

    async def go() -> tuple[str, str]:
        store = open_store(store_config(data_dir, redis_url))
        await store.open()
        try:
            secret, key = await key_admin.create_key(
                store, name=name, max_budget=KEY_BUDGET_USD, budget_period="monthly"
            )
            return secret, key.id
        finally:
            await store.close()

    return asyncio.run(go())


def recorded_spend(data_dir: Path, redis_url: str | None, key_id: str) -> dict[str, Any]:
    """The spend the store holds for `key_id` (read after the gateway stopped and flushed)."""
    from crossway.store.accounting import open_store

    async def go() -> dict[str, Any]:
        store = open_store(store_config(data_dir, redis_url))
        await store.open()
        try:
            rows = await store.spend_report(["key"], None, None, {"key": key_id})
        finally:
            await store.close()
        row = rows[0] if rows else {}
        return {
            "requests": int(row.get("requests", 0)),
            "cost_usd": round(float(row.get("cost", 0.0)), 6),
        }

    return asyncio.run(go())


# --- targets -------------------------------------------------------------------------------------


@dataclass
class Live:
    """A target started for one mode, with its figures so far."""

    name: str
    mode: Mode
    server: ServerProcess | None = None
    port: int = 0
    key: str = PLAIN_KEY
    key_id: str | None = None
    data_dir: Path | None = None
    redis_url: str | None = None
    command: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    rounds32: list[LoadResult] = field(default_factory=list)
    rounds1: list[LoadResult] = field(default_factory=list)
    cpu32: list[float] = field(default_factory=list)
    redis_calls: dict[str, int] = field(default_factory=dict)
    redis_requests: int = 0
    answered: int = 0
    """Every 200 this target gave: warm-up, measured loads and checks (spend is recorded for
    each)."""

    @property
    def body(self) -> Path:
        return request_file(self.mode)

    def fail(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if self.server is not None and not self.server.alive():
            message += f"\nexited with code {self.server.process.returncode}:\n"
            message += self.server.log_tail()
        self.result.setdefault("failed", message)


def request_file(mode: Mode) -> Path:
    path = WORK / "requests" / f"{mode}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fixtures.request_body(stream=mode == "stream"))
    return path


def upstream_base(nginx_port: int, mode: Mode) -> str:
    return f"http://127.0.0.1:{nginx_port}{'/stream' if mode == 'stream' else ''}/v1"


def start_crossway(name: str, mode: Mode, nginx_port: int, redis: Redis | None) -> Live:
    live = Live(name, mode)
    live.result = {"target": name, "mode": mode}
    live.data_dir = Path(tempfile.mkdtemp(prefix=f"data-{name}-{mode}-", dir=WORK))
    if name == "keys-redis":
        assert redis is not None
        live.redis_url = redis.url
    if name != "plain":
        live.key, live.key_id = create_key(live.data_dir, live.redis_url, f"bench-{name}-{mode}")
    live.port = free_port()
    config = CONFIGS / f"accounting-{name}.yaml"
    argv = [str(REPO / ".venv" / "bin" / "crossway"), "serve", "--config", str(config)]
    argv += ["--workers", "1"]
    env = {
        "CROSSWAY_PORT": str(live.port),
        "CROSSWAY_ADMIN_PORT": str(free_port()),
        "CROSSWAY_DATA_DIR": str(live.data_dir),
        "OPENAI_BASE_URL": upstream_base(nginx_port, mode),
        "OPENAI_API_KEY": UPSTREAM_KEY,
    }
    if live.redis_url is not None:
        env["REDIS_URL"] = live.redis_url
    live.command = f"crossway serve --config bench/configs/accounting-{name}.yaml --workers 1"
    live.server = start_pinned(
        f"crossway-{name}",
        argv,
        cpu=PROXY_CPU,
        env=env,
        cwd=REPO,
        log=WORK / "logs" / f"crossway-{name}-{mode}.log",
    )
    ready(live)
    return live


def ready(live: Live) -> None:
    """Wait until the target answers the benchmark's request correctly (a key made before the
    start is in the key cache once the ledger loaded; until then, virtual keys get 503)."""
    timeout = LITELLM_READY_TIMEOUT_S if live.name == "litellm-key" else READY_TIMEOUT_S
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = wait_ready(
                live.server,
                live.port,
                CLIENT_PATH,
                live.body.read_bytes(),
                {"Authorization": f"Bearer {live.key}"},
                timeout_s=max(1.0, deadline - time.monotonic()),
            )
        except RuntimeError as exc:
            live.fail(exc)
            return
        try:
            check_answer(answer.status, answer.body, live.mode)
            live.answered += 1
            return
        except CheckFailed as exc:
            last = str(exc)
        time.sleep(0.2)
    live.fail(RuntimeError(f"never answered correctly in {timeout:.0f} s: {last}"))


def check_once(live: Live) -> None:
    """One request: a 200 with the completion; a keys row also shows its rate limits."""
    answer = post_once(
        live.port,
        CLIENT_PATH,
        live.body.read_bytes(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {live.key}"},
    )
    check_answer(answer.status, answer.body, live.mode)
    live.answered += 1
    if live.name.startswith("keys-"):
        limit = answer.headers.get("x-ratelimit-limit-requests")
        if limit != str(HUGE):
            raise CheckFailed(f"no x-ratelimit-limit-requests: {HUGE} header: {answer.headers}")
        live.result["ratelimit_headers"] = {
            k: v for k, v in answer.headers.items() if k.startswith("x-ratelimit-")
        }


# --- LiteLLM with a virtual key and Postgres ------------------------------------------------------


LITELLM_CONFIG: Final = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {api_base}
      api_key: {key}
general_settings:
  master_key: {master}
  database_url: {database_url}
"""


def litellm_unavailable() -> str | None:
    """Why LiteLLM's proxy cannot keep virtual keys in Postgres here (None: it can)."""
    if not (LITELLM / "bin" / "litellm").exists():
        return "bench/.peers/litellm is not installed (bench/run.sh installs it)"
    if shutil.which("pg_ctl") is None and not Path("/usr/lib/postgresql").is_dir():
        return "Postgres is not installed (apt-get install postgresql)"
    probe = subprocess.run(
        [str(LITELLM / "bin" / "python"), "-c", "import prisma"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        return (
            "LiteLLM keeps virtual keys in its database through Prisma, and `prisma` is not in "
            "bench/.peers/litellm (`bench/.peers/litellm/bin/pip install prisma`; then the "
            "Prisma CLI fetches its query engine from binaries.prisma.sh, off this machine's "
            "reach)"
        )
    # `prisma version` installs the Prisma CLI (npm) and downloads its engines on first use.
    try:
        done = subprocess.run(
            [str(LITELLM / "bin" / "prisma"), "version"],
            capture_output=True,
            text=True,
            timeout=PRISMA_PROBE_TIMEOUT_S,
            check=False,
            cwd=WORK,
        )
    except subprocess.TimeoutExpired:
        return f"`prisma version` did not finish in {PRISMA_PROBE_TIMEOUT_S:.0f} s"
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).strip().splitlines() if ln.strip()]
        return (
            "LiteLLM keeps virtual keys in Postgres through Prisma, whose CLI downloads its query "
            "and schema engines (prebuilt binaries) from Prisma's servers, not a package registry"
            f"; offline that fails: `prisma version` exit {done.returncode}: "
            + " / ".join(lines[-2:])[:400]
        )
    return None


# --- measuring -----------------------------------------------------------------------------------


def load(live: Live, connections: int, seconds: float) -> LoadResult:
    result = run_wrk(
        f"http://127.0.0.1:{live.port}{CLIENT_PATH}",
        body=live.body,
        key=live.key,
        connections=connections,
        seconds=seconds,
        cpu=LOAD_CPU,
    )
    live.answered += result.requests - result.errors
    return result


def measured(live: Live, redis: Redis | None, connections: int, seconds: float) -> None:
    """One measured load: wrk, the gateway's CPU time, Redis commands (keys-redis)."""
    counting = redis is not None and live.name == "keys-redis"
    calls_before = redis.command_calls() if counting and redis is not None else {}
    cpu_before = live.server.cpu_seconds() if live.server is not None else 0.0
    result = load(live, connections, seconds)
    if live.server is not None and connections > 1:
        live.cpu32.append(live.server.cpu_seconds() - cpu_before)
    if counting and redis is not None:
        for name, calls in calls_delta(calls_before, redis.command_calls()).items():
            live.redis_calls[name] = live.redis_calls.get(name, 0) + calls
        live.redis_requests += result.requests
    (live.rounds32 if connections > 1 else live.rounds1).append(result)


def guard(live: Live, step: Any) -> None:
    if "failed" in live.result:
        return
    try:
        step()
    except (RuntimeError, CheckFailed, OSError, subprocess.SubprocessError) as exc:
        live.fail(exc)


def summarize(live: Live) -> None:
    result = live.result
    if "failed" in result or not live.rounds32:
        return
    result["c32"] = combine(live.rounds32)
    if live.rounds1:
        result["c1"] = combine(live.rounds1)
    errors = result["c32"]["errors"] + result.get("c1", {}).get("errors", 0)
    if errors:
        result["non_2xx_or_socket_errors"] = errors
    if live.cpu32:
        cpu = sum(live.cpu32)
        result["gateway_cpu_percent"] = round(
            100 * cpu / sum(r.duration_s for r in live.rounds32), 1
        )
        result["requests_per_cpu_second"] = round(sum(r.requests for r in live.rounds32) / cpu, 1)
    if live.redis_requests:
        result["redis"] = {
            "requests": live.redis_requests,
            "calls": dict(sorted(live.redis_calls.items())),
            "calls_per_request": {
                k: round(v / live.redis_requests, 4) for k, v in sorted(live.redis_calls.items())
            },
        }


def profile_worker(live: Live, seconds: float) -> dict[str, Any]:
    """py-spy samples of the serving worker under 32 connections (bench/profile.py)."""
    assert live.server is not None
    binary = profile.pyspy_binary(REPO)
    if binary is None:
        return {"error": "py-spy not installed (BENCH_PROFILE=1 bash bench/run.sh installs it)"}
    out = WORK / "profiles" / f"{live.name}-{live.mode}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    recorder = profile.start_record(
        binary, live.server.worker_pid(), max(3, int(seconds)), out, cpu=LOAD_CPU
    )
    load(live, 32, max(3, int(seconds)) + 1)
    _, err = recorder.communicate(timeout=60)
    if recorder.returncode != 0 or not out.exists():
        return {
            "error": f"py-spy exit {recorder.returncode}: {err.decode(errors='replace')[-300:]}"
        }
    per_cpu = live.result.get("requests_per_cpu_second")
    summary = profile.summarize(out, cpu_us_per_request=1e6 / per_cpu if per_cpu else None)
    summary["accounting"] = accounting_breakdown(out, 1e6 / per_cpu if per_cpu else None)
    summary["collapsed"] = str(out.relative_to(REPO))
    return summary


ACCOUNTING_CODE: Final = (
    "crossway/policy/virtual_key.py",
    "crossway/policy/ledger.py",
    "crossway/policy/limits.py",
    "crossway/policy/rate_limit.py",
    "crossway/store/",
    "redis/",
    "sqlite3/",
)
"""Code whose cost the keys rows add: policies, ledger, limiter, stores, the Redis client."""


def accounting_breakdown(collapsed: Path, cpu_us_per_request: float | None) -> list[dict[str, Any]]:
    """Inclusive share of every function of `ACCOUNTING_CODE`, outermost frames first: the
    time each part of the accounting takes, as microseconds of the worker's CPU per request."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        seen: set[str] = set()
        for frame in stack.split(";"):
            path, func, _ = profile._parse(frame)
            if not path.startswith(ACCOUNTING_CODE):
                continue
            name = f"{path}:{func}"
            if name not in seen:
                seen.add(name)
                inclusive[name] = inclusive.get(name, 0) + count
    rows = sorted(inclusive.items(), key=lambda item: -item[1])[:ACCOUNTING_TOP]
    return [
        {
            "function": name,
            "percent": round(100 * n / total, 1),
            "us_per_request": round(n / total * cpu_us_per_request, 1)
            if cpu_us_per_request
            else None,
        }
        for name, n in rows
    ]


def run_mode(
    mode: Mode, names: list[str], nginx_port: int, redis: Redis | None, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Start every Crossway target for `mode`, load them in turns, round after round."""
    lives: list[Live] = []
    try:
        for name in names:
            print(f"[accounting] {mode}: starting {name}", flush=True)
            try:
                lives.append(start_crossway(name, mode, nginx_port, redis))
            except (RuntimeError, OSError) as exc:
                live = Live(name, mode, result={"target": name, "mode": mode})
                live.fail(exc)
                lives.append(live)
        running = [lv for lv in lives if "failed" not in lv.result]
        for live in running:
            live.result["command"] = live.command
            live.result["rss_idle_mb"] = round(live.server.rss_mb(), 1) if live.server else None
            guard(live, lambda lv=live: check_once(lv))
            guard(live, lambda lv=live: load(lv, 32, args.warmup))
        for _ in range(args.rounds):
            for live in running:
                guard(live, lambda lv=live: measured(lv, redis, 32, args.seconds / args.rounds))
            for live in running:
                guard(live, lambda lv=live: measured(lv, redis, 1, args.seconds_one / args.rounds))
        for live in running:
            summarize(live)
            if redis is not None and live.name == "keys-redis":
                guard(
                    live,
                    lambda lv=live: lv.result.__setitem__(
                        "redis_monitor", monitor_sample(redis, lv, MONITOR_SECONDS)
                    ),
                )
            if args.profile:
                guard(
                    live,
                    lambda lv=live: lv.result.__setitem__(
                        "profile", profile_worker(lv, args.profile_seconds)
                    ),
                )
            guard(live, lambda lv=live: check_once(lv))
            if live.server is not None:
                live.result["rss_after_mb"] = round(live.server.rss_mb(), 1)
    finally:
        for live in lives:
            if live.server is not None:
                live.server.stop()  # SIGTERM: the ledger flushes what it queued
    for live in lives:
        if live.key_id is not None and live.data_dir is not None and "failed" not in live.result:
            try:
                spend = recorded_spend(live.data_dir, live.redis_url, live.key_id)
            except Exception as exc:  # the figure is a check, not the measurement
                spend = {"error": f"{type(exc).__name__}: {exc}"}
            spend["answered"] = live.answered
            live.result["spend_recorded"] = spend
        print(f"[accounting] {mode} {live.name}: {one_line(live.result)}", flush=True)
    return [live.result for live in lives]


def one_line(r: dict[str, Any]) -> str:
    if "failed" in r:
        return "FAILED " + str(r["failed"]).splitlines()[0][:200]
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    c32 = r.get("c32", {})
    out = f"{c32.get('rps', 0):.0f} req/s, {r.get('requests_per_cpu_second', '-')} req/CPU-s"
    if "redis" in r:
        out += f", redis {r['redis']['calls_per_request']}"
    if "spend_recorded" in r:
        out += f", spend {r['spend_recorded']}"
    return out


# --- report --------------------------------------------------------------------------------------


def ratios(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mode: each row's throughput and requests per CPU-second over `plain`."""
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        rows = {r["target"]: r for r in runs if r["mode"] == mode and "c32" in r}
        base = rows.get("plain")
        if base is None:
            continue
        for name, row in rows.items():
            if name == "plain":
                continue
            entry: dict[str, Any] = {"rps": round(row["c32"]["rps"] / base["c32"]["rps"], 3)}
            if row.get("requests_per_cpu_second") and base.get("requests_per_cpu_second"):
                entry["requests_per_cpu_second"] = round(
                    row["requests_per_cpu_second"] / base["requests_per_cpu_second"], 3
                )
            goal = GOALS.get(name)
            if goal is not None:
                entry["goal"] = goal
                entry["meets_goal"] = entry["rps"] >= goal
            out.setdefault(mode, {})[name] = entry
    return out


def _cpu_us(per_second: float | None) -> str:
    return "-" if not per_second else f"{1e6 / per_second:.0f}"


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def render(data: dict[str, Any]) -> str:
    s = data["settings"]
    m = data["machine"]
    lines = [
        f"# Accounting bench (virtual keys, rate limits, spend), {data['started']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; Crossway at "
        f"`{m['crossway_commit']}`; {m['redis']}. Each gateway runs one worker pinned to core"
        f" {PROXY_CPU}; nginx (the upstream), wrk and redis-server share core {LOAD_CPU}."
        f" wrk: {s['seconds']:g} s at 32 connections and {s['seconds_one']:g} s at 1 connection"
        f" per target and mode, in {s['rounds']} interleaved round(s), after {s['warmup']:g} s"
        f" warm-up. Load average at the start {data['load_average_start']}, at the end"
        f" {data['load_average_end']}.",
        "",
        "The request is the same OpenAI Chat body (~1 KB, `gpt-4o-mini`) for every row;"
        " `stream` asks for `stream: true`. Rows: `plain` = no policies; `keys-local` ="
        " `virtual_key` (budget checked every call) + a local request limit and a local token"
        " limit per key + spend recorded, SQLite store; `keys-redis` = the same with"
        " `accounting.store: redis` and both limits `mode: global`.",
        "",
        "| mode | target | req/s (c32) | vs plain | gateway req per CPU-s | vs plain | CPU us/req |"
        " gateway CPU % | p50 ms (c32) | p99 ms (c32) | p50 ms (c1) | p99 ms (c1) | errors |"
        " spend recorded /"
        " answered |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rat = data["ratios"]
    for r in data["runs"]:
        mode, name = r["mode"], r["target"]
        if "c32" not in r:
            why = r.get("failed") or r.get("skipped") or "no figures"
            lines.append(f"| {mode} | {name} | {why.splitlines()[0][:160]} |" + " |" * 12)
            continue
        c32, c1 = r["c32"], r.get("c1", {})
        ratio = rat.get(mode, {}).get(name, {})
        spend = r.get("spend_recorded")
        spent = "-"
        if spend is not None:
            spent = spend.get("error") or f"{spend['requests']} / {spend['answered']}"
        lines.append(
            f"| {mode} | {name} | {c32['rps']:.0f} | {ratio.get('rps', '-')} |"
            f" {r.get('requests_per_cpu_second', '-')} | {ratio.get('requests_per_cpu_second', '-')}"
            f" | {_cpu_us(r.get('requests_per_cpu_second'))} | {r.get('gateway_cpu_percent', '-')}"
            f" | {_ms(c32['latency_us'].get('p50'))} | {_ms(c32['latency_us'].get('p99'))}"
            f" | {_ms(c1.get('latency_us', {}).get('p50'))} | {_ms(c1.get('latency_us', {}).get('p99'))}"
            f" | {c32['errors'] + c1.get('errors', 0)} | {spent} |"
        )
    lines += [
        "",
        "`gateway CPU %` below ~95 means the gateway waited for its core (other work on this"
        " shared machine): requests per CPU-second is then the steadier figure.",
        "",
        "## Against the goals (throughput at 32 connections over plain)",
        "",
    ]
    for mode, rows in rat.items():
        for name, entry in rows.items():
            if "goal" in entry:
                verdict = "meets" if entry["meets_goal"] else "MISSES"
                lines.append(
                    f"- {mode} {name}: {entry['rps']:.3f} (goal >= {entry['goal']:.2f}: {verdict});"
                    f" per gateway CPU-second {entry.get('requests_per_cpu_second', '-')}"
                )
    lines += ["", "## Redis commands per request (keys-redis)", ""]
    for r in data["runs"]:
        monitor = r.get("redis_monitor")
        if monitor:
            sent = monitor["sent_per_request"]
            reads = sum(v for k, v in sent.items() if k in READ_COMMANDS)
            lines.append(
                f"- {r['mode']}, sent by the gateway (MONITOR, {monitor['requests']} requests"
                f" in an extra {MONITOR_SECONDS:g} s load): "
                + ", ".join(f"{k.upper()} {v:g}" for k, v in sent.items())
                + f". Reads (GET/MGET/HGET/ZRANGE/SMEMBERS) per request: {reads:.4f}; EVALSHA"
                f" per request: {sent.get('evalsha', 0):.3f}. Run inside those scripts: "
                + ", ".join(
                    f"{k.upper()} {v:g}" for k, v in monitor["in_scripts_per_request"].items()
                )
                + "."
            )
        redis = r.get("redis")
        if redis:
            lines.append(
                f"- {r['mode']}, `INFO commandstats` over the measured loads ({redis['requests']}"
                " requests; counts the scripts' own commands too): "
                + ", ".join(f"{k.upper()} {v:g}" for k, v in redis["calls_per_request"].items())
                + "."
            )
    lines += [
        "",
        "Sent by the gateway: GET is the key poller's version check (every"
        " `key_poll_interval`), MGET the budget totals re-read (at most once per"
        " `refresh_interval` per budget), both off the request path; EVALSHA is the global"
        " limits' one script per check (both limits at once), then, after the answer, one more"
        " to settle the token reservation with the real usage, plus the spend batch written"
        " every `flush_interval`.",
    ]
    for name, reason in data.get("not_measured", {}).items():
        lines += ["", f"{name}: not measured: {reason}"]
    for r in data["runs"]:
        prof = r.get("profile")
        if not prof:
            continue
        lines += ["", f"## Profile: {r['target']} / {r['mode']} (py-spy, worker process)", ""]
        if "error" in prof:
            lines.append(prof["error"])
            continue
        lines.append(
            f"{prof['samples']} samples at {prof['rate_hz']} Hz; worker CPU"
            f" {prof['cpu_us_per_request']} us per request (measured without the profiler)."
            " Inclusive us per request:"
        )
        lines.append("")
        for row in prof.get("accounting", []):
            lines.append(f"- {row['function']}: {row['us_per_request']} us ({row['percent']}%)")
        if not prof.get("accounting"):
            lines.append("- (no accounting code on this row)")
        lines += ["", "By component (self time):", ""]
        for row in prof.get("components", [])[:8]:
            lines.append(f"- {row['function']}: {row['us_per_request']} us ({row['percent']}%)")
    lines.append("")
    return "\n".join(lines)


def machine_facts() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )

    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return "not found"
        text = (done.stdout + done.stderr).strip().splitlines()
        return text[0] if text else "unknown"

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "crossway_commit": first_line(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"]),
        "redis": first_line(["redis-server", "--version"]).split(" sha=")[0],
        "wrk": first_line(["wrk", "--version"]).split(" [")[0],
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=12.0, help="wrk time at 32 connections")
    parser.add_argument("--seconds-one", type=float, default=6.0, help="wrk time at 1 connection")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=float, default=2.0, help="wrk warm-up per target")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--only", nargs="*", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--profile", action="store_true", help="py-spy every row after its loads")
    parser.add_argument("--profile-seconds", type=float, default=8.0, help="py-spy time per row")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.rounds = max(1, args.rounds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    raise_group_priority()
    WORK.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now()
    data: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "settings": {
            "seconds": args.seconds,
            "seconds_one": args.seconds_one,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "modes": args.modes,
            "request_body_bytes": fixtures.REQUEST_BODY_SIZE,
            "key_budget_usd": KEY_BUDGET_USD,
            "limits": HUGE,
            "proxy_cpu": PROXY_CPU,
            "load_cpu": LOAD_CPU,
        },
        "machine": machine_facts(),
        "load_average_start": load_average(),
        "not_measured": {},
        "runs": [],
    }
    crossway = [n for n in args.only if n != "litellm-key"]
    if "litellm-key" in args.only:
        reason = litellm_unavailable()
        if reason is not None:
            data["not_measured"]["litellm-key"] = reason
            print(f"[accounting] litellm-key not measured: {reason}", flush=True)
    files = fixtures.write_fixtures(WORK / "files")["openai-chat.json"].parent
    nginx_port = free_port()
    nginx = start_nginx(WORK, files, nginx_port, cpu=LOAD_CPU)
    redis: Redis | None = None
    try:
        wait_ready(None, nginx_port, "/healthz", b"", {}, timeout_s=10)
        if "keys-redis" in crossway:
            try:
                redis = start_redis()
            except (RuntimeError, OSError) as exc:
                crossway.remove("keys-redis")
                data["not_measured"]["keys-redis"] = str(exc)
        for mode in args.modes:
            data["runs"] += run_mode(mode, crossway, nginx_port, redis, args)
    finally:
        if redis is not None:
            redis.stop()
        nginx.stop()
    data["ratios"] = ratios(data["runs"])
    data["load_average_end"] = load_average()
    data["elapsed_s"] = round((dt.datetime.now() - started).total_seconds(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"accounting-{started.strftime('%Y-%m-%d-%H%M')}"
    (args.out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    markdown = render(data)
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    print(f"[accounting] wrote {args.out / stem}.md and .json in {data['elapsed_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
