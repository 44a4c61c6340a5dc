"""Streaming throughput through a real gateway, without and with a guard on every detector.

One upstream (bench/paced_upstream: `--interval 0`, a stream of `--chunks` 5-byte tokens,
each its own SSE event, as fast as it can), one `crossway serve` at a time pinned to its own
core (examples/openai.yaml, then the same with a `guardrails` policy of every built-in detector
masking), and a uvloop + aiohttp client keeping `--concurrency` streams open for `--seconds`.
Reported per gateway: streams/s, answer KB/s, and the gateway's own CPU per streamed KB
(CPU-seconds from /proc, so the figure is the gateway's work whoever else shares the machine);
the ratio guarded / plain of KB per gateway CPU-second is the throughput cost of the guard.

    .venv/bin/python -m bench.guard.stream_e2e [--seconds 10] [--concurrency 8] [--chunks 2048]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
import uvloop

from bench import procs
from bench.guard.overhead import ALL_DETECTORS, config_text

REPO: Final = Path(__file__).resolve().parents[2]
WORK: Final = REPO / "bench" / ".work" / "guard"
TOKEN_BYTES: Final = 5
"""Answer text per upstream event (bench/paced_upstream's `" tick"`)."""
REQUEST: Final = orjson.dumps(
    {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "go"}]}
)


async def load(port: int, seconds: float, concurrency: int) -> tuple[int, int]:
    """(streams completed, answer bytes read) in `seconds` with `concurrency` streams open."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    done = 0
    size = 0
    stop = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, size
        while time.monotonic() < stop:
            async with session.post(
                url, data=REQUEST, headers={"content-type": "application/json"}
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}: {await resp.text()}")
                got = 0
                async for chunk in resp.content.iter_any():
                    got += len(chunk)
                if not got:
                    raise RuntimeError("empty stream")
            done += 1
            size += got

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done, size


def measure(name: str, config: str, upstream: int, args: argparse.Namespace) -> dict[str, Any]:
    port = procs.free_port()
    path = WORK / f"{name}.yaml"
    path.write_text(config)
    gateway = procs.start_pinned(
        name,
        [str(REPO / ".venv" / "bin" / "crossway"), "serve", "--config", str(path)],
        cpu=1,
        env={
            "CROSSWAY_PORT": str(port),
            "CROSSWAY_ADMIN_PORT": str(procs.free_port()),
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1",
        },
        cwd=REPO,
        log=WORK / f"{name}.log",
    )
    try:
        procs.wait_ready(gateway, port, "/v1/chat/completions", REQUEST, {}, timeout_s=60)
        uvloop.run(load(port, 2.0, args.concurrency))  # warm-up
        cpu0 = gateway.cpu_seconds()
        t0 = time.monotonic()
        streams, size = uvloop.run(load(port, args.seconds, args.concurrency))
        wall = time.monotonic() - t0
        cpu = gateway.cpu_seconds() - cpu0
    finally:
        gateway.stop()
    text_kb = streams * args.chunks * TOKEN_BYTES / 1024  # the answer text, however framed
    return {
        "name": name,
        "streams_per_s": round(streams / wall, 1),
        "text_kb_per_s": round(text_kb / wall, 1),
        "wire_kb_per_s": round(size / 1024 / wall, 1),
        "gateway_cpu_s": round(cpu, 2),
        "gateway_us_per_text_kb": round(cpu / text_kb * 1e6, 1) if text_kb else None,
        "streams_per_cpu_s": round(streams / cpu, 1) if cpu else None,
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    WORK.mkdir(parents=True, exist_ok=True)
    up_port = procs.free_port()
    upstream = procs.start_pinned(
        "upstream",
        [
            sys.executable,
            "-m",
            "bench.paced_upstream",
            str(up_port),
            "--interval",
            "0",
            "--chunks",
            str(args.chunks),
        ],
        cpu=0,
        env={},
        cwd=REPO,
        log=WORK / "upstream.log",
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                procs.post_once(up_port, "/v1/chat/completions", b"{}", {}, timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        rows = [measure("plain", config_text(False), up_port, args)]
        rows.append(measure("guarded", config_text(True), up_port, args))
    finally:
        upstream.stop()
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    plain, guarded = rows
    ratio = guarded["streams_per_cpu_s"] / plain["streams_per_cpu_s"]
    lines = [
        f"Streams of {args.chunks} five-byte tokens (one SSE event each), {args.concurrency} "
        f"open, {args.seconds:g} s per gateway; guard: {len(ALL_DETECTORS)} detector configs "
        "(every PII entity, secrets, injection, a regex, a word list) masking. The guarded "
        "stream carries the same text in fewer, larger events (the hold-back releases it in "
        "pieces), so wire KB differ; text KB are the answer's own.",
        "",
        "| gateway | streams/s | answer text KB/s | wire KB/s | gateway CPU µs per text KB "
        "| streams per gateway CPU-s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['streams_per_s']} | {r['text_kb_per_s']} | "
            f"{r['wire_kb_per_s']} | {r['gateway_us_per_text_kb']} | {r['streams_per_cpu_s']} |"
        )
    lines += [
        "",
        f"Guarded / plain: streams per gateway CPU-second x{ratio:.3f}; streams/s "
        f"x{guarded['streams_per_s'] / plain['streams_per_s']:.3f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=2048)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with procs.bench_lock("guard-stream"), tempfile.TemporaryDirectory():
        rows = run(args)
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        print(report(rows, args))


if __name__ == "__main__":
    main()
