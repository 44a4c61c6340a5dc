"""The MCP bench: `tools/call` through Crossway vs direct vs FastMCP's proxy vs ContextForge,
`tools/list` over 20 upstreams x 50 tools, and memory per held-open session.

    .venv/bin/python -m bench.mcp.bench [--seconds 10] [--only crossway direct ...] [--skip-list]
        [--ref GIT_REF] [--profile]

`--ref` adds the target `crossway@REF`: Crossway as of that commit (its `src/` exported with
`git archive` under bench/.work/, put first on PYTHONPATH), measured in the same interleaved
rounds as the working tree's, for before/after figures from one run. `--profile` samples each
Crossway target with py-spy (bench/.peers/tools) for one extra window per session count, after
the measured rounds, and adds the top entries to the report.

Every proxy runs pinned to core 0 (`taskset -c 0`, one worker); the upstream and this load
generator share core 1. Writes bench/results/mcp-YYYY-MM-DD-HHMM.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from bench.mcp import load

REPO: Final = Path(__file__).resolve().parents[2]
PEERS: Final = REPO / "bench" / ".peers"
RESULTS: Final = REPO / "bench" / "results"
WORK: Final = REPO / "bench" / ".work"
PROXY_CPU: Final = "0"
LOAD_CPU: Final = 1
CALL: Final = {"name": "echo", "arguments": {"text": "hello"}}
READY_TIMEOUT: Final = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def rss_kb(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * (
            os.sysconf("SC_PAGE_SIZE") // 1024
        )
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def start(
    name: str, argv: list[str], cpu: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> Proc:
    log = Path(tempfile.mkstemp(prefix=f"mcp-bench-{name}-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["taskset", "-c", cpu, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return Proc(name, process, log)


def ready(proc: Proc, port: int) -> None:
    try:
        wait_until(lambda: proc.process.poll() is not None or port_open(port), proc.name)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"{proc.name} did not start:\n{proc.tail()}") from None
    if proc.process.poll() is not None:
        raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}:\n{proc.tail()}")


# -- targets --------------------------------------------------------------------------------------


def crossway_config(servers: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        listen: {{host: 127.0.0.1, port: {{port}}}}
        admin: {{port: {{admin}}}}
        routes:
          - {{name: mcp, backend: tools}}
        backends:
          tools:
            type: mcp
            {extra}
            servers:
        """
    ) + textwrap.indent(servers, " " * 6)


def export_ref(ref: str) -> Path:
    """`src/` of Crossway at git `ref`, exported once under bench/.work/ (not a worktree: the
    checkout's own git state is left alone). `dir:PATH` names a copied `src/` directory
    instead (a snapshot of uncommitted work, so later edits do not change what is measured)."""
    if ref.startswith("dir:"):
        given = Path(ref[4:]).resolve()
        src = given / "src" if (given / "src" / "crossway").is_dir() else given
        if not (src / "crossway").is_dir():
            raise RuntimeError(f"{given} holds no crossway package (nor does its src/)")
        return src
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    root = WORK / f"ref-{sha[:12]}"
    if not (root / "src" / "crossway").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "src"], cwd=REPO, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root / "src"


def _ref_label(ref: str) -> str:
    """How a `--ref` is named in the report: the git ref, or a snapshot's directory name."""
    return Path(ref[4:]).name if ref.startswith("dir:") else ref


