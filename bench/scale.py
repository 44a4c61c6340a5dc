"""The scale bench: `--workers 2` over `--workers 1`, ten thousand idle streams held by one
worker, and the memory of a thousand MCP sessions.

    flock bench/.work/bench.lock .venv/bin/python -m bench.scale [--only workers llm mcp sessions]
        [--streams 9950] [--mcp-streams 10000] [--sessions 1000] [--interval 10] [--hold 40]

- **workers**: nginx answers the fixed ~1 KB OpenAI Chat request (bench/fixtures.py) at 32 wrk
  connections, against `crossway serve --workers 1` and `--workers 2` in interleaved rounds.
  Worker i runs on core i (all its threads); nginx and wrk on core 1. Two setups: `pinned`
  (nothing more: with two workers the load shares worker 2's core) and `quota` (each worker in
  its own cpu cgroup capped at `--quota` of a core, so the load keeps the rest of core 1 and one
  or two workers get the same budget each). Every row reports requests per CPU-second of the
  gateway's tree, each worker's CPU, and the load's own CPU.
- **llm**: `--streams` streamed chat completions through one worker to bench/paced_upstream.py
  (one chunk per `--interval` seconds per stream), held `--hold` seconds: RSS before, with the
  streams open (per stream) and while chunks flow (growth), that a chunk arrived on every stream,
  a JSON chat call's and the admin /healthz's latency while they are held, then every client
  closes and the upstream must see every stream closed. Opened and closed twice: memory after
  the second round shows whether anything stays per stream.
- **mcp**: `--mcp-streams` MCP sessions (initialize + initialized) each holding its GET /mcp
  stream: RSS per session and per stream, the keep-alive ping arriving on every stream
  (Crossway sends one every 15 s), a `ping` call's latency while they are held.
- **sessions**: `--sessions` MCP sessions initialized and listed once each: RSS per session.

The client side is this process (uvloop, raw asyncio protocols: a few KB per stream) on core 1
with the upstream; one worker on core 0. The gateway's fd limit is raised to the hard limit
(`ulimit -n`); an LLM stream costs it two sockets (client and upstream), so the number of LLM
streams one process can hold is about half its hard limit. Writes
bench/results/scale-YYYY-MM-DD-HHMM.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import secrets
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from bench import fixtures
from bench.harness import combine
from bench.load import LoadResult, run_wrk
from bench.procs import (
    ServerProcess,
    cpu_seconds,
    descendants,
    free_port,
    load_average,
    rss_kb,
)

REPO: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = REPO / "bench" / "results"
CONFIGS: Final = REPO / "bench" / "configs"
WORK: Final = REPO / "bench" / ".work" / "scale"
PROXY_CPU: Final = "0"
BOTH_CPUS: Final = "0,1"
LOAD_CPU: Final = 1
CLIENT_PATH: Final = "/v1/chat/completions"
MCP_PATH: Final = "/mcp"
MCP_PROTOCOL: Final = "2025-11-25"
MCP_KEEPALIVE_S: Final = 15.0
"""Crossway's keep-alive comment interval on an idle MCP GET stream (KEEPALIVE_SECONDS)."""
READY_TIMEOUT_S: Final = 60.0
OPEN_BATCH: Final = 200
"""Connections opened at once while building up the held streams."""
OPEN_TIMEOUT_S: Final = 60.0
CONNECT_TIMEOUT_S: Final = 10.0
EXCHANGE_TIMEOUT_S: Final = 10.0
DRAIN_TIMEOUT_S: Final = 30.0
"""How long the upstream may take to see every closed client's stream closed too."""
"""A probe that got no answer in this time counts as an error (e.g. waiting for a pool slot)."""
PROBES: Final = 30
PROBE_GIVE_UP: Final = 3
"""Probes that failed, none answered: the rest are not tried."""
"""Sequential latency probes while the streams are held."""
SETTLE_S: Final = 2.0
"""Pause after a phase before reading RSS (the allocator and granian settle)."""
CGROUP_ROOT: Final = Path("/sys/fs/cgroup/cpu")
CGROUP_PERIOD_US: Final = 100_000


