"""The observability bench (issue 10): what tracing, metrics and access logs cost.

    .venv/bin/python -m bench.observability [--seconds 12] [--rounds 3] [--modes json stream]
        [--only off full sampled-1pct trace-only log-only] [--protocol http/protobuf|grpc] [--profile]

In one run, the same OpenAI Chat request (bench/fixtures.py, about 1 KB; answered by nginx with a
fixed completion, streamed or not) through:

- `off`: a Crossway route with no telemetry (bench/configs/observability-off.yaml, no OTEL_*
  variable); Prometheus metrics are always on, so they are on here too;
- `full`: the same route with tracing on, every trace sampled, exported over OTLP to a local
  receiver (OTEL_EXPORTER_OTLP_ENDPOINT only), and the access log on, to a file
  (bench/configs/observability-full.yaml);
- `sampled-1pct`: `full` with OTEL_TRACES_SAMPLER=parentbased_traceidratio and
  OTEL_TRACES_SAMPLER_ARG=0.01;
- `trace-only` and `log-only` (no goal; they tell `full`'s two costs apart): `full`'s tracing
  without the access log, and the access log without tracing.

The receiver is tests/telemetry/otlp_receiver.py's (OTLP/HTTP protobuf and gRPC on
`opentelemetry-proto`) in its own process on the load core, counting instead of keeping what it
decodes: spans per service name (one per row and mode), per span name, and distinct trace ids.
Each gateway runs with one worker pinned to core 0; nginx, wrk and the receiver share core 1.
wrk loads each target at 32 connections (requests/s, gateway requests per CPU-second, p50/p99)
and at 1 connection (latency), in interleaved rounds. Every answer is checked before and after
the load (200 and the completion), wrk's non-2xx count is reported, and after each gateway
stopped (flushing its exporter and its access log), the spans the receiver got and the lines
the access log holds are counted against the answers: a row whose spans or lines fall short
of them was not measured honestly (dropped spans cost nothing) and says so.
Writes bench/results/observability-YYYY-MM-DD-HHMM.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench import gateway_rows as rows
from bench.gateway_rows import LOAD_CPU, REPO, Mode, Row
from bench.procs import CLK_TCK, load_average

WORK: Final = REPO / "bench" / ".work" / "observability"
CLIENT_KEY: Final = "sk-bench-client"
SAMPLE_RATIO: Final = 0.01
GOALS: Final = {"full": 0.90, "sampled-1pct": 0.97}
"""Throughput of each row over `off` that issue 10 asks for (<= 10% and <= 3% cost)."""
IN_FLIGHT_SLACK: Final = 32
"""Requests a gateway may have served after wrk stopped counting, per load (its connections)."""
SIGMAS: Final = 5.0
"""How far (in binomial standard deviations) the sampled row's trace count may be from 1%."""
SETTLE_S: Final = 30.0
"""The most time to wait for the receiver's counts to stop growing after a gateway stopped."""
QUIET_S: Final = 1.5
"""Counts unchanged this long: the exporter has sent everything."""
OTEL_ENV_PREFIX: Final = "OTEL_"

TARGETS: Final = ("off", "full", "sampled-1pct", "trace-only", "log-only")
"""`trace-only` (tracing as in `full`, no access log) and `log-only` (the access log, no
tracing) have no goal: they tell the two costs of `full` apart."""
TRACED: Final = frozenset({"full", "sampled-1pct", "trace-only"})
LOGGED: Final = frozenset({"full", "sampled-1pct", "log-only"})
PROTOCOLS: Final = ("http/protobuf", "grpc")


# --- the OTLP receiver (its own process) -----------------------------------------------------------


