"""The inference-routing benchmark: `python -m bench.inference.run [--quick]`.

For each workload (prefix-heavy, low sharing, LoRA-skewed) and each policy (round-robin,
least-queue, prefix-only, Crossway's default) it starts fresh simulators
(`crossway.samples.model_server`, so every policy starts with cold caches) and one
`crossway serve` whose inference pool spreads over them, then sweeps Poisson request rates
upward through the gateway and records TTFT, throughput, cache hits, adapter loads and which
endpoint served each request. It writes bench/results/inference-YYYY-MM-DD-HHMM.{md,json} and
prints the markdown. See bench/inference/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from bench import procs
from bench.inference import decision, report, servers, stats
from bench.inference.load import poisson_arrivals, run_open_loop
from bench.inference.workloads import Workload

REPO: Final = servers.REPO
RESULTS: Final = REPO / "bench" / "results"
DIRECT: Final = "direct-rr"
"""A policy that skips the gateway: the client itself takes the simulators in turn."""
IDLE_TIMEOUT_S: Final = 60.0
WORKLOADS: Final = ("prefix", "hot", "distinct", "lora")


@dataclass(frozen=True)
class Setup:
    """One workload with its simulator flags and its rate sweep."""

    workload: Workload
    rates: tuple[float, ...]
    """Request rates swept (per second, the whole pool)."""
    sim_args: tuple[str, ...] = ()
    """Flags of each simulator (beside --port and the shared ones)."""


@dataclass
class Settings:
    """One run's knobs (the command line's)."""

    sims: int = 4
    time_factor: float = 1.0
    duration_s: float = 12.0
    drain_s: float = 8.0
    ttft_bound_s: float = 2.0
    """p90 TTFT (wall seconds) past which a step is past the knee."""
    warmup_s: float = 30.0
    """Seconds of unmeasured arrivals at the first rate before the sweep (the same for every
    policy), so the sweep measures warm servers rather than each policy's first cache misses."""
    policies: list[str] = field(default_factory=lambda: list(servers.POLICIES))
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    rates: list[float] | None = None
    """Override every workload's sweep."""
    seed: int = 1
    quick: bool = False


COMMON_SIM_ARGS: Final = (
    "--model",
    "sim-model",
    "--max-num-seqs",
    "8",
    "--block-size",
    "16",
    "--stream-interval",
    "4",
)
"""Every simulator: 8 sequences at once, 16-token blocks, and 4 tokens per streamed write (the
first token goes at once, so TTFT is unchanged; it keeps the chunks' CPU cost down)."""


def setups(settings: Settings) -> dict[str, Setup]:
    """The workloads and their simulator setups (sized for 4 simulators on 2 cores)."""
    prefix = Workload(
        name="prefix",
        title="prefix-heavy (150 groups sharing a long system prompt)",
        system_tokens=1500,
        question_tokens=40,
        output_tokens=32,
        groups=150,
        seed=settings.seed,
    )
    hot = Workload(
        name="hot",
        title="prefix-heavy, skewed (8 groups, Zipf s=1.5: one takes ~half the traffic)",
        system_tokens=1500,
        question_tokens=40,
        output_tokens=32,
        groups=8,
        group_zipf_s=1.5,
        seed=settings.seed,
    )
    distinct = Workload(
        name="distinct",
        title="low sharing (every prompt distinct)",
        question_tokens=600,
        output_tokens=32,
        seed=settings.seed,
    )
    lora = Workload(
        name="lora",
        title="LoRA-skewed (30 adapters, Zipf s=1.1, 4 slots per server)",
        question_tokens=100,
        output_tokens=32,
        adapters=30,
        seed=settings.seed,
    )
    out = {
        "prefix": Setup(
            prefix,
            rates=(4, 8, 12, 16, 24, 32, 40, 48),
            # 150 groups x 1,500 tokens = 225k tokens of prefixes; one server caches 80k
            sim_args=("--kv-blocks", "5000"),
        ),
        "hot": Setup(hot, rates=(4, 8, 12, 16, 24, 32), sim_args=("--kv-blocks", "5000")),
        "distinct": Setup(distinct, rates=(4, 8, 12, 14, 16, 20), sim_args=("--kv-blocks", "5000")),
        "lora": Setup(
            lora,
            rates=(4, 8, 12, 16, 20, 24),
            sim_args=(
                "--lora",
                ",".join(lora.adapter_names()),
                "--max-loras",
                "4",
                "--lora-load-ms",
                "200",
                "--kv-blocks",
                "5000",
            ),
        ),
    }
    if settings.quick:
        for name, setup in out.items():
            w = setup.workload
            small = replace(w, groups=min(w.groups, 20)) if w.groups else w
            out[name] = Setup(small, rates=(4, 10), sim_args=setup.sim_args)
    if settings.rates:
        out = {k: Setup(v.workload, tuple(settings.rates), v.sim_args) for k, v in out.items()}
    return out


