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
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench import gateway_rows as rows
from bench.gateway_rows import LOAD_CPU, REPO, Mode, Row
from bench.harness import CheckFailed
from bench.procs import ServerProcess, free_port, load_average, start_pinned

WORK: Final = REPO / "bench" / ".work" / "accounting"
LITELLM: Final = REPO / "bench" / ".peers" / "litellm"
PLAIN_KEY: Final = "sk-bench-plain"
"""What the plain row's client sends (Crossway replaces it with the upstream key)."""
KEY_BUDGET_USD: Final = 1e6
"""The virtual key's monthly budget: checked on every call, never reached."""
HUGE: Final = 1_000_000_000
"""The limits in the keys configs: counted on every call, never reached."""
GOALS: Final = {"keys-local": 0.90, "keys-redis": 0.80}
"""Throughput of each row over `plain` that issue 9 asks for."""
PRISMA_PROBE_TIMEOUT_S: Final = 120.0
MONITOR_SECONDS: Final = 3.0
"""The extra (unmeasured) load during which Redis MONITOR attributes commands."""
ACCOUNTING_TOP: Final = 25
READ_COMMANDS: Final = frozenset({"get", "mget", "hget", "hgetall", "zrange", "smembers"})
TARGETS: Final = ("plain", "keys-local", "keys-redis", "litellm-key")


# --- Redis ---------------------------------------------------------------------------------------


@dataclass
class Redis:
    """A redis-server of this run (no persistence), pinned to the load core."""

    port: int
    server: ServerProcess

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
        self.server.stop()