def raise_fd_limit() -> int:
    """This process's open-file limit raised to the hard limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- processes -------------------------------------------------------------------------------------


def start_crossway(
    name: str,
    config: str,
    *,
    workers: int,
    cpus: str,
    env: dict[str, str],
    work: Path,
    cgroup: Path | None = None,
) -> tuple[ServerProcess, int, int]:
    """`crossway serve --config bench/configs/<config>.yaml --workers N` on `cpus`, its fd limit
    at the hard limit, in `cgroup` if given (its children follow): (it, port, admin port)."""
    port, admin = free_port(), free_port()
    argv = [str(REPO / ".venv" / "bin" / "crossway"), "serve", "--config"]
    argv += [str(CONFIGS / f"{config}.yaml"), "--workers", str(workers)]
    enter = f"echo $$ > {shlex.quote(str(cgroup / 'cgroup.procs'))}; " if cgroup else ""
    script = f'ulimit -n "$(ulimit -Hn)"; {enter}exec taskset -c {cpus} "$@"'
    log = work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "CROSSWAY_PORT": str(port),
        "CROSSWAY_ADMIN_PORT": str(admin),
        "CROSSWAY_LOG_LEVEL": "warning",
        "PYTHON": sys.executable,
        "BENCH_REPO": str(REPO),
        "CROSSWAY_MCP_SESSION_KEY": secrets.token_urlsafe(32),
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["sh", "-c", script, "sh", *argv],
            cwd=REPO,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(name=name, process=process, log=log, argv=argv)
    try:
        wait_http(admin, "/readyz", server)
    except BaseException:
        server.stop()
        raise
    return server, port, admin


def start_paced(
    port: int, interval_s: float, work: Path, chunks: int = 0
) -> subprocess.Popen[bytes]:
    """bench/paced_upstream.py on the load core; waits until it answers."""
    log = work / "logs" / "paced-upstream.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = ["taskset", "-c", str(LOAD_CPU), sys.executable, "-m", "bench.paced_upstream"]
    argv += [str(port), "--interval", str(interval_s), "--chunks", str(chunks)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    wait_http(port, "/healthz", None, process)
    return process


def wait_http(
    port: int,
    path: str,
    server: ServerProcess | None,
    process: subprocess.Popen[bytes] | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> None:
    """Poll GET `path` until it answers 200; raise if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        proc = server.process if server is not None else process
        if proc is not None and proc.poll() is not None:
            tail = server.log_tail() if server is not None else ""
            raise RuntimeError(f"exited with code {proc.returncode} before {path}:\n{tail}")
        try:
            status, _ = asyncio.run(http_get(port, path))
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise RuntimeError(f"{path} on port {port} not ready after {timeout_s:.0f} s ({last})")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- raw HTTP on asyncio ---------------------------------------------------------------------------


def http_request(
    method: str, port: int, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """An HTTP/1.1 request's bytes (`Connection: close` unless `headers` say otherwise)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    merged = {"Connection": "close", **(headers or {})}
    if body or method == "POST":
        merged["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in merged.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def http_exchange(
    port: int, request: bytes, timeout_s: float = EXCHANGE_TIMEOUT_S
) -> tuple[int, bytes]:
    """Send `request` on a new connection, read until the server closes: (status, raw answer);
    status 0 when no answer came in `timeout_s`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        try:
            raw = await asyncio.wait_for(reader.read(-1), timeout_s)
        except TimeoutError:
            return 0, b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = raw.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, raw


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    return await http_exchange(port, http_request("GET", port, path))


def chat_request(port: int, *, stream: bool) -> bytes:
    """The benchmark's ~1 KB OpenAI Chat request through the gateway."""
    body = fixtures.request_body(stream=stream)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    return http_request("POST", port, CLIENT_PATH, body, headers)


def mcp_get_request(port: int, session_id: str) -> bytes:
    """GET /mcp: the session's standalone SSE stream."""
    headers = {
        "Accept": "text/event-stream",
        "Mcp-Session-Id": session_id,
        "Mcp-Protocol-Version": MCP_PROTOCOL,
    }
    return http_request("GET", port, MCP_PATH, headers=headers)


class HeldStream(asyncio.Protocol):
    """One client stream held open: counts the SSE events (or comments) that arrive on it."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.BaseTransport | None = None
        self.status = 0
        self.events = 0
        self.received = 0
        self.closed = False
        self._head = b""
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if not self.status:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            parts = self._head.split(b" ", 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
            data = self._head[end + 4 :]
            self._head = b""
        joined = self._tail + data
        self.events += joined.count(b"\n\n")
        self._tail = joined[-1:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_streams(port: int, requests: Sequence[bytes]) -> list[HeldStream]:
    """One connection per request, `OPEN_BATCH` connecting at a time; a connection that fails
    counts as a closed stream."""
    loop = asyncio.get_running_loop()
    streams: list[HeldStream] = []

    async def connect(request: bytes) -> HeldStream:
        stream = HeldStream(request)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: stream, "127.0.0.1", port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            stream.closed = True
        return stream

    for i in range(0, len(requests), OPEN_BATCH):
        streams += await asyncio.gather(*(connect(r) for r in requests[i : i + OPEN_BATCH]))
    return streams


async def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.2) -> bool:
    """Poll `predicate` until true or `timeout_s` passed; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step_s)
    return True


async def events_arrive(
    streams: Sequence[HeldStream], timeout_s: float, after: Sequence[int] | None = None
) -> int:
    """Wait until every open stream got an event beyond `after` (default: any event); return
    how many did."""
    base = list(after) if after is not None else [0] * len(streams)

    def count() -> int:
        return sum(1 for s, b in zip(streams, base, strict=True) if s.events > b and not s.closed)

    await wait_until(lambda: count() == len(streams), timeout_s)
    return count()


