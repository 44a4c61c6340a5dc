"""Render a benchmark run (the JSON the harness writes) as the markdown table in bench/results/."""

from __future__ import annotations

from typing import Any, Final

GOAL_REFERENCE_RATIO: Final = 1.0
"""Issue 11: passthrough JSON and streaming at least the reference, per CPU-second (issue 2: 0.75)."""
GOAL_LITELLM_RATIO: Final = 30.0
GOAL_ADDED_P50_MS: Final = 0.5
GOAL_ADDED_P50_OVER_REFERENCE_MS: Final = 0.05
"""Issue 11: Crossway's added p50 at one connection over direct at most the reference's own + this."""
GOAL_IDLE_RSS_MB: Final = 80.0
GOAL_TRANSLATION_RATIO: Final = 0.85
"""Issue 11: translation at least this share of Crossway's own passthrough, per CPU-second (was 0.80)."""
REFERENCES: Final = ("reference", "reference-reqwest")
"""The ceilings Crossway is measured against: the aiohttp reference and its pyreqwest variant."""
GOAL_ADDED_TTFT_MS: Final = 1.0
GOAL_POLICY_RATIO: Final = 0.90
"""Issue 7: JWT + a CEL rule cost at most 10% of throughput..."""
GOAL_POLICY_ADDED_P50_US: Final = 50.0
"""...and at most 50 µs of p50 at one connection."""

Run = dict[str, Any]
NONE: Final = "-"
"""Shown where a figure was not measured."""


def _ms(us: float | None) -> str:
    if us is None:
        return NONE
    ms = us / 1000
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return NONE
    return f"{value:,.{digits}f}"


def _get(run: Run | None, *keys: str) -> Any:
    value: Any = run
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def find(results: dict[str, Any], target: str, mode: str) -> Run | None:
    """The measured run of `target` in `mode`, or None if it was skipped or failed."""
    for run in results["runs"]:
        if run["target"] == target and run["mode"] == mode and "c32" in run and "failed" not in run:
            return run
    return None


def one_line(run: Run) -> str:
    """A progress line for the console."""
    if "skipped" in run:
        return run["skipped"]
    if "failed" in run:
        return "FAILED " + run["failed"].splitlines()[0]
    text = f"{_get(run, 'c32', 'rps'):,.0f} req/s @32, p50 @1 {_ms(_get(run, 'c1', 'latency_us', 'p50'))} ms"
    if "first_byte" in run:
        text += f", TTFT p50 {_ms(run['first_byte']['ttft_p50_us'])} ms"
    if "rss_idle_mb" in run:
        text += f", RSS {run['rss_idle_mb']}/{run['rss_peak_mb']} MB"
    return text


def _rss_idle(run: Run) -> str:
    total, parts = run.get("rss_idle_mb"), run.get("rss_idle_breakdown_mb")
    if total is None:
        return NONE
    if parts and parts.get("others"):
        return f"{total:.1f} (worker {parts['worker']:.1f})"
    return f"{total:.1f}"


def _row(run: Run) -> str:
    name = f"**{run['target']}**" if run["target"].startswith("crossway") else run["target"]
    if "skipped" in run:
        return f"| {name} | {run['skipped']} |" + " |" * 11
    if "failed" in run:
        first = run["failed"].splitlines()[0].replace("|", "/")
        return f"| {name} | FAILED: {first} |" + " |" * 11
    errors = (_get(run, "c32", "errors") or 0) + (_get(run, "c1", "errors") or 0)
    return (
        f"| {name} | {_num(_get(run, 'c32', 'rps'))} "
        f"| {_ms(_get(run, 'c32', 'latency_us', 'p50'))} | {_ms(_get(run, 'c32', 'latency_us', 'p99'))} "
        f"| {_ms(_get(run, 'c1', 'latency_us', 'p50'))} | {_ms(_get(run, 'c1', 'latency_us', 'p99'))} "
        f"| {_ms(_get(run, 'first_byte', 'ttfb_p50_us'))} | {_ms(_get(run, 'first_byte', 'ttft_p50_us'))} "
        f"| {_rss_idle(run)} | {_num(run.get('rss_peak_mb'), 1)} "
        f"| {_num(run.get('proxy_cpu_percent'))} | {_num(run.get('requests_per_cpu_second'))} | {errors} |"
    )


