"""The inference bench's markdown report: goals, knees, and every step's row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from bench.inference import stats
from bench.inference.stats import StepRow

BASELINE: Final = "round-robin"
DEFAULT: Final = "default"
LEAST_QUEUE: Final = "least-queue"
PREFIX_ONLY: Final = "prefix-only"
DECISION_GOAL_US: Final = 200.0


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ttft(row: StepRow, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{'≥' if row.ttft_censored else ''}{value:.3f}"


def one_line(row: StepRow) -> str:
    """A progress line for one step."""
    return (
        f"{row.workload}/{row.policy} rate {row.rate:g}: {row.completed_rps:.1f} req/s done "
        f"of {row.arrived_rps:.1f}, {row.output_tps:.0f} tok/s, TTFT p50 {_s(row.ttft_p50, 3)} "
        f"p90 {_s(row.ttft_p90, 3)} s, cache hit {_s(row.cache_hit)}, loads "
        f"{row.adapter_loads:.0f}, max share {row.max_share:.2f}, errors {row.errors}, "
        f"cpu client {row.client_cpu:.2f} gw {row.gateway_cpu:.2f} sims {row.sims_cpu:.2f}"
    )


def rows_of(results: dict[str, Any], workload: str, policy: str) -> list[StepRow]:
    raw = results["workloads"].get(workload, {}).get("policies", {}).get(policy, [])
    return [StepRow(**r) for r in raw]


def _at(rows: Sequence[StepRow], rate: float) -> StepRow | None:
    return next((r for r in rows if r.rate == rate), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _verdict(value: float | None, ok: bool) -> str:
    if value is None:
        return "not measured"
    return "met" if ok else "not met"


def goals(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(goal, measured, verdict) rows."""
    bound = float(results["settings"]["ttft_bound_s"])
    out: list[tuple[str, str, str]] = []
    rr, df = rows_of(results, "prefix", BASELINE), rows_of(results, "prefix", DEFAULT)
    if rr and df:
        rr_knee, df_knee = stats.knee(rr, bound), stats.knee(df, bound)
        r = _ratio(df_knee.output_tps if df_knee else None, rr_knee.output_tps if rr_knee else None)
        out.append(
            (
                "prefix-heavy: default ≥ 2x round-robin's output tok/s at the knee",
                f"{_s(r)}x ({_knee_text(df_knee)} vs {_knee_text(rr_knee)})",
                _verdict(r, r is not None and r >= 2.0),
            )
        )
        rp, dp = stats.peak(rr), stats.peak(df)
        r = _ratio(dp.output_tps if dp else None, rp.output_tps if rp else None)
        out.append(
            (
                "prefix-heavy: peak output tok/s, default / round-robin (context)",
                f"{_s(r)}x ({_s(dp.output_tps if dp else None, 0)} vs "
                f"{_s(rp.output_tps if rp else None, 0)} tok/s)",
                "-",
            )
        )
        past = [x for x in rr if rr_knee is None or x.rate > rr_knee.rate]
        pairs = [(x, _at(df, x.rate)) for x in past]
        ratios: list[tuple[StepRow, StepRow, float]] = []
        for x, d in pairs:
            r = _ratio(x.ttft_p90, d.ttft_p90 if d else None)
            if d is not None and r is not None:
                ratios.append((x, d, r))
        if ratios:
            text = ", ".join(
                f"{r:.1f}x at {x.rate:g}/s ({_ttft(x, x.ttft_p90)} vs {_ttft(d, d.ttft_p90)} s)"
                for x, d, r in ratios
            )
            # judged where the default still holds: past round-robin's knee, up to its own
            judged = [t for t in ratios if df_knee is not None and t[0].rate <= df_knee.rate]
            met_from = next(
                (i for i in range(len(judged)) if all(r >= 10.0 for _, _, r in judged[i:])),
                None,
            )
            if not judged:
                verdict = "not measured (no step between the two knees)"
            elif met_from == 0:
                verdict = "met"
            elif met_from is not None:
                verdict = (
                    f"met from {judged[met_from][0].rate:g}/s up to the default's knee "
                    f"({df_knee.rate if df_knee else 0:g}/s), not at "
                    + ", ".join(f"{x.rate:g}/s" for x, _, _ in judged[:met_from])
                )
            else:
                verdict = "not met"
        else:
            text, verdict = "round-robin never passed its knee in the sweep", "not measured"
        out.append(
            (
                "prefix-heavy: p90 TTFT ≥ 10x lower than round-robin past its knee "
                "(round-robin / default at each step past it; judged up to the default's knee)",
                text,
                verdict,
            )
        )
    for workload in ("hot", "prefix"):
        po, pd = rows_of(results, workload, PREFIX_ONLY), rows_of(results, workload, DEFAULT)
        if not (po and pd):
            continue
        kpo, kpd = stats.knee(po, bound), stats.knee(pd, bound)
        steps = [(x, _at(pd, x.rate)) for x in po]
        worse = [
            (x, d)
            for x, d in steps
            if d is not None
            and x.max_share > d.max_share + 0.05
            and (x.ttft_p90 or 0) > (d.ttft_p90 or 0)
        ]
        shares = ", ".join(
            f"{x.rate:g}/s {x.max_share:.0%} vs {d.max_share:.0%}" for x, d in steps if d
        )
        out.append(
            (
                f"{workload}: prefix-only hot-spots (negative control): busiest endpoint's "
                "share, prefix-only vs default, and the knees",
                f"{shares}; prefix-only {_knee_text(kpo)}, default {_knee_text(kpd)}",
                "shown at "
                + ", ".join(f"{x.rate:g}/s" for x, _ in worse)
                + " (busier endpoint and higher p90 TTFT than the default)"
                if worse
                else "not shown",
            )
        )
    lq, dd = rows_of(results, "distinct", LEAST_QUEUE), rows_of(results, "distinct", DEFAULT)
    if lq and dd:
        lp, dp = stats.peak(lq), stats.peak(dd)
        r = _ratio(dp.output_tps if dp else None, lp.output_tps if lp else None)
        out.append(
            (
                "low sharing: default within ±5% of least-queue (peak output tok/s)",
                f"{_s(r, 3)}x ({_s(dp.output_tps if dp else None, 0)} vs "
                f"{_s(lp.output_tps if lp else None, 0)} tok/s)",
                _verdict(r, r is not None and 0.95 <= r <= 1.05),
            )
        )
        lk, dk = stats.knee(lq, bound), stats.knee(dd, bound)
        text = f"default {_knee_text(dk)}, least-queue {_knee_text(lk)}"
        if lk is not None:
            d_at = _at(dd, lk.rate)
            if d_at is not None:
                text += (
                    f"; p90 TTFT at {lk.rate:g}/s: {_ttft(d_at, d_at.ttft_p90)} vs "
                    f"{_ttft(lk, lk.ttft_p90)} s"
                )
        out.append(("low sharing: knees (context)", text, "-"))
    lr, ld = rows_of(results, "lora", BASELINE), rows_of(results, "lora", DEFAULT)
    if lr and ld:
        a, b = sum(x.adapter_loads for x in lr), sum(x.adapter_loads for x in ld)
        r = _ratio(a, b) if b else (None if not a else float("inf"))
        out.append(
            (
                "LoRA-skewed: ≥ 3x fewer adapter loads than round-robin (whole sweep)",
                f"{_s(r, 1)}x ({a:.0f} vs {b:.0f} loads)",
                _verdict(r, r is not None and r >= 3.0),
            )
        )
    cost = results.get("decision") or {}
    us = cost.get("p50_us")
    out.append(
        (
            f"routing decision ≤ {DECISION_GOAL_US:.0f} µs with 16 endpoints",
            f"p50 {_s(us, 1)} µs, p99 {_s(cost.get('p99_us'), 1)} µs ({cost.get('what', '')})"
            if us is not None
            else f"not measured ({cost.get('error', 'no scheduler')})",
            _verdict(us, us is not None and us <= DECISION_GOAL_US),
        )
    )
    return out