def sim_args(setup: Setup, settings: Settings) -> list[str]:
    return [*COMMON_SIM_ARGS, "--time-factor", str(settings.time_factor), *setup.sim_args]


def _say(text: str) -> None:
    print(f"[inference] {text}", flush=True)


def run_policy(setup: Setup, policy: str, settings: Settings, work: Path) -> list[stats.StepRow]:
    """One policy's sweep on fresh simulators (and a fresh gateway)."""
    sims = servers.start_sims(settings.sims, sim_args(setup, settings), work)
    names = {sim.endpoint: sim.name for sim in sims}
    gateway: servers.Process | None = None
    rows: list[stats.StepRow] = []
    try:
        if policy == DIRECT:
            urls: str | list[str] = [f"{sim.base_url}/chat/completions" for sim in sims]
        else:
            gateway = servers.start_gateway(sims, policy, work)
            urls = f"http://127.0.0.1:{gateway.port}/v1/chat/completions"
        if settings.warmup_s > 0:
            _warm_up(setup, settings, urls)
            if not servers.wait_idle(sims, IDLE_TIMEOUT_S):
                _say("simulators still busy after the warm-up; going on")
        for step, rate in enumerate(setup.rates):
            rng = random.Random(f"{settings.seed}:{setup.workload.name}:{step}")
            arrivals = poisson_arrivals(rate, settings.duration_s, rng)
            batch = setup.workload.batch(len(arrivals), step)
            before = [servers.scrape(s) for s in sims]
            cpu_before = (gateway.cpu_s() if gateway else 0.0, sum(s.cpu_s() for s in sims))
            t0 = time.monotonic()
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                result = runner.run(
                    run_open_loop(
                        urls,
                        batch.bodies,
                        arrivals,
                        rate=rate,
                        duration_s=settings.duration_s,
                        drain_s=settings.drain_s,
                        tags=batch.tags,
                    )
                )
            wall = time.monotonic() - t0
            after = [servers.scrape(s) for s in sims]
            row = stats.step_row(
                setup.workload.name,
                policy,
                result,
                drain_deadline=settings.duration_s + settings.drain_s,
                endpoint_names=names,
            )
            row.adapter_loads = sum(
                a[servers.ADAPTER_LOADS] - b[servers.ADAPTER_LOADS]
                for a, b in zip(after, before, strict=True)
            )
            if gateway is not None:
                row.gateway_cpu = (gateway.cpu_s() - cpu_before[0]) / wall
            row.sims_cpu = (sum(s.cpu_s() for s in sims) - cpu_before[1]) / wall
            rows.append(row)
            _say(report.one_line(row))
            if gateway is not None and not gateway.alive():
                raise RuntimeError(f"crossway exited:\n{gateway.log_tail()}")
            if not servers.wait_idle(sims, IDLE_TIMEOUT_S):
                _say("simulators still busy after the drain; going on")
    finally:
        if gateway is not None:
            gateway.stop()
        for sim in sims:
            sim.stop()
    return rows


WARMUP_STEP: Final = 10_000
"""The warm-up's step number (its prompts differ from every measured step's)."""


def _warm_up(setup: Setup, settings: Settings, urls: str | list[str]) -> None:
    """Unmeasured arrivals at the sweep's first rate for `warmup_s` seconds."""
    rate = setup.rates[0]
    rng = random.Random(f"{settings.seed}:{setup.workload.name}:warmup")
    arrivals = poisson_arrivals(rate, settings.warmup_s, rng)
    batch = setup.workload.batch(len(arrivals), WARMUP_STEP)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(
            run_open_loop(
                urls,
                batch.bodies,
                arrivals,
                rate=rate,
                duration_s=settings.warmup_s,
                drain_s=settings.drain_s,
                tags=batch.tags,
            )
        )
    _say(f"warm-up: {len(arrivals)} requests at {rate:g}/s (not measured)")