def start_crossway(config: str, src: Path | None = None) -> tuple[Proc, str]:
    port, admin = free_port(), free_port()
    path = Path(tempfile.mkstemp(prefix="mcp-bench-", suffix=".yaml")[1])
    path.write_text(config.replace("{port}", str(port)).replace("{admin}", str(admin)))
    env = {"CROSSWAY_LOG_LEVEL": "warning"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    proc = start(
        "crossway",
        [sys.executable, "-m", "crossway", "serve", "--config", str(path), "--workers", "1"],
        PROXY_CPU,
        env=env,
    )
    ready(proc, port)
    wait_until(lambda: _status(f"http://127.0.0.1:{admin}/readyz") == 200, "crossway readiness")
    return proc, f"http://127.0.0.1:{port}/mcp"


def _status(url: str) -> int | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def start_fastmcp(upstream: str) -> tuple[Proc, str]:
    python = PEERS / "fastmcp" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(
            "fastmcp is not installed in bench/.peers/fastmcp (see bench/mcp/run.sh)"
        )
    port = free_port()
    proc = start(
        "fastmcp",
        [str(python), str(REPO / "bench" / "mcp" / "fastmcp_proxy.py"), upstream, str(port)],
        PROXY_CPU,
    )
    ready(proc, port)
    return proc, f"http://127.0.0.1:{port}/mcp"


def start_contextforge(upstream: str) -> tuple[Proc, str, dict[str, str], dict[str, Any]]:
    root = PEERS / "contextforge"
    if not (root / "bin" / "mcpgateway").exists():
        raise RuntimeError(
            "ContextForge is not installed in bench/.peers/contextforge (see bench/mcp/run.sh)"
        )
    from bench.mcp import contextforge

    return contextforge.start(root, upstream, start, ready, free_port())


# -- measurements ---------------------------------------------------------------------------------


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and its descendants."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [root]
    seen: set[int] = set()
    while pids:
        pid = pids.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except (OSError, IndexError, ValueError):
            continue
        pids.extend(int(c) for c in children)
    return total


def measure_calls(
    url: str,
    seconds: float,
    headers: dict[str, str] | None = None,
    call: dict[str, Any] = CALL,
    pid: int | None = None,
) -> dict[str, Any]:
    out = {}
    for sessions in (1, 16):
        result = asyncio.run(
            load.run(
                url,
                sessions=sessions,
                seconds=seconds,
                warmup=min(2.0, seconds / 3),
                params=call,
                headers=headers,
                cpu=(lambda: cpu_seconds(pid)) if pid is not None else None,
            )
        )
        out[str(sessions)] = result.summary()
        print(f"    {sessions:>2} sessions: {out[str(sessions)]}", flush=True)
    return out


def profile_calls(
    pid: int,
    url: str,
    seconds: float,
    headers: dict[str, str] | None,
    call: dict[str, Any],
) -> dict[str, Any]:
    """py-spy samples of the proxy worker under `tools/call` load, per session count; shares
    turned into microseconds per call with the CPU time measured in the same window."""
    from bench import profile

    binary = profile.pyspy_binary(REPO)
    if binary is None:
        return {"error": "py-spy is not installed (BENCH_PROFILE=1 bash bench/run.sh)"}
    worker = _worker_pid(pid)
    out: dict[str, Any] = {}
    for sessions in (1, 16):
        raw = Path(tempfile.mkstemp(prefix="mcp-bench-pyspy-", suffix=".txt")[1])
        recorder = profile.start_record(binary, worker, int(seconds), raw, cpu=LOAD_CPU)
        result = asyncio.run(
            load.run(
                url,
                sessions=sessions,
                seconds=seconds,
                warmup=0.5,
                params=call,
                headers=headers,
                cpu=lambda: cpu_seconds(pid),
            )
        )
        _, err = recorder.communicate(timeout=seconds + 30)
        summary = result.summary()
        if not raw.exists() or raw.stat().st_size == 0:
            out[str(sessions)] = {"error": err.decode(errors="replace")[-300:]}
            continue
        out[str(sessions)] = profile.summarize(
            raw, cpu_us_per_request=summary["proxy_cpu_us_per_call"], top=12
        )
        raw.unlink(missing_ok=True)
    return out


def _worker_pid(pid: int) -> int:
    """The serving process under `pid` (granian runs its worker as a child), else `pid`."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pid
    return int(children[-1]) if children else pid


def median_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per session count, the median of each figure over the rounds."""
    out: dict[str, Any] = {}
    for sessions in results[0]:
        rows = [r[sessions] for r in results if sessions in r]
        merged: dict[str, Any] = {"sessions": rows[0]["sessions"], "rounds": len(rows)}
        for key in ("calls_per_s", "p50_ms", "p99_ms", "mean_ms", "proxy_cpu_us_per_call"):
            values = sorted(v[key] for v in rows if v.get(key) is not None)
            merged[key] = values[len(values) // 2] if values else None
        merged["calls"] = sum(v["calls"] for v in rows)
        merged["errors"] = sum(v["errors"] for v in rows)
        out[sessions] = merged
    return out


def measure_list(seconds: float) -> dict[str, Any]:
    """tools/list through Crossway federating 20 stdio upstreams x 50 tools."""
    servers = "".join(
        f'u{i}: {{type: stdio, command: "{sys.executable}", args: ["-m", "bench.mcp.upstream", "stdio", "{i}", "50"], cwd: "{REPO}"}}\n'
        for i in range(20)
    )
    proc, url = start_crossway(crossway_config(servers))
    try:
        warm = asyncio.run(
            load.run(url, sessions=1, seconds=seconds, warmup=1.0, method="tools/list")
        )
        count = asyncio.run(_count_tools(url))
        fresh = asyncio.run(_fresh_session_lists(url, 30))
    finally:
        proc.stop()
    summary = {"tools": count, "warm": warm.summary(), "fresh_session_first_list_ms": fresh}
    print(f"    tools/list: {summary}", flush=True)
    return summary


async def _count_tools(url: str) -> int:
    async with aiohttp.ClientSession() as http:
        client = load.McpSession(http, url)
        await client.open()
        result = await client.rpc("tools/list")
        await client.close()
        return len(result["tools"])


async def _fresh_session_lists(url: str, rounds: int) -> dict[str, float]:
    """p50/p99 of the first tools/list in a new session (nothing cached for it yet)."""
    samples = []
    async with aiohttp.ClientSession() as http:
        for _ in range(rounds):
            client = load.McpSession(http, url)
            await client.open()
            started = time.perf_counter()
            await client.rpc("tools/list")
            samples.append((time.perf_counter() - started) * 1000)
            await client.close()
    samples.sort()
    return {"p50_ms": round(samples[len(samples) // 2], 3), "p99_ms": round(samples[-1], 3)}


def measure_memory(upstream: str, sessions: int = 1000) -> dict[str, Any]:
    """RSS of Crossway before and after `sessions` sessions are opened and held."""
    out: dict[str, Any] = {}
    variants = {
        "stdio upstream (shared child)": f'up: {{type: stdio, command: "{sys.executable}", args: ["-m", "bench.mcp.upstream", "stdio", "0", "5"], cwd: "{REPO}"}}\n',
        "streamable_http upstream (one upstream session per client)": f"up: {{type: streamable_http, url: {upstream}}}\n",
    }
    for label, servers in variants.items():
        proc, url = start_crossway(crossway_config(servers))
        try:
            before, after, opened = asyncio.run(_hold_sessions(url, proc.process.pid, sessions))
        finally:
            proc.stop()
        per = (after - before) / max(opened, 1)
        out[label] = {
            "sessions": opened,
            "rss_before_mb": round(before / 1024, 1),
            "rss_after_mb": round(after / 1024, 1),
            "kb_per_session": round(per, 1),
        }
        print(f"    memory, {label}: {out[label]}", flush=True)
    return out


async def _hold_sessions(url: str, pid: int, count: int) -> tuple[int, int, int]:
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as http:
        warm = load.McpSession(http, url)
        await warm.open()
        await warm.rpc("tools/list")
        await asyncio.sleep(1)
        before = rss_kb(pid)
        clients = [load.McpSession(http, url) for _ in range(count)]
        opened = 0
        for i in range(0, count, 50):
            batch = clients[i : i + 50]
            results = await asyncio.gather(*(c.open() for c in batch), return_exceptions=True)
            opened += sum(1 for r in results if not isinstance(r, BaseException))
        # Each session lists once, so its per-session caches are filled too.
        for i in range(0, count, 50):
            await asyncio.gather(
                *(c.rpc("tools/list") for c in clients[i : i + 50]), return_exceptions=True
            )
        await asyncio.sleep(2)
        after = rss_kb(pid)
        return before, after, opened


# -- report ---------------------------------------------------------------------------------------


def write_report(data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    (RESULTS / f"mcp-{stamp}.json").write_text(json.dumps(data, indent=2))
    md = render_markdown(data)
    path = RESULTS / f"mcp-{stamp}.md"
    path.write_text(md)
    return path


def render_markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# MCP bench, {data['when']}",
        "",
        f"Machine: {data['machine']}. Proxies pinned to core {PROXY_CPU} (one worker); upstream and load",
        f"generator on core {LOAD_CPU}. {data['seconds']:g} s per measurement after warm-up, targets measured round-robin,"
        f" {data.get('rounds_run', 1)} rounds, medians shown. Load average before the run: {data.get('load_before', '?')}. Upstream: the `mcp` SDK's",
        "Streamable HTTP server (`bench/mcp/upstream.py`, tool `echo`); client: `bench/mcp/load.py`",
        "(raw Streamable HTTP, one session per concurrent client, calls back to back).",
        "",
        "## tools/call",
        "| target | sessions | calls/s | p50 ms | p99 ms | added p50 ms | calls/s vs direct | proxy CPU per call |",
        "|---|---|---|---|---|---|---|---|",
    ]
    calls = data["tools_call"]
    direct = calls.get("direct", {})
    for target, result in calls.items():
        if "error" in result:
            lines.append(f"| {target} | - | - | - | - | - | failed: {result['error']} | - |")
            continue
        for sessions, row in result.items():
            base = direct.get(sessions)
            added = f"{row['p50_ms'] - base['p50_ms']:+.2f}" if base and target != "direct" else "-"
            ratio = (
                f"{row['calls_per_s'] / base['calls_per_s']:.2f}x"
                if base and target != "direct"
                else "-"
            )
            cpu = row.get("proxy_cpu_us_per_call")
            cpu_text = f"{cpu / 1000:.2f} ms" if cpu is not None else "-"
            lines.append(
                f"| {target} | {sessions} | {row['calls_per_s']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {added} | {ratio} | {cpu_text} |"
            )
    if "tools_list" in data:
        tl = data["tools_list"]
        lines += [
            "",
            "## tools/list, 20 upstreams x 50 tools (Crossway)",
            f"{tl['tools']} tools listed. Same session, warm: p50 {tl['warm']['p50_ms']:.2f} ms, p99 {tl['warm']['p99_ms']:.2f} ms,"
            f" {tl['warm']['calls_per_s']:.0f} lists/s. First list of a new session (fans out to all 20): p50"
            f" {tl['fresh_session_first_list_ms']['p50_ms']:.2f} ms, max {tl['fresh_session_first_list_ms']['p99_ms']:.2f} ms.",
        ]
    if "memory" in data:
        lines += [
            "",
            "## 1,000 sessions held open (Crossway RSS)",
            "| upstream | sessions | RSS before MB | RSS after MB | KB per session |",
            "|---|---|---|---|---|",
        ]
        for label, row in data["memory"].items():
            lines.append(
                f"| {label} | {row['sessions']} | {row['rss_before_mb']} | {row['rss_after_mb']} | {row['kb_per_session']} |"
            )
    for target, per_sessions in data.get("profiles", {}).items():
        for sessions, prof in per_sessions.items():
            lines += ["", f"## py-spy: {target}, {sessions} sessions"]
            if "error" in prof:
                lines.append(f"failed: {prof['error']}")
                continue
            lines += [
                f"{prof['samples']} samples at {prof['rate_hz']} Hz; proxy CPU"
                f" {prof['cpu_us_per_request']} us per call.",
                "",
                "| component (leaf) | % | us/call |",
                "|---|---|---|",
                *[
                    f"| {r['function']} | {r['percent']} | {r['us_per_request']} |"
                    for r in prof["components"][:8]
                ],
                "",
                "| self (leaf function) | % | us/call |",
                "|---|---|---|",
                *[
                    f"| {r['function']} | {r['percent']} | {r['us_per_request']} |"
                    for r in prof["self"][:12]
                ],
                "",
                "| Crossway, inclusive | % | us/call |",
                "|---|---|---|",
                *[
                    f"| {r['function']} | {r['percent']} | {r['us_per_request']} |"
                    for r in prof["crossway_inclusive"][:12]
                ],
            ]
    if data.get("notes"):
        lines += ["", "## Notes", *[f"- {n}" for n in data["notes"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-list", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--ref",
        action="append",
        default=[],
        help="also measure Crossway as of this git ref, or a copied src/ as dir:PATH (repeatable)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the Crossway targets")
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        sys.exit("taskset is required (util-linux)")
    os.sched_setaffinity(0, {LOAD_CPU})

    data: dict[str, Any] = {
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "seconds": args.seconds,
        "rounds_run": args.rounds,
        "load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "tools_call": {},
        "notes": [],
    }
    upstream_port = free_port()
    upstream = start(
        "upstream",
        [sys.executable, "-m", "bench.mcp.upstream", "http", str(upstream_port)],
        str(LOAD_CPU),
    )
    ready(upstream, upstream_port)
    upstream_url = f"http://127.0.0.1:{upstream_port}/mcp"
    wanted = args.only or ["direct", "crossway", "fastmcp", "contextforge"]
    refs = {f"crossway@{_ref_label(ref)}": ref for ref in args.ref}
    wanted = [*wanted, *refs]
    try:
        # Start every target first, then measure them round-robin, so slow drifts in the
        # machine's load hit all of them alike; each figure is the median over the rounds.
        running: dict[str, tuple[Proc | None, str, dict[str, str] | None, dict[str, Any]]] = {}
        for target in wanted:
            try:
                if target == "direct":
                    running[target] = (None, upstream_url, None, CALL)
                elif target == "crossway" or target.startswith("crossway@"):
                    src = export_ref(refs[target]) if target in refs else None
                    proc, url = start_crossway(
                        crossway_config(
                            f"up: {{type: streamable_http, url: {upstream_url}, prefix: false}}\n"
                        ),
                        src,
                    )
                    running[target] = (proc, url, None, CALL)
                elif target == "fastmcp":
                    proc, url = start_fastmcp(upstream_url)
                    running[target] = (proc, url, None, CALL)
                elif target == "contextforge":
                    proc, url, headers, call = start_contextforge(upstream_url)
                    running[target] = (proc, url, headers, call)
                else:
                    raise RuntimeError(f"unknown target {target}")
            except Exception as exc:
                print(f"    {target} failed to start: {exc}", flush=True)
                data["tools_call"][target] = {"error": str(exc).splitlines()[0][:300]}
                data["notes"].append(f"{target}: {str(exc)[:600]}")
        rounds: dict[str, list[dict[str, Any]]] = {t: [] for t in running}
        try:
            for number in range(args.rounds):
                for target, (proc, url, headers, call) in running.items():
                    print(f"[mcp-bench] round {number + 1}: tools/call via {target}", flush=True)
                    try:
                        rounds[target].append(
                            measure_calls(
                                url, args.seconds, headers, call, proc.process.pid if proc else None
                            )
                        )
                    except Exception as exc:
                        print(f"    {target} failed: {exc}", flush=True)
                        data["notes"].append(f"{target}, round {number + 1}: {str(exc)[:300]}")
            if args.profile:
                for target, (proc, url, headers, call) in running.items():
                    if proc is not None and target.startswith("crossway"):
                        print(f"[mcp-bench] py-spy: {target}", flush=True)
                        data.setdefault("profiles", {})[target] = profile_calls(
                            proc.process.pid, url, args.seconds, headers, call
                        )
        finally:
            for proc, *_ in running.values():
                if proc is not None:
                    proc.stop()
        for target, results in rounds.items():
            if results:
                data["tools_call"][target] = median_rounds(results)
                data.setdefault("rounds", {})[target] = results
            else:
                data["tools_call"].setdefault(target, {"error": "no round completed"})
        if not args.skip_list:
            print("[mcp-bench] tools/list, 20 x 50", flush=True)
            data["tools_list"] = measure_list(args.seconds)
        if not args.skip_memory:
            print("[mcp-bench] 1,000 sessions", flush=True)
            data["memory"] = measure_memory(upstream_url)
    finally:
        upstream.stop()
    path = write_report(data)
    print(f"[mcp-bench] wrote {path}")
    print(path.read_text())


if __name__ == "__main__":
    main()