def receiver_main() -> int:
    """Run tests/telemetry/otlp_receiver.py's receiver, counting what it decodes per service
    name. Prints `READY <http port> <grpc port>`, then answers every `stats` line on stdin with
    one JSON line; exits at `quit` or end of input."""
    import threading

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from tests.telemetry.otlp_receiver import otlp_receiver

    lock = threading.Lock()
    counts: dict[str, dict[str, Any]] = {}
    traces: dict[str, set[bytes]] = {}

    def collect(request: ExportTraceServiceRequest, transport: str) -> None:
        with lock:
            for rs in request.resource_spans:
                service = next(
                    (
                        kv.value.string_value
                        for kv in rs.resource.attributes
                        if kv.key == "service.name"
                    ),
                    "",
                )
                entry = counts.setdefault(service, {"spans": 0, "exports": 0, "names": {}})
                seen = traces.setdefault(service, set())
                entry["exports"] += 1
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        entry["spans"] += 1
                        names = entry["names"]
                        names[span.name] = names.get(span.name, 0) + 1
                        seen.add(span.trace_id)

    with otlp_receiver() as rx:
        rx.collect = collect  # type: ignore[method-assign]
        print(f"READY {rx.http_port} {rx.grpc_port}", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            if command == "stats":
                with lock:
                    out = {
                        s: {**c, "names": dict(c["names"]), "traces": len(traces[s])}
                        for s, c in counts.items()
                    }
                print(json.dumps(out), flush=True)
    return 0


@dataclass
class Receiver:
    """The receiver process of this run, pinned to the load core."""

    process: subprocess.Popen[str]
    http_port: int
    grpc_port: int

    def endpoint(self, protocol: str) -> str:
        port = self.grpc_port if protocol == "grpc" else self.http_port
        return f"http://127.0.0.1:{port}"

    def stats(self) -> dict[str, dict[str, Any]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the OTLP receiver exited ({self.process.poll()})")
        data: dict[str, dict[str, Any]] = json.loads(line)
        return data

    def settled(self, service: str) -> dict[str, Any]:
        """`service`'s counts once they stopped growing (bounded wait)."""
        deadline = time.monotonic() + SETTLE_S
        last = self.stats().get(service, {})
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.stats().get(service, {})
            if now.get("spans") != last.get("spans"):
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= QUIET_S:
                break
        return last or {"spans": 0, "exports": 0, "names": {}, "traces": 0}

    def stop(self) -> None:
        try:
            if self.process.stdin is not None:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
            self.process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def start_receiver() -> Receiver:
    log = (WORK / "logs" / "receiver.log").open("wb")
    process = subprocess.Popen(
        ["taskset", "-c", str(LOAD_CPU), sys.executable, "-m", "bench.observability", "--receiver"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(OTEL_ENV_PREFIX)},
    )
    assert process.stdout is not None
    line = process.stdout.readline().split()
    if len(line) != 3 or line[0] != "READY":
        process.kill()
        raise RuntimeError(f"the OTLP receiver did not start: {line}")
    return Receiver(process, int(line[1]), int(line[2]))


# --- targets -------------------------------------------------------------------------------------


@dataclass
class Live(Row):
    """A row started for one mode, with its figures so far."""

    key: str = CLIENT_KEY
    service: str = ""
    access_log: Path | None = None
    threads32: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    """The worker's user s, system s, voluntary and involuntary switches over the c32 loads."""
    threads32_requests: int = 0


def new_live(name: str, mode: Mode) -> Live:
    return Live(name, mode, rows.request_file(WORK, mode))


def start_crossway(
    name: str, mode: Mode, nginx_port: int, receiver: Receiver | None, protocol: str
) -> Live:
    live = new_live(name, mode)
    config = "full" if name in LOGGED else "off"
    env: dict[str, str] = {}
    shown = ""
    if config == "full":
        live.access_log = Path(tempfile.mkdtemp(prefix=f"log-{name}-{mode}-", dir=WORK)) / "a.log"
        env["ACCESS_LOG_PATH"] = str(live.access_log)
    if name in TRACED:
        assert receiver is not None
        live.service = f"crossway-bench-{name}-{mode}"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint(protocol)
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
        env["OTEL_SERVICE_NAME"] = live.service
        shown = f"OTEL_EXPORTER_OTLP_ENDPOINT=<receiver> OTEL_EXPORTER_OTLP_PROTOCOL={protocol} "
        if name == "sampled-1pct":
            env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            env["OTEL_TRACES_SAMPLER_ARG"] = str(SAMPLE_RATIO)
            shown += (
                "OTEL_TRACES_SAMPLER=parentbased_traceidratio "
                f"OTEL_TRACES_SAMPLER_ARG={SAMPLE_RATIO} "
            )
    if config == "full":
        shown += "ACCESS_LOG_PATH=<tmp file> "
    data_dir = Path(tempfile.mkdtemp(prefix=f"data-{name}-{mode}-", dir=WORK))
    rows.start_gateway(live, WORK, f"observability-{config}", nginx_port, data_dir, env, shown)
    rows.ready(live)
    return live


def worker_threads(pid: int) -> tuple[float, float, int, int]:
    """User and system CPU seconds and voluntary / involuntary context switches of every
    thread of `pid` (the event loop's, the exporter's, the access log writer's)."""
    user = system = voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    return user / CLK_TCK, system / CLK_TCK, voluntary, involuntary


def measured(live: Live, connections: int, seconds: float) -> None:
    """One measured load; at 32 connections, also every worker thread's CPU and switches."""
    worker = live.server.worker_pid() if live.server is not None else 0
    threads_before = worker_threads(worker) if worker else None
    result = rows.measured(live, connections, seconds)
    if live.server is not None and connections > 1 and threads_before is not None:
        after = worker_threads(worker)
        for i, (a, b) in enumerate(zip(after, threads_before, strict=True)):
            live.threads32[i] += a - b
        live.threads32_requests += result.requests


def after_loads(live: Live) -> None:
    """The worker's CPU and switches per request over the c32 loads."""
    n = live.threads32_requests
    if n and "c32" in live.result:
        user, system, voluntary, involuntary = live.threads32
        live.result["worker_per_request"] = {
            "user_us": round(1e6 * user / n, 1),
            "system_us": round(1e6 * system / n, 1),
            "voluntary_switches": round(voluntary / n, 3),
            "involuntary_switches": round(involuntary / n, 3),
        }


# --- the counts: spans and access log lines against the answers ----------------------------------


def count_lines(path: Path) -> dict[str, int]:
    """Lines of the access log and of its rotated files, and those with status 200."""
    total = ok = 0
    for file in sorted(path.parent.glob(path.name + "*")):
        with file.open("rb") as lines:
            for line in lines:
                total += 1
                if b'"status":200' in line:
                    ok += 1
    return {"lines": total, "status_200": ok}


def verify(live: Live, receiver: Receiver | None) -> None:
    """After the gateway stopped: spans received and access log lines, against the answers."""
    slack = IN_FLIGHT_SLACK * live.loads
    counted: dict[str, Any] = {"answered": live.answered, "slack": slack}
    problems: list[str] = []
    if live.access_log is not None:
        lines = count_lines(live.access_log)
        counted["access_log"] = lines
        if not live.answered <= lines["status_200"] <= live.answered + slack:
            problems.append(
                f"access log: {lines['status_200']} lines with status 200 for {live.answered} answers"
            )
    if receiver is not None and live.service:
        got = receiver.settled(live.service)
        counted["spans"] = got
        traces = got.get("traces", 0)
        per_trace = got["spans"] / traces if traces else 0.0
        counted["spans_per_trace"] = round(per_trace, 3)
        if live.name != "sampled-1pct":
            if not live.answered <= traces <= live.answered + slack:
                problems.append(f"{traces} traces received for {live.answered} answers")
            if per_trace != int(per_trace):
                problems.append(f"spans per trace {per_trace:.3f} is not whole: spans were lost")
        else:
            expected = SAMPLE_RATIO * live.answered
            sd = math.sqrt(live.answered * SAMPLE_RATIO * (1 - SAMPLE_RATIO))
            counted["traces_expected"] = round(expected, 1)
            if abs(traces - expected) > SIGMAS * sd + SAMPLE_RATIO * slack:
                problems.append(
                    f"{traces} sampled traces, {expected:.0f} expected (+-{SIGMAS * sd:.0f})"
                )
            if traces and per_trace != int(per_trace):
                problems.append(f"spans per trace {per_trace:.3f} is not whole: spans were lost")
    counted["honest"] = not problems
    if problems:
        counted["problems"] = problems
    live.result["counted"] = counted


# --- the profile ---------------------------------------------------------------------------------


EXPORT_THREAD: Final = (
    "BatchProcessor.worker",
    "BatchProcessor._export",
    "LoggedOnceExporter.export",
    "OTLPSpanExporter.export",
    "trace_encoder/",
)
"""A frame of the SDK's export thread (py-spy shortens namespace-package paths:
`_shared_internal/__init__.py` is `opentelemetry/sdk/_shared_internal/__init__.py`)."""
WAITING: Final = ("threading.py:Event.wait", "threading.py:Condition.wait")
EXPORT_PARTS: Final = (
    ("export thread: encoding spans (protobuf)", ("trace_encoder/", "common/_internal/")),
    (
        "export thread: sending (HTTP/gRPC client)",
        (
            "requests/",
            "urllib3/",
            "http/client.py",
            "socket.py",
            "common/http.py",
            "transport/",
            "grpc",
        ),
    ),
    ("export thread: waiting for spans", WAITING),
)
WRITER_PARTS: Final = (
    (
        "access log thread: formatting (time, redaction, JSON)",
        ("crossway/telemetry/access_log.py:LineWriter._line",),
    ),
    (
        "access log thread: writing (file, stat)",
        ("crossway/telemetry/access_log.py:LineWriter._write",),
    ),
    ("access log thread: waiting for lines", WAITING),
)
REQUEST_PARTS: Final = (
    (
        "request path: SDK attribute setting",
        ("attributes/__init__.py", "trace/__init__.py:Span.set_attribute"),
    ),
    (
        "request path: SDK span creation (incl. sampler, ids)",
        (
            "trace/__init__.py:Tracer.start_span",
            "trace/__init__.py:Span.__init__",
            "trace/__init__.py:Span.start",
            "sampling.py",
            "id_generator.py",
        ),
    ),
    (
        "request path: SDK span end + queueing for export",
        (
            "trace/__init__.py:Span.end",
            "trace/__init__.py:_Span.end",
            "_shared_internal/",
            "export/__init__.py:BatchSpanProcessor.on_end",
            "trace/__init__.py:SynchronousMultiSpanProcessor.on_end",
        ),
    ),
    (
        "request path: SDK context and propagation",
        ("context/", "propagat", "tracecontext", "baggage/"),
    ),
    ("request path: crossway attempt span attributes (llm/spans.py)", ("crossway/llm/spans.py",)),
    (
        "request path: crossway tracing glue (telemetry/tracing.py)",
        ("crossway/telemetry/tracing.py", "crossway/telemetry/_otel.py"),
    ),
    (
        "request path: access log record (observer end, put)",
        (
            "crossway/telemetry/access_log.py",
            "crossway/telemetry/request_log.py",
            "crossway/telemetry/redaction.py",
        ),
    ),
    (
        "request path: metrics (prometheus_client)",
        ("prometheus_client/", "crossway/telemetry/metrics"),
    ),
)
"""On the request path, the frame nearest the leaf that matches one of these names the part."""


def _part(frames: list[str]) -> str | None:
    """Which part of telemetry one sample is in (None: not telemetry)."""

    def nearest(parts: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
        for frame in reversed(frames):
            for label, marks in parts:
                if any(mark in frame for mark in marks):
                    return label
        return None

    if any(mark in f for f in frames for mark in EXPORT_THREAD):
        return nearest(EXPORT_PARTS) or "export thread: other (SDK batching)"
    writer = "crossway/telemetry/access_log.py:LineWriter."
    if any(f.startswith(writer) and not f.endswith(".put") for f in frames):
        return nearest(WRITER_PARTS) or "access log thread: other"
    return nearest(REQUEST_PARTS)


def breakdown(collapsed: Path, cpu_us_per_request: float | None) -> tuple[str, Any]:
    """Where telemetry's time goes, in microseconds of the worker's CPU per request: py-spy's
    samples of every thread of the worker, each given to one part (`_part`)."""
    parts: dict[str, int] = {}
    total = 0
    for frames, count in rows.collapsed_stacks(collapsed):
        total += count
        name = _part(frames)
        if name is not None:
            parts[name] = parts.get(name, 0) + count

    def row(label: str, n: int) -> dict[str, Any]:
        return {
            "part": label,
            "percent": round(100 * n / total, 1) if total else 0.0,
            "us_per_request": round(n / total * cpu_us_per_request, 1)
            if cpu_us_per_request and total
            else None,
        }

    busy = sum(n for k, n in parts.items() if "waiting" not in k)
    return "telemetry", {
        "parts": [row(k, v) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])],
        "telemetry_percent": round(100 * busy / total, 1) if total else 0.0,
    }


# --- the run -------------------------------------------------------------------------------------


def run_mode(
    mode: Mode,
    names: list[str],
    nginx_port: int,
    receiver: Receiver | None,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Start every target for `mode`, load them in turns, round after round."""
    lives = rows.run_rows(
        "observability",
        mode,
        names,
        lambda name: start_crossway(name, mode, nginx_port, receiver, args.protocol),
        lambda name: new_live(name, mode),
        args,
        work=WORK,
        measure=measured,
        check=rows.post_checked,
        after_loads=after_loads,
        breakdown=breakdown,
    )
    for live in lives:
        if "failed" not in live.result:
            try:
                verify(live, receiver)
            except (RuntimeError, OSError, ValueError) as exc:
                live.result["counted"] = {"error": f"{type(exc).__name__}: {exc}", "honest": False}
        line = rows.one_line(live.result, details)
        print(f"[observability] {mode} {live.name}: {line}", flush=True)
    return [live.result for live in lives]


def details(r: dict[str, Any]) -> str:
    out = ""
    counted = r.get("counted", {})
    if "spans" in counted:
        out += f", spans {counted['spans'].get('spans')} in {counted['spans'].get('traces')} traces"
    if "access_log" in counted:
        out += f", lines {counted['access_log']['lines']}"
    out += f", answered {counted.get('answered', '-')}"
    if counted.get("problems"):
        out += f", NOT HONEST: {counted['problems']}"
    return out


# --- report --------------------------------------------------------------------------------------


def _counted(r: dict[str, Any]) -> list[str]:
    c = r.get("counted", {})
    if "error" in c:
        return [c["error"], "-"]
    spans = "-"
    if "spans" in c:
        s = c["spans"]
        spans = (
            f"{s.get('spans', 0)} in {s.get('traces', 0)} traces ({c['spans_per_trace']:g}/trace)"
        )
        if "traces_expected" in c:
            spans += f", ~{c['traces_expected']:.0f} expected"
    lines = "-"
    if "access_log" in c:
        lines = f"{c['access_log']['status_200']}"
    answered = c.get("answered", "-")
    verdict = "" if c.get("honest", True) else " **NOT HONEST**"
    return [f"{spans}{verdict}", f"{lines} / {answered}"]


def render(data: dict[str, Any]) -> str:
    s = data["settings"]
    lines = [
        f"# Observability bench (tracing, metrics, access log), {data['started']}",
        "",
        rows.machine_paragraph(data, facts="", sharing="the OTLP receiver"),
        "",
        rows.REQUEST_SENTENCE + "`off` = no tracing, no access log (metrics"
        " are always on); `full` = tracing with every trace sampled, exported over OTLP"
        f" ({s['protocol']}) to a local receiver (tests/telemetry/otlp_receiver.py, in its own"
        " process), plus the access log to a file; `sampled-1pct` = the same with"
        " `OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.01`;"
        " `trace-only` / `log-only` (no goal) = `full`'s tracing alone / its access log alone.",
        "",
        *rows.results_table(
            data, "off", ["spans received", "access lines (200) / answered"], _counted
        ),
    ]
    rat = data["ratios"]
    lines += [
        "",
        rows.CPU_PERCENT_NOTE + " Spans and lines"
        " are counted after the gateway stopped; a few more than the answers are requests wrk"
        " sent but stopped waiting for at the end of a load.",
        "",
        "## The worker's CPU per request at 32 connections (every thread; /proc)",
        "",
        "| mode | target | user us | system us | voluntary switches | involuntary switches |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["runs"]:
        w = r.get("worker_per_request")
        if w:
            lines.append(
                f"| {r['mode']} | {r['target']} | {w['user_us']} | {w['system_us']} |"
                f" {w['voluntary_switches']} | {w['involuntary_switches']} |"
            )
    lines += ["", *rows.goal_lines(rat, "off", _p50_added)]
    for prof, heading in rows.profiles(data["runs"]):
        lines += heading
        if not prof:
            continue
        tele = prof["telemetry"]
        lines.append(
            f"{prof['samples']} samples at {prof['rate_hz']} Hz, every thread; worker CPU"
            f" {prof['cpu_us_per_request']} us per request (measured without the profiler);"
            f" telemetry {tele['telemetry_percent']}% of the samples. Us per request:"
        )
        lines.append("")
        for row in tele["parts"]:
            lines.append(f"- {row['part']}: {row['us_per_request']} us ({row['percent']}%)")
    lines.append("")
    return "\n".join(lines)


def _p50_added(entry: dict[str, Any]) -> str:
    return f"; p50 at 1 connection +{entry.get('p50_c1_added_us', '-')} us"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rows.add_load_flags(parser, TARGETS)
    parser.add_argument("--protocol", default="http/protobuf", choices=PROTOCOLS)
    rows.add_output_flags(parser)
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = max(1, args.rounds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.receiver:
        return receiver_main()
    for name in [k for k in os.environ if k.startswith(OTEL_ENV_PREFIX)]:
        del os.environ[name]  # the off row must see none; the others get only theirs
    WORK.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now()
    data: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "settings": rows.run_settings(
            args, {"protocol": args.protocol, "sample_ratio": SAMPLE_RATIO}, {}
        ),
        "machine": rows.machine_facts(),
        "load_average_start": load_average(),
        "runs": [],
    }
    nginx, nginx_port = rows.start_upstream(WORK)
    receiver: Receiver | None = None
    try:
        if any(n in TRACED for n in args.only):
            receiver = start_receiver()
        for mode in args.modes:
            data["runs"] += run_mode(mode, list(args.only), nginx_port, receiver, args)
    finally:
        if receiver is not None:
            receiver.stop()
        nginx.stop()
    rat = rows.ratios(data["runs"], "off", GOALS, latency=True)
    rows.write_results("observability", args.out, started, data, rat, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