def start_redis() -> Redis:
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = start_pinned(
        "redis-server",
        argv,
        cpu=LOAD_CPU,
        env={},
        cwd=Path(tempfile.mkdtemp(prefix="redis-", dir=WORK)),
        log=WORK / "logs" / "redis-server.log",
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
                if time.monotonic() > deadline or not process.alive():
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
            result = rows.load(live, 32, seconds)
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
class Live(Row):
    """A row started for one mode, with its figures so far."""

    key: str = PLAIN_KEY
    key_id: str | None = None
    data_dir: Path | None = None
    redis_url: str | None = None
    redis_calls: dict[str, int] = field(default_factory=dict)
    redis_requests: int = 0


def new_live(name: str, mode: Mode) -> Live:
    return Live(name, mode, rows.request_file(WORK, mode))


def start_crossway(name: str, mode: Mode, nginx_port: int, redis: Redis | None) -> Live:
    live = new_live(name, mode)
    live.data_dir = Path(tempfile.mkdtemp(prefix=f"data-{name}-{mode}-", dir=WORK))
    if name == "keys-redis":
        assert redis is not None
        live.redis_url = redis.url
    if name != "plain":
        live.key, live.key_id = create_key(live.data_dir, live.redis_url, f"bench-{name}-{mode}")
    env = {} if live.redis_url is None else {"REDIS_URL": live.redis_url}
    rows.start_gateway(live, WORK, f"accounting-{name}", nginx_port, live.data_dir, env)
    # A key made before the start is in the key cache once the ledger loaded; until then,
    # virtual keys get 503.
    rows.ready(live)
    return live


def check_once(live: Live) -> None:
    """One request: a 200 with the completion; a keys row also shows its rate limits."""
    answer = rows.post_checked(live)
    if live.name.startswith("keys-"):
        limit = answer.headers.get("x-ratelimit-limit-requests")
        if limit != str(HUGE):
            raise CheckFailed(f"no x-ratelimit-limit-requests: {HUGE} header: {answer.headers}")
        live.result["ratelimit_headers"] = {
            k: v for k, v in answer.headers.items() if k.startswith("x-ratelimit-")
        }


# --- LiteLLM with a virtual key and Postgres ------------------------------------------------------


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


def measured(live: Live, redis: Redis | None, connections: int, seconds: float) -> None:
    """One measured load: wrk, the gateway's CPU time, Redis commands (keys-redis)."""
    counting = redis is not None and live.name == "keys-redis"
    calls_before = redis.command_calls() if counting and redis is not None else {}
    result = rows.measured(live, connections, seconds)
    if counting and redis is not None:
        for name, calls in calls_delta(calls_before, redis.command_calls()).items():
            live.redis_calls[name] = live.redis_calls.get(name, 0) + calls
        live.redis_requests += result.requests


def after_loads(live: Live, redis: Redis | None) -> None:
    """Redis commands per request over the measured loads, then MONITOR's view (keys-redis)."""
    if live.redis_requests and "c32" in live.result:
        live.result["redis"] = {
            "requests": live.redis_requests,
            "calls": dict(sorted(live.redis_calls.items())),
            "calls_per_request": {
                k: round(v / live.redis_requests, 4) for k, v in sorted(live.redis_calls.items())
            },
        }
    if redis is not None and live.name == "keys-redis":
        rows.guard(live, monitor_into, redis, live)


def monitor_into(redis: Redis, live: Live) -> None:
    live.result["redis_monitor"] = monitor_sample(redis, live, MONITOR_SECONDS)


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


def accounting_breakdown(collapsed: Path, cpu_us_per_request: float | None) -> tuple[str, Any]:
    """Inclusive share of every function of `ACCOUNTING_CODE`, outermost frames first: the
    time each part of the accounting takes, as microseconds of the worker's CPU per request."""
    inclusive: dict[str, int] = {}
    total = 0
    for frames, count in rows.collapsed_stacks(collapsed):
        total += count
        for name in dict.fromkeys(f for f in frames if f.startswith(ACCOUNTING_CODE)):
            inclusive[name] = inclusive.get(name, 0) + count
    top = sorted(inclusive.items(), key=lambda item: -item[1])[:ACCOUNTING_TOP]
    return "accounting", [
        {
            "function": name,
            "percent": round(100 * n / total, 1),
            "us_per_request": round(n / total * cpu_us_per_request, 1)
            if cpu_us_per_request
            else None,
        }
        for name, n in top
    ]


def run_mode(
    mode: Mode, names: list[str], nginx_port: int, redis: Redis | None, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Start every Crossway target for `mode`, load them in turns, round after round."""
    lives = rows.run_rows(
        "accounting",
        mode,
        names,
        lambda name: start_crossway(name, mode, nginx_port, redis),
        lambda name: new_live(name, mode),
        args,
        work=WORK,
        measure=lambda live, connections, seconds: measured(live, redis, connections, seconds),
        check=check_once,
        after_loads=lambda live: after_loads(live, redis),
        breakdown=accounting_breakdown,
    )
    for live in lives:
        if live.key_id is not None and live.data_dir is not None and "failed" not in live.result:
            try:
                spend = recorded_spend(live.data_dir, live.redis_url, live.key_id)
            except Exception as exc:  # the figure is a check, not the measurement
                spend = {"error": f"{type(exc).__name__}: {exc}"}
            spend["answered"] = live.answered
            live.result["spend_recorded"] = spend
        print(f"[accounting] {mode} {live.name}: {rows.one_line(live.result, details)}", flush=True)
    return [live.result for live in lives]


def details(r: dict[str, Any]) -> str:
    out = ""
    if "redis" in r:
        out += f", redis {r['redis']['calls_per_request']}"
    if "spend_recorded" in r:
        out += f", spend {r['spend_recorded']}"
    return out


# --- report --------------------------------------------------------------------------------------


def _spent(r: dict[str, Any]) -> list[str]:
    spend = r.get("spend_recorded")
    if spend is None:
        return ["-"]
    return [spend.get("error") or f"{spend['requests']} / {spend['answered']}"]


def render(data: dict[str, Any]) -> str:
    lines = [
        f"# Accounting bench (virtual keys, rate limits, spend), {data['started']}",
        "",
        rows.machine_paragraph(data, facts=f"; {data['machine']['redis']}", sharing="redis-server"),
        "",
        rows.REQUEST_SENTENCE + "`plain` = no policies; `keys-local` ="
        " `virtual_key` (budget checked every call) + a local request limit and a local token"
        " limit per key + spend recorded, SQLite store; `keys-redis` = the same with"
        " `accounting.store: redis` and both limits `mode: global`.",
        "",
        *rows.results_table(data, "plain", ["spend recorded / answered"], _spent),
    ]
    rat = data["ratios"]
    lines += ["", rows.CPU_PERCENT_NOTE, "", *rows.goal_lines(rat, "plain", lambda _entry: "")]
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
    for prof, heading in rows.profiles(data["runs"]):
        lines += heading
        if not prof:
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rows.add_load_flags(parser, TARGETS)
    rows.add_output_flags(parser)
    args = parser.parse_args(argv)
    args.rounds = max(1, args.rounds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    WORK.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now()
    data: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "settings": rows.run_settings(args, {}, {"key_budget_usd": KEY_BUDGET_USD, "limits": HUGE}),
        "machine": rows.machine_facts(),
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
    nginx, nginx_port = rows.start_upstream(WORK)
    redis: Redis | None = None
    try:
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
    rat = rows.ratios(data["runs"], "plain", GOALS)
    rows.write_results("accounting", args.out, started, data, rat, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