HEADER: Final = (
    "| target | req/s @32 | p50 @32 (ms) | p99 @32 (ms) | p50 @1 (ms) | p99 @1 (ms) "
    "| first byte p50 (ms) | first token p50 (ms) | RSS idle (MB) | RSS peak (MB) | proxy CPU % | req per CPU-s | errors |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _ratio(a: Run | None, b: Run | None) -> float | None:
    ra, rb = _get(a, "c32", "rps"), _get(b, "c32", "rps")
    return ra / rb if ra and rb else None


def _ratio_text(a: Run | None, b: Run | None, digits: int) -> str:
    """The throughput ratio, and the same ratio per CPU-second as a check against noise."""
    ratio = _ratio(a, b)
    if ratio is None:
        return NONE
    ca, cb = _get(a, "requests_per_cpu_second"), _get(b, "requests_per_cpu_second")
    if ca and cb:
        return f"{ratio:.{digits}f} (per CPU-s: {ca / cb:.{digits}f})"
    return f"{ratio:.{digits}f}"


def _per_cpu_ratio(a: Run | None, b: Run | None) -> float | None:
    """The ratio of requests per CPU-second of the proxy (issue 11's measure); req/s if missing."""
    ca, cb = _get(a, "requests_per_cpu_second"), _get(b, "requests_per_cpu_second")
    return ca / cb if ca and cb else _ratio(a, b)


def _per_cpu_text(a: Run | None, b: Run | None, digits: int) -> str:
    """The per-CPU-second ratio the verdict is on, and the req/s ratio beside it."""
    ratio, per_cpu = _ratio(a, b), _per_cpu_ratio(a, b)
    if ratio is None or per_cpu is None:
        return NONE
    if _get(a, "requests_per_cpu_second") and _get(b, "requests_per_cpu_second"):
        return f"{per_cpu:.{digits}f} per CPU-s (req/s: {ratio:.{digits}f})"
    return f"{ratio:.{digits}f} (req/s)"


def _added_p50_ms(run: Run | None, direct: Run | None) -> float | None:
    """p50 at one connection over direct's, in ms."""
    a, b = _get(run, "c1", "latency_us", "p50"), _get(direct, "c1", "latency_us", "p50")
    return (a - b) / 1000 if a is not None and b is not None else None


def _verdict(value: float | None, goal: float, *, at_least: bool) -> str:
    if value is None:
        return "not measured"
    met = value >= goal if at_least else value <= goal
    return "**met**" if met else "**not met**"


NOISY_CPU_PERCENT: Final = 90.0
"""A saturated proxy uses its whole core; below this share, other work took part of it."""


def _noise(*runs: Run | None) -> str:
    """A note when a loaded proxy did not get its whole core (other work on the machine)."""
    shares = [r["proxy_cpu_percent"] for r in runs if r and r.get("proxy_cpu_percent") is not None]
    low = [s for s in shares if s < NOISY_CPU_PERCENT]
    if not low:
        return ""
    return f" (noisy: a proxy got only {min(low):.0f}% of its core)"


def goals(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(goal, target value, measured, verdict) rows for the goals of issues 2, 3, 7 and 11.

    Issue 11's ratios are judged on requests per CPU-second of the proxy, against both
    references (aiohttp and pyreqwest), with the req/s ratio shown beside.
    """
    rows: list[tuple[str, str, str, str]] = []
    for mode in ("json", "stream"):
        cw, ll = find(results, "crossway", mode), find(results, "litellm", mode)
        for name in REFERENCES:
            ref = find(results, name, mode)
            rows.append(
                (
                    f"Crossway / {name} throughput ({mode})",
                    f"≥ {GOAL_REFERENCE_RATIO:.2f} per CPU-s",
                    _per_cpu_text(cw, ref, 2),
                    _verdict(_per_cpu_ratio(cw, ref), GOAL_REFERENCE_RATIO, at_least=True)
                    + _noise(cw, ref),
                )
            )
        ref, reqwest = find(results, "reference", mode), find(results, "reference-reqwest", mode)
        rows.append(
            (
                f"reference-reqwest / reference throughput ({mode}): how far the ceiling moved",
                "(no goal)",
                _per_cpu_text(reqwest, ref, 2),
                "-" + _noise(reqwest, ref) if reqwest and ref else "not measured",
            )
        )
        ratio = _ratio(cw, ll)
        rows.append(
            (
                f"Crossway / LiteLLM throughput ({mode})",
                f"≥ {GOAL_LITELLM_RATIO:.0f}",
                _ratio_text(cw, ll, 1),
                _verdict(ratio, GOAL_LITELLM_RATIO, at_least=True) + _noise(cw),
            )
        )
    for mode in ("json", "stream"):
        cw, direct = find(results, "crossway", mode), find(results, "direct", mode)
        added = _added_p50_ms(cw, direct)
        rows.append(
            (
                f"added p50 at 1 connection over direct ({mode})",
                f"≤ {GOAL_ADDED_P50_MS} ms",
                _num(added, 3) + " ms" if added is not None else NONE,
                _verdict(added, GOAL_ADDED_P50_MS, at_least=False),
            )
        )
        for name in REFERENCES:
            own = _added_p50_ms(find(results, name, mode), direct)
            limit = own + GOAL_ADDED_P50_OVER_REFERENCE_MS if own is not None else None
            rows.append(
                (
                    f"added p50 at 1 connection over direct, vs {name}'s own ({mode})",
                    f"≤ {name}'s + {GOAL_ADDED_P50_OVER_REFERENCE_MS} ms"
                    + (f" = {limit:.3f} ms" if limit is not None else ""),
                    _num(added, 3) + " ms" if added is not None else NONE,
                    _verdict(added, limit, at_least=False) if limit is not None else "not measured",
                )
            )
    for mode in ("json", "stream"):
        pol, base = find(results, "crossway-policy", mode), find(results, "crossway", mode)
        ratio = _ratio(pol, base)
        rows.append(
            (
                f"JWT + CEL policy / no policy throughput ({mode})",
                f"≥ {GOAL_POLICY_RATIO}",
                _ratio_text(pol, base, 2),
                _verdict(ratio, GOAL_POLICY_RATIO, at_least=True) + _noise(pol, base),
            )
        )
        a, b = _get(pol, "c1", "latency_us", "p50"), _get(base, "c1", "latency_us", "p50")
        added_us = a - b if a is not None and b is not None else None
        rows.append(
            (
                f"JWT + CEL policy added p50 at 1 connection ({mode})",
                f"≤ {GOAL_POLICY_ADDED_P50_US:.0f} µs",
                _num(added_us, 1) + " µs" if added_us is not None else NONE,
                _verdict(added_us, GOAL_POLICY_ADDED_P50_US, at_least=False),
            )
        )
    idle = _get(find(results, "crossway", "json"), "rss_idle_mb")
    rows.append(
        (
            "Crossway idle RSS (whole process tree)",
            f"≤ {GOAL_IDLE_RSS_MB:.0f} MB",
            _num(idle, 1) + " MB" if idle else NONE,
            _verdict(idle, GOAL_IDLE_RSS_MB, at_least=False),
        )
    )
    for provider in ("anthropic", "bedrock"):
        for mode in ("json", "stream"):
            tr, base = find(results, f"crossway-{provider}", mode), find(results, "crossway", mode)
            rows.append(
                (
                    f"{provider} translation / passthrough throughput ({mode})",
                    f"≥ {GOAL_TRANSLATION_RATIO} per CPU-s",
                    _per_cpu_text(tr, base, 2),
                    _verdict(_per_cpu_ratio(tr, base), GOAL_TRANSLATION_RATIO, at_least=True)
                    + _noise(tr, base),
                )
            )
        tr, base = (
            find(results, f"crossway-{provider}", "stream"),
            find(results, "crossway", "stream"),
        )
        a, b = _get(tr, "first_byte", "ttft_p50_us"), _get(base, "first_byte", "ttft_p50_us")
        added = (a - b) / 1000 if a is not None and b is not None else None
        rows.append(
            (
                f"{provider} translation added time to first token (p50)",
                f"≤ {GOAL_ADDED_TTFT_MS:.0f} ms",
                _num(added, 3) + " ms" if added is not None else NONE,
                _verdict(added, GOAL_ADDED_TTFT_MS, at_least=False),
            )
        )
    return _tidy(rows)


def _tidy(rows: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """A goal that was not measured carries no noise note."""
    return [(g, t, m, "not measured" if v.startswith("not measured") else v) for g, t, m, v in rows]


def _profile_table(title: str, rows: list[dict[str, Any]], limit: int) -> list[str]:
    out = [f"| {title} | % of samples | ≈ µs per request |", "|---|---:|---:|"]
    out += [
        f"| `{r['function']}` | {r['percent']} | {_num(r['us_per_request'], 1)} |"
        for r in rows[:limit]
    ]
    return [*out, ""]


def _profile_section(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    profiled = [run for run in results["runs"] if run.get("profile")]
    if not profiled:
        return out
    out += [
        "## Profiles (py-spy)",
        "",
        "Sampled at 32 connections after the measurements, without pausing the worker. Only Python frames are visible: "
        "time inside granian's Rust `send`/`receive` is charged to the Python frame that awaits it, and time in the event loop's "
        "own C code to the outermost frame (shown as *event loop / granian (native)*); a frame that awaits granian's `send` or `receive` "
        "(Crossway's `tracked_send` and `read_body`, the reference's `__call__`) therefore carries granian's own work, the same in every proxy. "
        "≈ µs per request = share of samples x the worker's CPU time per request measured without the profiler.",
        "",
    ]
    for run in profiled:
        prof = run["profile"]
        out.append(f"### {run['target']} / {run['mode']}")
        out.append("")
        if "error" in prof:
            out += [f"profile failed: {prof['error']}", ""]
            continue
        out += [
            f"{prof['samples']} samples at {prof.get('rate_hz', '?')} Hz; the worker spent "
            f"**{_num(prof.get('cpu_us_per_request'), 1)} µs of CPU per request** (measured without the profiler); "
            f"collapsed stacks in `{prof['collapsed']}`.",
            "",
        ]
        out += _profile_table("component (leaf frame)", prof.get("components", []), 8)
        out += _profile_table("self time (leaf function)", prof["self"], 12)
        if prof.get("crossway_inclusive"):
            out += _profile_table("Crossway function (inclusive)", prof["crossway_inclusive"], 12)
        if prof.get("crossway_lines"):
            out += _profile_table("Crossway line (self)", prof["crossway_lines"], 10)
    return out


def render(results: dict[str, Any]) -> str:
    """The whole markdown report."""
    m, s = results["machine"], results["settings"]
    lines = [
        f"# Crossway benchmark — {results['started']}",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}",
        f"- Stack: granian {m['granian']}, aiohttp {m['aiohttp']}, pyreqwest {m.get('pyreqwest', NONE)}, uvloop {m['uvloop']}; {m['nginx']}; {m['wrk']}; LiteLLM {m['litellm']}",
        f"- Crossway {m['crossway']} at `{m['crossway_commit']}`",
        f"- Method: proxy pinned to core {s['proxy_cpu']} (one worker); nginx, wrk and the first-byte probe pinned to core {s['load_cpu']}; "
        f"{s['request_body_bytes']} B JSON request body. Per mode, all Python proxies but LiteLLM run side by side (idle when not loaded) "
        f"and are loaded in turns: {s['warmup_s']:g} s warm-up each, then {s.get('rounds', 1)} rounds of "
        f"{s['seconds_c32'] / s.get('rounds', 1):g} s at 32 connections and {s['seconds_c1'] / s.get('rounds', 1):g} s at 1 connection each "
        f"(LiteLLM: one round of {s['seconds_c32']:g} s and {s['seconds_c1']:g} s); "
        f"{s['probe_count']} sequential streamed requests for first byte / first token.",
        f"- Niceness of the benchmark's processes: {s.get('niceness', 0)} (BENCH_NICE).",
        f"- Load average (1/5/15 min) at start {results['load_average_start']}, at end {results['load_average_end']} "
        "(other work on this machine adds noise; each run's own load average is in the JSON).",
        f"- Whole run: {results['elapsed_s']} s.",
        "",
    ]
    for mode, title in (("json", "Non-streaming"), ("stream", "Streaming (SSE)")):
        lines += [f"## {title}", "", HEADER]
        lines += [_row(run) for run in results["runs"] if run["mode"] == mode]
        lines.append("")
    lines += [
        "First byte / first token: time from writing the request to the first body byte / the first content token, one request at a time. "
        "RSS: the proxy's whole process tree (in brackets: its serving worker alone). proxy CPU %: the proxy's CPU time over the 32-connection runs "
        "(100 = the whole core; less means it waited on I/O or other work took the core). req per CPU-s: requests served per second of the proxy's own CPU, "
        "the figure least disturbed by other load on the machine. Latency percentiles are the median of the rounds' own; req/s is over all rounds.",
        "",
        "Commands (each under `taskset -c <proxy core>`):",
        "",
        *sorted(
            {
                f"- {run['target']} ({run['mode']}): `{run['command']}`"
                for run in results["runs"]
                if run.get("command")
            }
        ),
        "",
        "## Goals",
        "",
        "| goal | target | measured | verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {g} | {t} | {v} | {verdict} |" for g, t, v, verdict in goals(results)]
    lines.append("")
    lines += _profile_section(results)
    return "\n".join(lines) + "\n"
