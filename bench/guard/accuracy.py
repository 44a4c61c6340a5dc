"""Precision and recall of the built-in detectors on the labelled corpus, and their speed.

The corpus (`tests/guard/corpus/corpus.jsonl`, written by `build_corpus.py` beside it) holds
clean samples (prose, code, numbers that look like PII and are not) and positive samples with
each expected finding's entity and span. Every built-in local detector runs with its default
config (`pii` all entities, national phone numbers of the US; `secrets` all rules;
`injection`). A finding counts as found when a match of the same entity overlaps its span
(`exact` counts the matches with exactly the expected span); a match that overlaps no
expected finding of its entity is a false positive.

Goals (issue 13): no false positive on the clean samples, recall >= 95 % on the positive ones;
all detectors together well under 100 us on 1 KB of prose.

    .venv/bin/python -m bench.guard.accuracy [--json] [--speed] [--corpus FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import TypeAdapter

from crossway.config.guardrails import DetectorConfig
from crossway.guard.detectors import Detector, Match, build_detectors

CORPUS: Final = Path(__file__).resolve().parents[2] / "tests" / "guard" / "corpus" / "corpus.jsonl"
DETECTOR_CONFIGS: Final = (
    {"type": "pii"},
    {"type": "secrets"},
    {"type": "injection"},
)
"""Every built-in local detector, default config."""
RECALL_GOAL: Final = 0.95
SPEED_GOAL_US: Final = 100.0

PROSE_1KB: Final = (
    "Thanks for the update on the migration. I went through the plan with the team this "
    "morning and we agree on the order: first the read replicas, then the primary, and the "
    "cache last, once traffic has settled. Two things came up. The maintenance window on "
    "Saturday is shorter than we thought, about three hours, so the replica step has to be "
    "scripted rather than done by hand; and the dashboards still point at the old cluster, "
    "which means the on-call engineer would be blind for the first hour. Could you check "
    "whether the alert rules were copied as well? We also want a rollback that does not "
    "depend on the new tooling, in case the deploy itself is what breaks. The draft runbook "
    "looks good otherwise; the section on connection draining is clear and the timings match "
    "what we measured last quarter. Let me know if you would rather move the window to the "
    "following weekend, because a few people are travelling and it would help to have the "
    "whole group online. I will send the revised checklist tomorrow after the review meeting."
)

MIXED_1KB: Final = (
    "Quick recap of Tuesday\u2019s call (12 people, 45 minutes): the v2.14.3 release is on track "
    "for 2026-12-15, and the docs at https://docs.example.com/guide/install#upgrade are "
    "updated. Costs came in at $1,299.99 per month, about 12% under the estimate of "
    "€1.480; the p99 latency dropped from 14.8 ms to 9.2 ms after the fix in PR #6789. "
    "José will ping the vendor — their ticket JIRA-12345 is still open since 09:30 — and "
    "we agreed to keep 3 replicas until traffic settles. Next steps: (1) rotate the staging "
    "certificates, (2) move the cron job to 02:00 UTC, (3) archive build 20241205.3. The "
    "room for Thursday is 4.12 on the fourth floor; bring the laptop with 16 GB of RAM. "
    "Remember that the \u201cfreeze\u201d starts on the 20th and ends on January 4; anything merged "
    "after that needs two approvals. Questions → the #release channel, not e-mail, please. "
    "Thanks all, and well done on getting the error rate down to 0.02% this week!"
)
"""1 KB of a realistic chat message: numbers, a date, a URL, curly quotes, accents."""
PII_1KB: Final = (
    "Customer record: Jane Doe, jane.doe@example.com, +44 20 7946 0958, card 4242 4242 4242 "
    "4242, IBAN DE89 3704 0044 0532 0130 00, SSN 078-05-1120, last login from 203.0.113.42. "
) * 5
"""About 1 KB dense with findings (the worst case: every validator runs)."""
SPEED_TEXTS: Final = {"prose": PROSE_1KB, "mixed": MIXED_1KB, "pii-dense": PII_1KB}


def load_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    """The corpus's samples, one dict per JSONL line."""
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def default_detectors() -> list[Detector]:
    """The built-in local detectors with their default configs."""
    adapter: TypeAdapter[DetectorConfig] = TypeAdapter(DetectorConfig)
    built: list[Detector] = []
    for raw in DETECTOR_CONFIGS:
        built.extend(build_detectors(adapter.validate_python(raw)))
    return built


def scan(detectors: Iterable[Detector], text: str) -> list[Match]:
    """Every match of every detector."""
    return [m for d in detectors for m in d.find(text)]


@dataclass
class Tally:
    """Counts of one entity."""

    expected: int = 0
    found: int = 0
    exact: int = 0
    false_positives: int = 0
    predicted: int = 0

    @property
    def precision(self) -> float:
        true = self.predicted - self.false_positives
        return true / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.expected if self.expected else 1.0