def _knee_text(row: StepRow | None) -> str:
    if row is None:
        return "no knee (the lowest rate already past it)"
    return f"knee {row.rate:g}/s, {row.output_tps:.0f} tok/s"


def knee_table(results: dict[str, Any]) -> list[str]:
    bound = float(results["settings"]["ttft_bound_s"])
    lines = [
        "| workload | policy | knee (req/s) | output tok/s at knee | p90 TTFT at knee (s) | peak tok/s | peak at |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, entry in results["workloads"].items():
        for policy in entry["policies"]:
            rows = rows_of(results, name, policy)
            k, p = stats.knee(rows, bound), stats.peak(rows)
            lines.append(
                f"| {name} | {policy} | {k.rate:g} | {k.output_tps:.0f} | {_ttft(k, k.ttft_p90)} | "
                if k
                else f"| {name} | {policy} | < {rows[0].rate:g} | - | - | "
                if rows
                else f"| {name} | {policy} | - | - | - | "
            )
            lines[-1] += f"{p.output_tps:.0f} | {p.rate:g} |" if p else "- | - |"
    return lines


def step_table(results: dict[str, Any], name: str) -> list[str]:
    lines = [
        "| rate | policy | sent | req/s done | out tok/s | TTFT p50 (s) | TTFT p90 (s) | "
        "cache hit | adapter loads | endpoint shares | errors | CPU client / gw / sims |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    entry = results["workloads"][name]
    by_rate: dict[float, list[StepRow]] = {}
    for policy in entry["policies"]:
        for row in rows_of(results, name, policy):
            by_rate.setdefault(row.rate, []).append(row)
    for rate in sorted(by_rate):
        for row in by_rate[rate]:
            shares = " ".join(f"{v:.0%}" for v in row.shares.values())
            lines.append(
                f"| {rate:g} | {row.policy} | {row.sent} | {row.completed_rps:.1f} / "
                f"{row.arrived_rps:.1f} | {row.output_tps:.0f} | {_ttft(row, row.ttft_p50)} | "
                f"{_ttft(row, row.ttft_p90)} | {_s(row.cache_hit)} | {row.adapter_loads:.0f} | "
                f"{shares} | {row.errors} | {row.client_cpu:.2f} / {row.gateway_cpu:.2f} / "
                f"{row.sims_cpu:.2f} |"
            )
    return lines


def render(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        f"# Inference routing bench ({results['started']}, commit {results['commit']})",
        "",
        f"{s['sims']} simulators (`crossway.samples.model_server`, time factor {s['time_factor']}), "
        f"one `crossway serve` (1 worker) per policy, an open-loop Poisson client; "
        f"{s['duration_s']:g} s of arrivals per rate step (the first {s['warmup_share']:.0%} "
        f"left out), {s['drain_s']:g} s drain; before the sweep {s.get('warmup_s', 0):g} s of "
        f"unmeasured arrivals at the first rate (every policy alike); knee: the highest rate "
        f"before the first step "
        f"whose p90 TTFT passes {s['ttft_bound_s']:g} s or that answered < "
        f"{stats.KNEE_THROUGHPUT_SHARE:.0%} of its window's requests by the drain deadline. "
        f"Load average before {_load(results.get('load_before'))}, "
        f"after {_load(results.get('load_after'))}." + (" **Quick run.**" if s["quick"] else ""),
        "",
        "## Goals",
        "",
        "| goal | measured | verdict |",
        "|---|---|---|",
    ]
    lines += [f"| {g} | {m} | {v} |" for g, m, v in goals(results)]
    lines += ["", "## Knees", "", *knee_table(results)]
    for name, entry in results["workloads"].items():
        lines += [
            "",
            f"## {entry['title']}",
            "",
            f"Simulators: `{' '.join(_short(entry['sim_args']))}`; workload: "
            + ", ".join(f"{k} {v}" for k, v in entry["workload"].items() if v),
            "",
            *step_table(results, name),
        ]
    every = [
        StepRow(**r)
        for entry in results["workloads"].values()
        for rows in entry["policies"].values()
        for r in rows
    ]
    if every:
        lines += [
            "",
            f"The client itself: at most {max(r.client_cpu for r in every):.2f} of a core, "
            f"p99 send lateness at most {max(r.lateness_p99_ms for r in every):.1f} ms; the "
            f"gateway at most {max(r.gateway_cpu for r in every):.2f} of a core, the simulators "
            f"at most {max(r.sims_cpu for r in every):.2f} together (2 cores).",
        ]
    lines += [
        "",
        "TTFT with ≥: some requests of the window had no first token when the drain ended; they "
        "count with the time they had waited (a lower bound). Endpoint shares: answered requests "
        "per endpoint, largest first. CPU: share of one core.",
        "",
    ]
    return "\n".join(lines)


def _short(args: Sequence[str]) -> list[str]:
    out = []
    for a in args:
        out.append(a if len(a) <= 40 else a[:37] + "...")
    return out


def _load(value: Any) -> str:
    if not value:
        return "?"
    return " ".join(f"{float(v):.2f}" for v in value)


def merge(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One results document from several runs with the same settings (the first's settings;
    a later run's workload replaces an earlier one's)."""
    merged = dict(documents[0])
    merged["workloads"] = {}
    for doc in documents:
        merged["workloads"].update(doc["workloads"])
    merged["commit"] = ",".join(dict.fromkeys(str(d["commit"]) for d in documents))
    merged["load_after"] = documents[-1].get("load_after")
    merged["decision"] = documents[-1].get("decision")
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.inference.report RESULTS.json [MORE.json ...]`: render results again
    (several runs' workloads merged into one report)."""
    import json
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(
            "usage: python -m bench.inference.report RESULTS.json [MORE.json ...]", file=sys.stderr
        )
        return 2
    documents = []
    for path in args:
        with open(path) as handle:
            documents.append(json.load(handle))
    print(render(merge(documents)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
