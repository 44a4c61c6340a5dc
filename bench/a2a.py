"""The A2A bench (issue 8): added latency of `SendMessage` and of the first streamed event of
`SendStreamingMessage` through Crossway vs straight to the agent (and through LiteLLM's A2A
gateway when bench/.peers/litellm has it), at 1 and 32 concurrent callers; and the router's
decision time with 100 registered agents (bench/a2a_router.py).

    .venv/bin/python -m bench.a2a [--seconds 5] [--warmup 1] [--rounds 1] [--only direct crossway litellm]

The sample a2a-sdk agents (`writer` for `SendMessage`, `streamer` with zero delay and 3 steps
for the stream) run on core 1 with this load generator; each gateway runs pinned to core 0
with one worker. The client is raw JSON-RPC v1.0 over aiohttp (`A2A-Version: 1.0`), callers
back to back. Writes bench/results/a2a-YYYY-MM-DD-HHMM.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson

from bench.procs import (
    ServerProcess,
    free_port,
    load_average,
    raise_group_priority,
    start_pinned,
    wait_ready,
)

REPO: Final = Path(__file__).resolve().parent.parent
WORK: Final = REPO / "bench" / ".work" / "a2a"
RESULTS: Final = REPO / "bench" / "results"
LITELLM: Final = REPO / "bench" / ".peers" / "litellm"
PROXY_CPU: Final = 0
LOAD_CPU: Final = 1
CONCURRENCY: Final = (1, 32)
METHODS: Final = ("SendMessage", "SendStreamingMessage")
TARGETS: Final = ("direct", "crossway", "litellm")
STREAM_STEPS: Final = 3
LITELLM_MASTER_KEY: Final = "sk-bench-master"
READY_TIMEOUT_S: Final = 120.0
REQUEST_TIMEOUT_S: Final = 30.0
TEXT: Final = "Summarize this. Crossway is a gateway for LLM, MCP and A2A traffic."


# --- requests ------------------------------------------------------------------------------------

_ids = itertools.count(1)


def rpc_body(method: str) -> bytes:
    """A v1.0 JSON-RPC request; the streamer runs `STREAM_STEPS` steps with no delay."""
    n = next(_ids)
    message: dict[str, Any] = {
        "messageId": f"bench-{os.getpid()}-{n}",
        "role": "ROLE_USER",
        "parts": [{"text": TEXT}],
    }
    if method == "SendStreamingMessage":
        message["metadata"] = {"steps": STREAM_STEPS, "delay": 0}
    return orjson.dumps(
        {"jsonrpc": "2.0", "id": n, "method": method, "params": {"message": message}}
    )


def rpc_headers(target: str, method: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "A2A-Version": "1.0"}
    if method == "SendStreamingMessage":
        headers["Accept"] = "text/event-stream"
    if target == "litellm":
        headers["Authorization"] = f"Bearer {LITELLM_MASTER_KEY}"
    return headers


class BadAnswer(Exception):
    """The target answered, but not what an A2A client expects."""


def check_send(status: int, body: bytes, *, summary: bool = True) -> None:
    """A 200 with a JSON-RPC result: a completed task (or a message) carrying the summary."""
    if status != 200:
        raise BadAnswer(f"HTTP {status}: {body[:200]!r}")
    answer = orjson.loads(body)
    if "result" not in answer or (summary and b"Summary:" not in body):
        raise BadAnswer(f"no summary in the result: {body[:300]!r}")


def check_stream_end(events: list[bytes]) -> None:
    """The stream's last event says the task completed."""
    if not events:
        raise BadAnswer("empty stream")
    last = events[-1]
    if b"COMPLETED" not in last.upper():
        raise BadAnswer(f"the stream did not end completed: {last[:300]!r}")


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Point:
    """One measured point: a target, a method, a number of concurrent callers."""

    target: str
    method: str
    callers: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    """SendMessage: the whole call. SendStreamingMessage: time to the first SSE event."""
    totals_ms: list[float] = field(default_factory=list, repr=False)
    """SendStreamingMessage: time to the end of the stream."""
    errors: int = 0
    first_error: str | None = None
    proxy_cpu_s: float | None = None
    agent_cpu_s: float | None = None

    def summary(self) -> dict[str, Any]:
        done = len(self.latencies_ms)
        out: dict[str, Any] = {
            "target": self.target,
            "method": self.method,
            "callers": self.callers,
            "seconds": round(self.seconds, 2),
            "requests": done,
            "errors": self.errors,
            "rps": round(done / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(self.latencies_ms, 50),
            "p99_ms": pct(self.latencies_ms, 99),
        }
        if self.totals_ms:
            out["total_p50_ms"] = pct(self.totals_ms, 50)
            out["total_p99_ms"] = pct(self.totals_ms, 99)
        if self.proxy_cpu_s is not None and done:
            out["proxy_cpu_ms_per_request"] = round(self.proxy_cpu_s / done * 1e3, 3)
        if self.agent_cpu_s is not None and done:
            out["agent_cpu_ms_per_request"] = round(self.agent_cpu_s / done * 1e3, 3)
        if self.first_error:
            out["first_error"] = self.first_error
        return out


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    return round(data[min(len(data) - 1, round(p / 100 * (len(data) - 1)))], 3)


async def one_call(
    http: aiohttp.ClientSession, url: str, target: str, method: str
) -> tuple[float, float | None]:
    """One request; returns (latency ms, stream total ms or None)."""
    body = rpc_body(method)
    headers = rpc_headers(target, method)
    started = time.perf_counter()
    async with http.post(url, data=body, headers=headers) as resp:
        if method == "SendMessage":
            raw = await resp.read()
            elapsed = (time.perf_counter() - started) * 1e3
            check_send(resp.status, raw)
            return elapsed, None
        if resp.status != 200:
            raise BadAnswer(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
        first: float | None = None
        buffer = b""
        events: list[bytes] = []
        async for chunk in resp.content.iter_any():
            # sse-starlette ends lines with CRLF; Crossway with LF.
            buffer = (buffer + chunk).replace(b"\r\n", b"\n")
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if b"data:" not in event:
                    continue
                if first is None:
                    first = (time.perf_counter() - started) * 1e3
                if b'"error"' in event:
                    raise BadAnswer(f"error event: {event[:300]!r}")
                events.append(event)
        total = (time.perf_counter() - started) * 1e3
        check_stream_end(events)
        assert first is not None
        return first, total


async def drive(
    url: str, target: str, method: str, callers: int, seconds: float, point: Point | None
) -> None:
    """`callers` loops calling back to back for `seconds`; record into `point` (None: warm-up)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < deadline:
                try:
                    latency, total = await one_call(http, url, target, method)
                except (TimeoutError, aiohttp.ClientError, BadAnswer, ValueError) as exc:
                    if point is not None:
                        point.errors += 1
                        point.first_error = point.first_error or f"{type(exc).__name__}: {exc}"
                    continue
                if point is not None:
                    point.latencies_ms.append(latency)
                    if total is not None:
                        point.totals_ms.append(total)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        if point is not None:
            point.seconds = time.perf_counter() - started


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Live:
    """A target that answers: where to send each method, and the process behind it (if any)."""

    name: str
    urls: dict[str, str]
    server: ServerProcess | None
    command: str


def start_agent(name: str) -> tuple[ServerProcess, int]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "crossway.samples.a2a_agents",
        "--agent",
        name,
        "--port",
        str(port),
        "--version",
        "1.0",
    ]
    agent = start_pinned(
        f"agent-{name}", argv, cpu=LOAD_CPU, env={}, cwd=REPO, log=WORK / f"agent-{name}.log"
    )
    try:
        ready(agent, port, "/", "direct", summary=name == "writer")
    except BaseException:
        agent.stop()
        raise
    return agent, port


def ready(
    server: ServerProcess | None, port: int, path: str, target: str, *, summary: bool = True
) -> None:
    """Wait until `path` answers a real SendMessage with a result (a gateway may still be
    fetching the agent's card on its first requests)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        answer = wait_ready(
            server,
            port,
            path,
            rpc_body("SendMessage"),
            rpc_headers(target, "SendMessage"),
            timeout_s=max(1.0, deadline - time.monotonic()),
        )
        try:
            check_send(answer.status, answer.body, summary=summary)
            return
        except (BadAnswer, ValueError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{target} never answered SendMessage correctly: {last}")


def crossway_config(agents: dict[str, int], task_store: str, port: int, admin: int) -> str:
    lines = "".join(
        f"      {name}: {{url: http://127.0.0.1:{port}}}\n" for name, port in agents.items()
    )
    return (
        textwrap.dedent(
            f"""\
            listen: {{host: 127.0.0.1, port: {port}}}
            admin: {{port: {admin}}}
            routes:
              - name: a2a
                match: {{path: {{prefix: /a2a}}}}
                backend: agents
            backends:
              agents:
                type: a2a
                task_store: {{type: {task_store}}}
                agents:
            """
        )
        + lines
    )


def start_crossway(agents: dict[str, int], task_store: str) -> Live:
    port = free_port()
    config = WORK / "crossway.yaml"
    config.write_text(crossway_config(agents, task_store, port, free_port()))
    data_dir = Path(tempfile.mkdtemp(prefix="crossway-data-", dir=WORK))
    argv = [str(REPO / ".venv" / "bin" / "crossway"), "serve", "--config", str(config)]
    argv += ["--workers", "1"]
    server = start_pinned(
        "crossway",
        argv,
        cpu=PROXY_CPU,
        env={"CROSSWAY_DATA_DIR": str(data_dir)},
        cwd=REPO,
        log=WORK / "crossway.log",
    )
    try:
        ready(server, port, "/a2a/writer/", "crossway")
    except BaseException:
        server.stop()
        raise
    return Live(
        "crossway",
        {
            "SendMessage": f"http://127.0.0.1:{port}/a2a/writer/",
            "SendStreamingMessage": f"http://127.0.0.1:{port}/a2a/streamer/",
        },
        server,
        f"crossway serve --workers 1 (a2a backend, task_store {task_store})",
    )


def litellm_unavailable() -> str | None:
    """Why LiteLLM's A2A gateway cannot run here (None: it can)."""
    python = LITELLM / "bin" / "python"
    if not (LITELLM / "bin" / "litellm").exists():
        return "bench/.peers/litellm is not installed (bench/run.sh installs it)"
    probe = "import litellm.proxy.agent_endpoints.a2a_endpoints, a2a.compat.v0_3.types"
    done = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return (
            "LiteLLM's A2A gateway does not import (it needs `a2a-sdk`, its `extra-proxy` "
            f"extra: `bench/.peers/litellm/bin/pip install a2a-sdk`): {' '.join(tail)}"
        )
    return None


def litellm_config(agents: dict[str, int]) -> str:
    out = ["agents:"]
    for name, port in agents.items():
        out += [
            f"  - agent_name: {name}",
            "    agent_card_params:",
            f"      name: {name}",
            f"      description: the {name} sample agent",
            f"      url: http://127.0.0.1:{port}",
            '      version: "1.0.0"',
            '      protocolVersion: "1.0"',
            "      capabilities: {streaming: true}",
            "      defaultInputModes: [text/plain]",
            "      defaultOutputModes: [text/plain]",
            "      skills: []",
        ]
    out += ["general_settings:", f"  master_key: {LITELLM_MASTER_KEY}", ""]
    return "\n".join(out)


def start_litellm(agents: dict[str, int]) -> Live:
    port = free_port()
    config = WORK / "litellm.yaml"
    config.write_text(litellm_config(agents))
    argv = [str(LITELLM / "bin" / "litellm"), "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    # LiteLLM puts `../..` of its working directory on sys.path: start it in an empty one.
    cwd = Path(tempfile.mkdtemp(prefix="litellm-", dir=WORK)) / "a" / "b"
    cwd.mkdir(parents=True)
    server = start_pinned(
        "litellm",
        argv,
        cpu=PROXY_CPU,
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"},
        cwd=cwd,
        log=WORK / "litellm.log",
    )
    try:
        ready(server, port, "/a2a/writer", "litellm")
    except BaseException:
        server.stop()
        raise
    return Live(
        "litellm",
        {
            "SendMessage": f"http://127.0.0.1:{port}/a2a/writer",
            "SendStreamingMessage": f"http://127.0.0.1:{port}/a2a/streamer",
        },
        server,
        "litellm --config (agents: list) --num_workers 1",
    )


# --- the run -------------------------------------------------------------------------------------


def measure(
    live: Live,
    agents: dict[str, ServerProcess],
    method: str,
    callers: int,
    args: argparse.Namespace,
) -> Point:
    url = live.urls[method]
    agent = agents["writer" if method == "SendMessage" else "streamer"]
    asyncio.run(drive(url, live.name, method, callers, args.warmup, None))
    point = Point(live.name, method, callers)
    proxy_before = live.server.cpu_seconds() if live.server else None
    agent_before = agent.cpu_seconds()
    asyncio.run(drive(url, live.name, method, callers, args.seconds, point))
    if live.server is not None and proxy_before is not None:
        point.proxy_cpu_s = live.server.cpu_seconds() - proxy_before
    point.agent_cpu_s = agent.cpu_seconds() - agent_before
    return point


def merge_rounds(points: list[Point]) -> Point:
    merged = Point(points[0].target, points[0].method, points[0].callers)
    for p in points:
        merged.seconds += p.seconds
        merged.latencies_ms += p.latencies_ms
        merged.totals_ms += p.totals_ms
        merged.errors += p.errors
        merged.first_error = merged.first_error or p.first_error
        if p.proxy_cpu_s is not None:
            merged.proxy_cpu_s = (merged.proxy_cpu_s or 0.0) + p.proxy_cpu_s
        if p.agent_cpu_s is not None:
            merged.agent_cpu_s = (merged.agent_cpu_s or 0.0) + p.agent_cpu_s
    return merged


def router_table() -> str:
    """bench/a2a_router.py's table, run pinned to the proxy core once the servers are gone."""
    done = subprocess.run(
        ["taskset", "-c", str(PROXY_CPU), sys.executable, "-m", "bench.a2a_router"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        return f"bench/a2a_router.py failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return done.stdout.strip()


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
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    litellm = subprocess.run(
        [
            str(LITELLM / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'), m.version('a2a-sdk'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "a2a-sdk": pkg("a2a-sdk"),
        "aiohttp": pkg("aiohttp"),
        "granian": pkg("granian"),
        "crossway_commit": commit,
        "litellm (a2a-sdk)": litellm or "not installed",
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _added(row: dict[str, Any], base: dict[str, Any] | None, key: str) -> str:
    if base is None or row["target"] == "direct" or row[key] is None or base[key] is None:
        return "-"
    return f"{row[key] - base[key]:+.2f}"


def render(data: dict[str, Any]) -> str:
    s = data["settings"]
    lines = [
        f"# A2A bench, {data['started']}",
        "",
        f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores, Python "
        f"{data['machine']['python']}, a2a-sdk {data['machine']['a2a-sdk']}; Crossway at "
        f"`{data['machine']['crossway_commit']}`. Gateways pinned to core {PROXY_CPU} (one worker);"
        f" the sample agents (a2a-sdk on uvicorn) and the load generator share core {LOAD_CPU}."
        f" {s['seconds']:g} s per point after {s['warmup']:g} s warm-up, {s['rounds']} round(s)"
        f" interleaved over the targets. Load average before: {data['load_average_start']}.",
        "",
        "Client: raw JSON-RPC v1.0 over aiohttp (`A2A-Version: 1.0`), callers back to back."
        " `SendMessage` goes to the `writer` agent (a task: submitted, working, artifact,"
        " completed); the latency is the whole call. `SendStreamingMessage` goes to the"
        f" `streamer` agent ({STREAM_STEPS} steps, zero delay: {2 * STREAM_STEPS + 2} events);"
        " the latency is the time to the first SSE event, `total` the time to the stream's end."
        f" Crossway: {data['commands'].get('crossway', '-')}.",
        "",
        "| method | callers | target | req/s | p50 ms | p99 ms | added p50 | added p99 |"
        " stream total p50 ms | gateway CPU ms/req | agent CPU ms/req | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = data["points"]
    for method in METHODS:
        for callers in CONCURRENCY:
            group = [r for r in rows if r["method"] == method and r["callers"] == callers]
            base = next((r for r in group if r["target"] == "direct"), None)
            for r in group:
                errors = str(r["errors"])
                if r.get("first_error"):
                    errors += f" ({r['first_error'][:80]})"
                lines.append(
                    f"| {method} | {callers} | {r['target']} | {r['rps']:.0f} | {_ms(r['p50_ms'])}"
                    f" | {_ms(r['p99_ms'])} | {_added(r, base, 'p50_ms')} | {_added(r, base, 'p99_ms')}"
                    f" | {_ms(r.get('total_p50_ms'))} | {_ms(r.get('proxy_cpu_ms_per_request'))}"
                    f" | {_ms(r.get('agent_cpu_ms_per_request'))} | {errors} |"
                )
    for name, reason in data.get("not_measured", {}).items():
        lines += ["", f"{name}: not measured: {reason}"]
    lines += ["", "## Router decision time (bench/a2a_router.py)", "", data["router"], ""]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up per point")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds")
    parser.add_argument("--only", nargs="*", default=list(TARGETS), choices=TARGETS)
    parser.add_argument(
        "--task-store", default="sqlite", choices=("sqlite", "memory"), help="Crossway's"
    )
    parser.add_argument("--skip-router", action="store_true", help="skip bench/a2a_router.py")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    raise_group_priority()
    WORK.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now()
    data: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "settings": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "task_store": args.task_store,
            "stream_steps": STREAM_STEPS,
            "proxy_cpu": PROXY_CPU,
            "load_cpu": LOAD_CPU,
        },
        "machine": machine_facts(),
        "load_average_start": load_average(),
        "commands": {},
        "not_measured": {},
        "points": [],
    }
    # The load generator runs on the agents' core.
    os.sched_setaffinity(0, {LOAD_CPU})
    agents: dict[str, ServerProcess] = {}
    lives: list[Live] = []
    try:
        ports: dict[str, int] = {}
        for name in ("writer", "streamer"):
            agents[name], ports[name] = start_agent(name)
            print(f"[a2a] agent {name} on :{ports[name]}", flush=True)
        if "direct" in args.only:
            direct_urls = {
                "SendMessage": f"http://127.0.0.1:{ports['writer']}/",
                "SendStreamingMessage": f"http://127.0.0.1:{ports['streamer']}/",
            }
            lives.append(Live("direct", direct_urls, None, "the agent itself"))
        if "crossway" in args.only:
            lives.append(start_crossway(ports, args.task_store))
        if "litellm" in args.only:
            reason = litellm_unavailable()
            if reason is None:
                try:
                    lives.append(start_litellm(ports))
                except RuntimeError as exc:
                    reason = f"did not start or answer: {str(exc).strip().splitlines()[0][:300]}"
            if reason is not None:
                data["not_measured"]["litellm"] = reason
                print(f"[a2a] litellm not measured: {reason}", flush=True)
        for live in lives:
            data["commands"][live.name] = live.command
            if live.server is not None:
                data.setdefault("rss_idle_mb", {})[live.name] = round(live.server.rss_mb(), 1)
        results: dict[tuple[str, str, int], list[Point]] = {}
        for method in METHODS:
            for callers in CONCURRENCY:
                for _ in range(max(1, args.rounds)):
                    for live in lives:
                        point = measure(live, agents, method, callers, args)
                        results.setdefault((live.name, method, callers), []).append(point)
                        print(f"[a2a] {point.summary()}", flush=True)
        for live in lives:
            if live.server is not None:
                data.setdefault("rss_after_mb", {})[live.name] = round(live.server.rss_mb(), 1)
        data["points"] = [merge_rounds(points).summary() for points in results.values()]
    finally:
        for live in lives:
            if live.server is not None:
                live.server.stop()
        for agent in agents.values():
            agent.stop()
        os.sched_setaffinity(0, {PROXY_CPU, LOAD_CPU})
    data["router"] = "skipped (--skip-router)" if args.skip_router else router_table()
    data["load_average_end"] = load_average()
    data["elapsed_s"] = round((dt.datetime.now() - started).total_seconds(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"a2a-{started.strftime('%Y-%m-%d-%H%M')}"
    (args.out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    markdown = render(data)
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    print(f"[a2a] wrote {args.out / stem}.md and .json in {data['elapsed_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