@dataclass
class Report:
    """The evaluation: per-entity tallies, and the samples that went wrong."""

    tallies: dict[str, Tally] = field(default_factory=dict)
    clean_samples: int = 0
    positive_samples: int = 0
    clean_false_positives: list[dict[str, Any]] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)
    false_positives: list[dict[str, Any]] = field(default_factory=list)

    def tally(self, entity: str) -> Tally:
        return self.tallies.setdefault(entity, Tally())

    @property
    def recall(self) -> float:
        expected = sum(t.expected for t in self.tallies.values())
        found = sum(t.found for t in self.tallies.values())
        return found / expected if expected else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean_samples": self.clean_samples,
            "positive_samples": self.positive_samples,
            "clean_false_positives": len(self.clean_false_positives),
            "recall": round(self.recall, 4),
            "entities": {
                name: {
                    "expected": t.expected,
                    "found": t.found,
                    "exact_span": t.exact,
                    "predicted": t.predicted,
                    "false_positives": t.false_positives,
                    "precision": round(t.precision, 4),
                    "recall": round(t.recall, 4),
                }
                for name, t in sorted(self.tallies.items())
            },
            "missed": self.missed,
            "false_positive_samples": self.clean_false_positives + self.false_positives,
        }


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def evaluate(detectors: Sequence[Detector], rows: Iterable[dict[str, Any]]) -> Report:
    """Score the detectors on the samples."""
    report = Report()
    for row in rows:
        text: str = row["text"]
        matches = scan(detectors, text)
        expected = [(e["entity"], (e["start"], e["end"])) for e in row["entities"]]
        if row["label"] == "clean":
            report.clean_samples += 1
        else:
            report.positive_samples += 1
        for entity, span in expected:
            tally = report.tally(entity)
            tally.expected += 1
            hits = [m for m in matches if m.entity == entity and _overlaps((m.start, m.end), span)]
            if hits:
                tally.found += 1
                tally.exact += any((m.start, m.end) == span for m in hits)
            else:
                report.missed.append(
                    {"id": row["id"], "entity": entity, "text": text[span[0] : span[1]]}
                )
        for m in matches:
            tally = report.tally(m.entity)
            tally.predicted += 1
            if not any(e == m.entity and _overlaps((m.start, m.end), s) for e, s in expected):
                tally.false_positives += 1
                finding = {"id": row["id"], "entity": m.entity, "text": text[m.start : m.end]}
                if row["label"] == "clean":
                    report.clean_false_positives.append(finding)
                else:
                    report.false_positives.append(finding)
    return report


def markdown(report: Report) -> str:
    """The per-entity table and the totals, as markdown."""
    lines = [
        "| entity | expected | found | exact span | false positives | precision | recall |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, t in sorted(report.tallies.items()):
        lines.append(
            f"| {name} | {t.expected} | {t.found} | {t.exact} | {t.false_positives} "
            f"| {t.precision:.1%} | {t.recall:.1%} |"
        )
    lines.append("")
    lines.append(
        f"{report.clean_samples} clean samples, {len(report.clean_false_positives)} with a "
        f"false positive; {report.positive_samples} positive samples, recall "
        f"{report.recall:.1%} (goal: 0 false positives, recall >= {RECALL_GOAL:.0%})."
    )
    for kind, items in (
        ("missed", report.missed),
        ("false positive", report.clean_false_positives + report.false_positives),
    ):
        for item in items:
            lines.append(f"- {kind}: {item['id']} {item['entity']} {item['text']!r}")
    return "\n".join(lines)


def speed(
    detectors: Sequence[Detector], text: str = PROSE_1KB, iterations: int = 2000
) -> dict[str, float]:
    """Median µs per call over five batches: each detector alone, and all of them."""

    def timed(fn: Any) -> float:
        batches = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(iterations):
                fn(text)
            batches.append((time.perf_counter() - start) / iterations * 1e6)
        return round(statistics.median(batches), 2)

    figures = {d.name: timed(d.find) for d in detectors}
    figures["all"] = timed(lambda t: scan(detectors, t))
    return figures


def speed_table(detectors: Sequence[Detector], iterations: int = 2000) -> str:
    """µs per call of each detector and of all, on each of `SPEED_TEXTS`, as markdown."""
    columns = {
        name: speed(detectors, text, iterations if name != "pii-dense" else iterations // 10)
        for name, text in SPEED_TEXTS.items()
    }
    header = " | ".join(f"{name} ({len(SPEED_TEXTS[name].encode())} B)" for name in columns)
    lines = [f"| detector | {header} |", "| --- |" + " ---: |" * len(columns)]
    for row in next(iter(columns.values())):
        lines.append(f"| {row} | " + " | ".join(f"{c[row]:.1f}" for c in columns.values()) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument(
        "--speed", action="store_true", help="also time the detectors on 1 KB of prose"
    )
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args(argv)
    detectors = default_detectors()
    report = evaluate(detectors, load_corpus(args.corpus))
    if args.json:
        out = report.as_dict()
        if args.speed:
            out["speed_us"] = {
                name: speed(detectors, text, 200 if name == "pii-dense" else 2000)
                for name, text in SPEED_TEXTS.items()
            }
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(markdown(report))
        if args.speed:
            print()
            print("µs per call (median of 5 batches):")
            print()
            print(speed_table(detectors))
    ok = not report.clean_false_positives and report.recall >= RECALL_GOAL
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