async def latency_probe(
    port: int, request: bytes, count: int = PROBES, ok: int = 200
) -> dict[str, Any]:
    """`count` sequential requests on fresh connections: latency p50 / p99 / max in ms."""
    samples: list[float] = []
    errors = 0
    for _ in range(count):
        started = time.perf_counter()
        try:
            status, _ = await http_exchange(port, request)
        except OSError:
            status = 0
        if status != ok:
            errors += 1
            if errors >= PROBE_GIVE_UP and not samples:
                break  # not answering at all (e.g. every upstream connection is taken)
            continue
        samples.append((time.perf_counter() - started) * 1000)
    return latency_summary(samples, errors)


def latency_summary(samples: list[float], errors: int = 0) -> dict[str, Any]:
    if not samples:
        return {"count": 0, "errors": errors}
    data = sorted(samples)
    return {
        "count": len(data),
        "errors": errors,
        "p50_ms": round(statistics.median(data), 2),
        "p99_ms": round(data[min(len(data) - 1, round(0.99 * (len(data) - 1)))], 2),
        "max_ms": round(data[-1], 2),
    }


# --- memory ----------------------------------------------------------------------------------------


def worker_mb(server: ServerProcess) -> float:
    """RSS of the serving process (with one worker: the whole gateway, admin plane included)."""
    return round(rss_kb(server.worker_pid()) / 1024, 1)


async def settled_mb(server: ServerProcess) -> float:
    await asyncio.sleep(SETTLE_S)
    return worker_mb(server)


def per_item_kb(before_mb: float, after_mb: float, count: int) -> float | None:
    return round((after_mb - before_mb) * 1024 / count, 1) if count else None


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points (None for fewer than two distinct x)."""
    if len(points) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    if den == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / den


# --- LLM streams -----------------------------------------------------------------------------------


@dataclass
class Upstream:
    """bench/paced_upstream.py as the bench sees it."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    async def stats(self) -> dict[str, int]:
        status, raw = await http_get(self.port, "/stats")
        if status != 200:
            raise RuntimeError(f"paced upstream /stats answered {status}")
        return dict(orjson.loads(raw.split(b"\r\n\r\n", 1)[1]))


async def hold_llm_round(
    server: ServerProcess,
    port: int,
    admin: int,
    upstream: Upstream,
    count: int,
    interval_s: float,
    hold_s: float,
    *,
    probe: bool,
) -> dict[str, Any]:
    """Open `count` streams, check them, hold them `hold_s`, close them: the round's figures."""
    out: dict[str, Any] = {"streams": count}
    before = await settled_mb(server)
    out["rss_before_mb"] = before
    started = time.monotonic()
    streams = await open_streams(port, [chat_request(port, stream=True)] * count)
    first = await events_arrive(streams, OPEN_TIMEOUT_S)
    out["open_s"] = round(time.monotonic() - started, 1)
    out["first_event"] = first
    out["status_200"] = sum(1 for s in streams if s.status == 200)
    upstream_stats = await upstream.stats()
    out["upstream_open"] = upstream_stats["open"]
    held = await settled_mb(server)
    out["rss_held_mb"] = held
    out["kb_per_stream"] = per_item_kb(before, held, count)  # every request held open
    if probe:
        out["chat_json_latency"] = await latency_probe(port, chat_request(port, stream=False))
        out["healthz_latency"] = await latency_probe(admin, http_request("GET", admin, "/healthz"))
    # Hold: sample RSS against the chunks relayed so far; every stream must get a new chunk.
    chunks0 = upstream_stats["chunks"]
    marks = [s.events for s in streams]
    points: list[tuple[float, float]] = []
    hold_end = time.monotonic() + max(hold_s, interval_s * 1.5)
    alive = 0
    while time.monotonic() < hold_end:
        await asyncio.sleep(min(2.0, max(0.2, interval_s / 2)))
        chunks = (await upstream.stats())["chunks"] - chunks0
        points.append((chunks, worker_mb(server)))
        alive = sum(1 for s, m in zip(streams, marks, strict=True) if s.events > m and not s.closed)
    out["alive_after_hold"] = alive
    out["closed_during_hold"] = sum(1 for s in streams if s.closed)
    out["hold_s"] = round(max(hold_s, interval_s * 1.5), 1)
    relayed = points[-1][0] if points else 0
    out["chunks_relayed_during_hold"] = relayed
    out["rss_end_of_hold_mb"] = points[-1][1] if points else held
    per_chunk = slope(points)
    out["rss_growth_kb_per_1k_chunks"] = (
        round(per_chunk * 1024 * 1000, 1) if per_chunk is not None and relayed else None
    )
    for stream in streams:
        stream.close()
    closed = await wait_until(
        lambda: all(s.closed for s in streams), OPEN_TIMEOUT_S
    ) and await _upstream_drained(upstream, DRAIN_TIMEOUT_S)
    out["upstream_open_after_close"] = (await upstream.stats())["open"]
    out["all_closed"] = closed
    out["rss_after_close_mb"] = await settled_mb(server)
    return out