def run(settings: Settings, work: Path) -> dict[str, Any]:
    """Every selected workload x policy; the results document."""
    chosen = setups(settings)
    results: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": _commit(),
        "load_before": os.getloadavg(),
        "settings": {
            "sims": settings.sims,
            "time_factor": settings.time_factor,
            "duration_s": settings.duration_s,
            "drain_s": settings.drain_s,
            "warmup_s": settings.warmup_s,
            "ttft_bound_s": settings.ttft_bound_s,
            "warmup_share": stats.WARMUP_SHARE,
            "quick": settings.quick,
            "seed": settings.seed,
        },
        "workloads": {},
    }
    for name in settings.workloads:
        setup = chosen[name]
        w = setup.workload
        entry: dict[str, Any] = {
            "title": w.title,
            "sim_args": sim_args(setup, settings),
            "workload": {
                "system_tokens": w.system_tokens,
                "question_tokens": w.question_tokens,
                "output_tokens": w.output_tokens,
                "groups": w.groups,
                "adapters": w.adapters,
                "zipf_s": w.zipf_s,
            },
            "rates": list(setup.rates),
            "policies": {},
        }
        results["workloads"][name] = entry
        for policy in settings.policies:
            _say(f"{name} / {policy}: {settings.sims} simulators, rates {list(setup.rates)}")
            rows = run_policy(setup, policy, settings, work)
            entry["policies"][policy] = [r.as_dict() for r in rows]
    results["decision"] = decision.measure()
    results["load_after"] = os.getloadavg()
    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    return results


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (less client CPU per chunk)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return "?"


def parse(argv: Sequence[str] | None = None) -> tuple[Settings, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a run of under two minutes")
    parser.add_argument("--sims", type=int, help="simulators in the pool (4)")
    parser.add_argument("--time-factor", type=float, help="the simulators' time factor (0.25)")
    parser.add_argument("--duration", type=float, help="seconds of arrivals per rate step")
    parser.add_argument("--drain", type=float, help="seconds open requests may take after")
    parser.add_argument(
        "--warmup", type=float, help="unmeasured seconds at the first rate before the sweep (30)"
    )
    parser.add_argument("--ttft-bound", type=float, help="p90 TTFT (s) that ends the knee")
    parser.add_argument(
        "--policies", help=f"comma-separated, of {list(servers.POLICIES)} and {DIRECT}"
    )
    parser.add_argument("--workloads", help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--rates", help="comma-separated request rates (every workload)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="results directory (bench/results)")
    args = parser.parse_args(argv)
    settings = Settings(seed=args.seed, quick=args.quick)
    if args.quick:
        settings.sims, settings.duration_s, settings.drain_s = 2, 2.0, 3.0
        settings.warmup_s = 0.0
    if args.sims:
        settings.sims = args.sims
    if args.time_factor:
        settings.time_factor = args.time_factor
    if args.duration:
        settings.duration_s = args.duration
    if args.drain is not None:
        settings.drain_s = args.drain
    if args.warmup is not None:
        settings.warmup_s = args.warmup
    if args.ttft_bound:
        settings.ttft_bound_s = args.ttft_bound
    if args.policies:
        settings.policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        unknown = set(settings.policies) - {*servers.POLICIES, DIRECT}
        if unknown:
            parser.error(f"unknown policies: {sorted(unknown)}")
    if args.workloads:
        settings.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
        unknown = set(settings.workloads) - set(WORKLOADS)
        if unknown:
            parser.error(f"unknown workloads: {sorted(unknown)}")
    if args.rates:
        settings.rates = [float(r) for r in args.rates.split(",")]
    return settings, args.out


def main(argv: Sequence[str] | None = None) -> int:
    settings, out_dir = parse(argv)
    out_dir = out_dir or RESULTS
    with (
        procs.bench_lock("inference"),
        tempfile.TemporaryDirectory(prefix="crossway-inference-") as tmp,
    ):
        results = run(settings, Path(tmp))
    text = report.render(results)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    suffix = "-quick" if settings.quick else ""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"inference-{stamp}{suffix}.md"
    md.write_text(text)
    md.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(text)
    _say(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