async def _upstream_drained(upstream: Upstream, timeout_s: float = OPEN_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await upstream.stats())["open"] == 0:
            return True
        await asyncio.sleep(0.2)
    return False


async def llm_streams_async(
    server: ServerProcess,
    port: int,
    admin: int,
    upstream: Upstream,
    count: int,
    interval_s: float,
    hold_s: float,
    rounds: int = 2,
) -> dict[str, Any]:
    """Warm up (a few streams and JSON calls), then `rounds` rounds of `count` held streams."""
    warm = await open_streams(port, [chat_request(port, stream=True)] * 10)
    await events_arrive(warm, OPEN_TIMEOUT_S)
    for stream in warm:
        stream.close()
    await _upstream_drained(upstream, DRAIN_TIMEOUT_S)
    idle = {
        "chat_json_latency": await latency_probe(port, chat_request(port, stream=False)),
        "healthz_latency": await latency_probe(admin, http_request("GET", admin, "/healthz")),
    }
    out: dict[str, Any] = {"idle": idle, "rounds": []}
    for i in range(rounds):
        print(f"[scale] llm: round {i + 1}: {count} streams", flush=True)
        figures = await hold_llm_round(
            server, port, admin, upstream, count, interval_s, hold_s, probe=i == 0
        )
        print(f"[scale] llm: {figures}", flush=True)
        out["rounds"].append(figures)
    return out


POOL_PATCH: Final = """\
import os, sys

if os.environ.get("SCALE_POOL_LIMIT"):
    from crossway.proxy import client

    client.DEFAULT_POOL_LIMIT = int(os.environ["SCALE_POOL_LIMIT"])
    print("scale bench: upstream pool limit", client.DEFAULT_POOL_LIMIT, file=sys.stderr)
"""
"""A sitecustomize for the `llm_pool_raised` part: the gateway's upstream connection cap
(`crossway.proxy.client.DEFAULT_POOL_LIMIT`, 1024) raised, to see what one worker holds
without it. A what-if of the bench only; the gateway has no such setting."""
RAISED_POOL_LIMIT: Final = 20_000


def measure_llm_pool_raised(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    patch = work / "pool-patch"
    patch.mkdir(parents=True, exist_ok=True)
    (patch / "sitecustomize.py").write_text(POOL_PATCH)
    env = {"PYTHONPATH": str(patch), "SCALE_POOL_LIMIT": str(RAISED_POOL_LIMIT)}
    result = measure_llm(args, work, env=env)
    result["pool_limit"] = RAISED_POOL_LIMIT
    return result


def measure_llm(
    args: argparse.Namespace, work: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    upstream = Upstream(free_port())
    upstream.process = start_paced(upstream.port, args.interval, work)
    server = None
    try:
        base = f"http://127.0.0.1:{upstream.port}/v1"
        server, port, admin = start_crossway(
            "crossway-llm", "scale-llm", workers=1, cpus=PROXY_CPU,
            env={"OPENAI_BASE_URL": base, **(env or {})}, work=work,
        )  # fmt: skip
        result = asyncio.run(
            llm_streams_async(
                server,
                port,
                admin,
                upstream,
                args.streams,
                args.interval,
                args.hold,
                args.llm_rounds,
            )
        )
        result.update(
            {
                "interval_s": args.interval,
                "fd_limit": fd_limit(server.worker_pid()),
                "cpu_s": round(server.cpu_seconds(), 1),
                "alive_at_end": server.alive(),
            }
        )
        return result
    finally:
        if server is not None:
            server.stop()
        stop_process(upstream.process)


def fd_limit(pid: int) -> int | None:
    """The soft open-file limit of process `pid` (from /proc)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        return None
    return None


# --- MCP -------------------------------------------------------------------------------------------


async def mcp_post(
    port: int, message: dict[str, Any], session_id: str | None
) -> tuple[int, bytes, str | None]:
    """One JSON-RPC message POSTed to /mcp: (status, body, the Mcp-Session-Id it answered)."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
        headers["Mcp-Protocol-Version"] = MCP_PROTOCOL
    status, raw = await http_exchange(
        port, http_request("POST", port, MCP_PATH, orjson.dumps(message), headers)
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    sid = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"mcp-session-id":
            sid = value.strip().decode()
    return status, body, sid


async def mcp_open_session(port: int) -> str:
    """initialize + notifications/initialized: the new session's id."""
    status, body, sid = await mcp_post(
        port,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": MCP_PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "crossway-scale-bench", "version": "1"},
            },
        },
        None,
    )
    if status != 200 or sid is None:
        raise RuntimeError(f"initialize: HTTP {status}: {body[:200]!r}")
    status, body, _ = await mcp_post(
        port, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid
    )
    if status not in (200, 202):
        raise RuntimeError(f"notifications/initialized: HTTP {status}: {body[:200]!r}")
    return sid


async def mcp_call(port: int, sid: str, method: str, request_id: int = 2) -> None:
    status, body, _ = await mcp_post(
        port, {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {}}, sid
    )
    if status != 200 or b'"result"' not in body:
        raise RuntimeError(f"{method}: HTTP {status}: {body[:200]!r}")


async def mcp_open_sessions(
    port: int, count: int, concurrency: int = 32, then: str | None = None
) -> list[str]:
    """`count` sessions, `concurrency` at a time (each calls `then` once if given)."""
    ids: list[str] = []
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            sid = await mcp_open_session(port)
            if then is not None:
                await mcp_call(port, sid, then)
            ids.append(sid)

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        print(f"[scale] mcp: {len(failures)} sessions failed, first: {failures[0]}", flush=True)
    return ids


async def mcp_ping_probe(port: int, sid: str, count: int = PROBES) -> dict[str, Any]:
    samples: list[float] = []
    errors = 0
    for i in range(count):
        started = time.perf_counter()
        try:
            await mcp_call(port, sid, "ping", 100 + i)
        except (RuntimeError, OSError):
            errors += 1
            continue
        samples.append((time.perf_counter() - started) * 1000)
    return latency_summary(samples, errors)


async def mcp_streams_async(
    server: ServerProcess, port: int, admin: int, count: int, ping_wait_s: float
) -> dict[str, Any]:
    """`count` sessions, then each one's GET stream held; `ping_wait_s` (0: skip) for the
    keep-alive comment to arrive on every stream."""
    probe_sid = await mcp_open_session(port)
    warm = await mcp_open_sessions(port, 10)
    warm_streams = await open_streams(port, [mcp_get_request(port, s) for s in warm])
    await asyncio.sleep(0.5)
    for stream in warm_streams:
        stream.close()
    out: dict[str, Any] = {
        "idle_ping_latency": await mcp_ping_probe(port, probe_sid),
        "rss_before_mb": await settled_mb(server),
    }
    started = time.monotonic()
    sids = await mcp_open_sessions(port, count)
    out["sessions"] = len(sids)
    out["sessions_open_s"] = round(time.monotonic() - started, 1)
    out["rss_sessions_mb"] = await settled_mb(server)
    out["kb_per_session"] = per_item_kb(out["rss_before_mb"], out["rss_sessions_mb"], len(sids))
    started = time.monotonic()
    streams = await open_streams(port, [mcp_get_request(port, s) for s in sids])
    await wait_until(lambda: all(s.status or s.closed for s in streams), 5.0)
    out["streams"] = len(streams)
    out["streams_open_s"] = round(time.monotonic() - started, 1)
    out["headers_before_first_ping"] = sum(1 for s in streams if s.status == 200)
    out["rss_streams_mb"] = await settled_mb(server)
    out["kb_per_stream"] = per_item_kb(out["rss_sessions_mb"], out["rss_streams_mb"], len(streams))
    out["ping_latency_held"] = await mcp_ping_probe(port, probe_sid)
    out["healthz_latency_held"] = await latency_probe(admin, http_request("GET", admin, "/healthz"))
    if ping_wait_s > 0:
        out["keepalive_arrived"] = await events_arrive(streams, ping_wait_s)
        out["status_200"] = sum(1 for s in streams if s.status == 200)
        out["rss_after_keepalive_mb"] = worker_mb(server)
    out["closed_by_server"] = sum(1 for s in streams if s.closed)
    for stream in streams:
        stream.close()
    await wait_until(lambda: all(s.closed for s in streams), OPEN_TIMEOUT_S)
    out["rss_after_close_mb"] = await settled_mb(server)
    return out


def measure_mcp_streams(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    server, port, admin = start_crossway(
        "crossway-mcp-streams", "scale-mcp", workers=1, cpus=PROXY_CPU, env={}, work=work
    )
    try:
        result = asyncio.run(
            mcp_streams_async(server, port, admin, args.mcp_streams, MCP_KEEPALIVE_S + 10)
        )
        result["alive_at_end"] = server.alive()
        result["fd_limit"] = fd_limit(server.worker_pid())
        return result
    finally:
        server.stop()


async def mcp_sessions_async(server: ServerProcess, port: int, count: int) -> dict[str, Any]:
    """RSS before and after `count` sessions, each initialized and listed once."""
    await mcp_open_sessions(port, 20, then="tools/list")
    before = await settled_mb(server)
    started = time.monotonic()
    sids = await mcp_open_sessions(port, count, then="tools/list")
    elapsed = time.monotonic() - started
    after = await settled_mb(server)
    # The same number again: memory that keeps growing means sessions are not bounded.
    again = await mcp_open_sessions(port, count, then="tools/list")
    after_again = await settled_mb(server)
    return {
        "sessions": len(sids),
        "open_s": round(elapsed, 1),
        "rss_before_mb": before,
        "rss_after_mb": after,
        "kb_per_session": per_item_kb(before, after, len(sids)),
        "second_batch": len(again),
        "rss_after_second_mb": after_again,
        "kb_per_session_second": per_item_kb(after, after_again, len(again)),
    }


def measure_sessions(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    server, port, _ = start_crossway(
        "crossway-mcp-sessions", "scale-mcp", workers=1, cpus=PROXY_CPU, env={}, work=work
    )
    try:
        return asyncio.run(mcp_sessions_async(server, port, args.sessions))
    finally:
        server.stop()


# --- workers ---------------------------------------------------------------------------------------


@dataclass
class WorkersRow:
    """One gateway setup of the workers measurement."""

    name: str
    workers: int
    setup: str
    """`pinned` or `quota`."""
    server: ServerProcess | None = None
    port: int = 0
    rounds: list[LoadResult] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    worker_cpu: list[list[float]] = field(default_factory=list)
    load_cpu: list[float] = field(default_factory=list)
    groups: list[CpuCgroup] = field(default_factory=list)


def worker_pids(server: ServerProcess) -> list[int]:
    """The serving processes: with several workers granian's children running the app, with one
    the process itself."""
    tree = server.tree()
    if len(tree) == 1:
        return tree
    root = server.process.pid
    return sorted(pid for pid in tree if pid != root and rss_kb(pid) > 30 * 1024)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuCgroup:
    """A cpu cgroup (v1) with a CFS quota, removed on close."""

    def __init__(self, name: str, cores: float) -> None:
        self.path = CGROUP_ROOT / name
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text(str(CGROUP_PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(int(cores * CGROUP_PERIOD_US)))

    def add(self, pid: int) -> None:
        """Move process `pid` (all its threads; its future children follow) into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith("throttled_time"):
                return int(line.split()[1]) / 1e9
        return 0.0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                (self.path.parent / "cgroup.procs").write_text(pid)
            self.path.rmdir()


def measure_workers(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from bench.gateway_rows import start_upstream

    nginx, nginx_port = start_upstream(work)
    body = work / "request.json"
    body.write_bytes(fixtures.request_body(stream=False))
    rows = [
        WorkersRow("w1-pinned", 1, "pinned"),
        WorkersRow("w2-pinned", 2, "pinned"),
        WorkersRow("w1-quota", 1, "quota"),
        WorkersRow("w2-quota", 2, "quota"),
    ]
    groups: list[CpuCgroup] = []
    nginx_pids = descendants(nginx.process.pid)
    try:
        for row in rows:
            row.server, row.port, _ = start_crossway(
                f"crossway-{row.name}", "scale-llm", workers=row.workers,
                cpus=PROXY_CPU if row.workers == 1 else BOTH_CPUS,
                env={"OPENAI_BASE_URL": f"http://127.0.0.1:{nginx_port}/v1"}, work=work,
            )  # fmt: skip
            # Worker i on core i, all its threads; with `quota`, each in its own capped cgroup.
            for core, pid in enumerate(worker_pids(row.server)):
                subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)],
                               check=True, capture_output=True)  # fmt: skip
                if row.setup == "quota":
                    group = CpuCgroup(f"crossway-scale-{os.getpid()}-{row.name}-{core}", args.quota)
                    group.add(pid)
                    groups.append(group)
                    row.groups.append(group)
            load_row(row, body, 32, args.warmup)
        for _ in range(args.rounds):
            for row in rows:
                load_row(row, body, 32, args.seconds / args.rounds, nginx_pids, measure=True)
        results = [workers_result(row) for row in rows]
    finally:
        for row in rows:
            if row.server is not None:
                row.server.stop()
        for group in groups:
            group.close()
        nginx.stop()
    by_name = {r["name"]: r for r in results}
    ratios = {}
    for setup in ("pinned", "quota"):
        one, two = by_name[f"w1-{setup}"], by_name[f"w2-{setup}"]
        ratios[setup] = {
            "rps": round(two["rps"] / one["rps"], 3),
            "requests_per_cpu_second": round(
                two["requests_per_cpu_second"] / one["requests_per_cpu_second"], 3
            ),
        }
    return {"rows": results, "ratios": ratios, "quota_cores_per_worker": args.quota}


def load_row(
    row: WorkersRow,
    body: Path,
    connections: int,
    seconds: float,
    nginx_pids: Sequence[int] = (),
    *,
    measure: bool = False,
) -> None:
    assert row.server is not None
    pids = worker_pids(row.server)
    cpu0, each0 = row.server.cpu_seconds(), [cpu_seconds(p) for p in pids]
    load0 = children_cpu() + sum(cpu_seconds(p) for p in nginx_pids)
    result = run_wrk(
        f"http://127.0.0.1:{row.port}{CLIENT_PATH}",
        body=body,
        key="sk-bench",
        connections=connections,
        seconds=seconds,
        cpu=LOAD_CPU,
    )
    if not measure:
        return
    row.rounds.append(result)
    row.cpu.append(row.server.cpu_seconds() - cpu0)
    row.worker_cpu.append([cpu_seconds(p) - c for p, c in zip(pids, each0, strict=True)])
    row.load_cpu.append(children_cpu() + sum(cpu_seconds(p) for p in nginx_pids) - load0)


def workers_result(row: WorkersRow) -> dict[str, Any]:
    c = combine(row.rounds)
    duration = sum(r.duration_s for r in row.rounds)
    cpu = sum(row.cpu)
    per_worker = [round(sum(x) / duration * 100, 1) for x in zip(*row.worker_cpu, strict=True)]
    out = {
        "name": row.name,
        "workers": row.workers,
        "setup": row.setup,
        "rps": c["rps"],
        "rps_rounds": c["rps_rounds"],
        "errors": c["errors"],
        "p50_ms": round(c["latency_us"]["p50"] / 1000, 2),
        "p99_ms": round(c["latency_us"]["p99"] / 1000, 2),
        "gateway_cpu_percent": round(cpu / duration * 100, 1),
        "worker_cpu_percent": per_worker,
        "requests_per_cpu_second": round(c["requests"] / cpu, 1) if cpu else None,
        "load_cpu_percent": round(sum(row.load_cpu) / duration * 100, 1),
        "load_cpu_us_per_request": round(sum(row.load_cpu) / c["requests"] * 1e6, 1),
    }
    if row.groups:
        out["throttled_s"] = [round(g.throttled_s(), 1) for g in row.groups]
    return out


# --- report ----------------------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    """The Markdown report of one run."""
    m = data["machine"]
    lines = [
        f"# Scale bench, {data['started']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; Crossway at"
        f" `{m['crossway_commit']}`. Load average at the start {data['load_average_start']},"
        f" at the end {data['load_average_end']}. Command: `{data['command']}`.",
    ]
    if "workers" in data:
        lines += _workers_lines(data["workers"], data["settings"])
    if "llm" in data:
        lines += _llm_lines(data["llm"])
    if "llm_pool_raised" in data:
        lines += _llm_lines(data["llm_pool_raised"], " — upstream pool cap raised (bench patch)")
    if "mcp_streams" in data:
        lines += _mcp_stream_lines(data["mcp_streams"])
    if "sessions" in data:
        lines += _session_lines(data["sessions"])
    return "\n".join(lines) + "\n"


def _workers_lines(w: dict[str, Any], s: dict[str, Any]) -> list[str]:
    if "failed" in w:
        return ["", "## --workers 2 vs --workers 1", "", f"FAILED: {w['failed']}"]
    lines = [
        "",
        "## --workers 2 vs --workers 1 (non-streaming chat, nginx upstream)",
        "",
        f"wrk, 32 connections, {s['seconds']:g} s per row in {s['rounds']} interleaved rounds"
        f" after {s['warmup']:g} s warm-up. Worker i runs on core i (all its threads, `taskset"
        " -a`); nginx and wrk on core 1, so with two workers the load shares worker 2's core."
        " `pinned`: nothing more. `quota`: each worker also in its own cpu cgroup capped at"
        f" {w['quota_cores_per_worker']:g} of a core, so the load keeps the rest of core 1 and"
        " both setups give every worker the same budget. Load CPU = wrk + nginx; gateway CPU"
        " includes the supervisor (admin plane) with two workers.",
        "",
        "| row | req/s | gateway CPU % | per worker CPU % | req per gateway CPU-s | load CPU % |"
        " load CPU us/req | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in w["rows"]:
        lines.append(
            f"| {r['name']} | {r['rps']:.0f} | {r['gateway_cpu_percent']} |"
            f" {' / '.join(str(x) for x in r['worker_cpu_percent'])} |"
            f" {r['requests_per_cpu_second']} | {r['load_cpu_percent']} |"
            f" {r['load_cpu_us_per_request']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |"
        )
    lines.append("")
    for setup, ratio in w["ratios"].items():
        lines.append(
            f"- {setup}: `--workers 2` / `--workers 1` = {ratio['rps']:.2f}x req/s"
            f" (goal >= 1.8x), {ratio['requests_per_cpu_second']:.2f}x req per gateway CPU-second"
        )
    return lines


def _lat(d: dict[str, Any] | None) -> str:
    if not d or not d.get("count"):
        return "-"
    return f"{d['p50_ms']} / {d['p99_ms']} ({d['errors']} errors)"


def _llm_lines(r: dict[str, Any], variant: str = "") -> list[str]:
    if "failed" in r:
        return ["", f"## Idle LLM streams, one worker{variant}", "", f"FAILED: {r['failed']}"]
    lines = [
        "",
        f"## Idle LLM streams, one worker (paced upstream: a chunk every {r['interval_s']:g} s"
        f" per stream){variant}",
        "",
        f"Gateway fd limit {r['fd_limit']}. Idle latency p50 / p99 ms: chat JSON"
        f" {_lat(r['idle']['chat_json_latency'])}, admin /healthz"
        f" {_lat(r['idle']['healthz_latency'])}.",
        "",
        "| round | streams | got first chunk | upstream open | RSS before MB | RSS held MB |"
        " KB per open request | chunk on every stream after hold | chunks relayed | RSS growth KB"
        " per 1k chunks | all closed, upstream too | RSS after close MB | open s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, x in enumerate(r["rounds"], 1):
        lines.append(
            f"| {i} | {x['streams']} | {x['first_event']} | {x['upstream_open']} |"
            f" {x['rss_before_mb']} | {x['rss_held_mb']} | {x['kb_per_stream']} |"
            f" {x['alive_after_hold']} | {x['chunks_relayed_during_hold']} |"
            f" {x['rss_growth_kb_per_1k_chunks']} | {x['all_closed']}"
            f" ({x['upstream_open_after_close']} open) | {x['rss_after_close_mb']} | {x['open_s']} |"
        )
    first = r["rounds"][0]
    lines += [
        "",
        f"While held (round 1), latency p50 / p99 ms: chat JSON {_lat(first.get('chat_json_latency'))},"
        f" admin /healthz {_lat(first.get('healthz_latency'))}. Gateway CPU over the whole run"
        f" {r['cpu_s']} s; alive at the end: {r['alive_at_end']}.",
    ]
    return lines


def _mcp_stream_lines(r: dict[str, Any]) -> list[str]:
    if "failed" in r:
        return ["", "## Idle MCP GET streams, one worker", "", f"FAILED: {r['failed']}"]
    return [
        "",
        "## Idle MCP GET streams, one worker (one session per stream, stdio upstream)",
        "",
        "| sessions | RSS before MB | RSS with sessions MB | KB per session | streams |"
        " RSS with streams MB | KB per stream | keep-alive arrived on | closed by server |"
        " RSS after close MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['sessions']} | {r['rss_before_mb']} | {r['rss_sessions_mb']} |"
        f" {r['kb_per_session']} | {r['streams']} | {r['rss_streams_mb']} | {r['kb_per_stream']} |"
        f" {r.get('keepalive_arrived', '-')} | {r['closed_by_server']} |"
        f" {r['rss_after_close_mb']} |",
        "",
        f"`ping` latency p50 / p99 ms: idle {_lat(r['idle_ping_latency'])}, with the streams"
        f" held {_lat(r['ping_latency_held'])}; admin /healthz held"
        f" {_lat(r['healthz_latency_held'])}. Sessions opened in {r['sessions_open_s']} s,"
        f" streams in {r['streams_open_s']} s; fd limit {r['fd_limit']}.",
    ]


def _session_lines(r: dict[str, Any]) -> list[str]:
    if "failed" in r:
        return ["", "## MCP sessions' memory", "", f"FAILED: {r['failed']}"]
    return [
        "",
        "## MCP sessions' memory, one worker (initialize + initialized + tools/list each)",
        "",
        "| sessions | RSS before MB | RSS after MB | KB per session | next batch | RSS after"
        " MB | KB per session |",
        "|---|---|---|---|---|---|---|",
        f"| {r['sessions']} | {r['rss_before_mb']} | {r['rss_after_mb']} | {r['kb_per_session']} |"
        f" {r['second_batch']} | {r['rss_after_second_mb']} | {r['kb_per_session_second']} |",
    ]


# --- main ------------------------------------------------------------------------------------------

PARTS: Final[dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]]] = {
    "workers": measure_workers,
    "llm": measure_llm,
    "llm_pool_raised": measure_llm_pool_raised,
    "mcp_streams": measure_mcp_streams,
    "sessions": measure_sessions,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--streams", type=int, default=9950, help="LLM streams held")
    parser.add_argument("--mcp-streams", type=int, default=10_000, help="MCP GET streams held")
    parser.add_argument("--sessions", type=int, default=1000, help="MCP sessions (memory)")
    parser.add_argument("--interval", type=float, default=10.0, help="paced upstream interval")
    parser.add_argument("--llm-rounds", type=int, default=2, help="open/hold/close rounds")
    parser.add_argument("--hold", type=float, default=40.0, help="seconds the streams are held")
    parser.add_argument("--seconds", type=float, default=18.0, help="wrk time per workers row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--quota", type=float, default=0.7, help="cores per worker (quota rows)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    from bench.gateway_rows import machine_facts

    args = parse_args(argv)
    raise_fd_limit()
    machine = machine_facts() | {"cores": os.cpu_count()}
    os.sched_setaffinity(0, {LOAD_CPU})  # the clients share the load core with the upstream
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    started = dt.datetime.now()
    work = WORK
    (work / "logs").mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "command": "python -m bench.scale " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load_average_start": load_average(),
    }
    for part in args.only:
        print(f"[scale] {part}", flush=True)
        try:
            data[part] = PARTS[part](args, work)
        except (RuntimeError, OSError, subprocess.SubprocessError, AssertionError) as exc:
            data[part] = {"failed": f"{type(exc).__name__}: {exc}"}
        print(f"[scale] {part}: {json.dumps(data[part])[:2000]}", flush=True)
    data["load_average_end"] = load_average()
    data["elapsed_s"] = round((dt.datetime.now() - started).total_seconds(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"scale-{started.strftime('%Y-%m-%d-%H%M')}"
    (args.out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    markdown = render(data)
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    print(f"[scale] wrote {args.out / stem}.md and .json in {data['elapsed_s']} s", flush=True)


if __name__ == "__main__":
    main()
