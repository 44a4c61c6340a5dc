"""The guard's accuracy goals on the labelled corpus (issue 13), as a correctness test: no
false positive on any clean sample, recall >= 95 % on the positive samples (and per entity),
and the corpus is what build_corpus.py writes (no hand edits drifting from the source)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bench.guard import accuracy

CORPUS_DIR = Path(__file__).resolve().parents[1] / "guard" / "corpus"


@pytest.fixture(scope="module")
def report() -> accuracy.Report:
    return accuracy.evaluate(accuracy.default_detectors(), accuracy.load_corpus())


def test_corpus_size_and_labels() -> None:
    rows = accuracy.load_corpus()
    clean = [r for r in rows if r["label"] == "clean"]
    positive = [r for r in rows if r["label"] == "positive"]
    assert len(clean) >= 150 and len(positive) >= 150
    assert len({r["id"] for r in rows}) == len(rows)
    for row in positive:
        for e in row["entities"]:
            assert 0 <= e["start"] < e["end"] <= len(row["text"])
    entities = {e["entity"] for r in positive for e in r["entities"]}
    assert {"EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "SECRET"} <= entities


def test_corpus_file_is_what_the_builder_writes() -> None:
    sys.path.insert(0, str(CORPUS_DIR))
    try:
        import build_corpus
    finally:
        sys.path.remove(str(CORPUS_DIR))
    written = [json.loads(line) for line in (CORPUS_DIR / "corpus.jsonl").read_text().splitlines()]
    assert written == build_corpus.build()


def test_no_false_positive_on_clean_samples(report: accuracy.Report) -> None:
    assert report.clean_false_positives == []


def test_recall_goal(report: accuracy.Report) -> None:
    assert report.recall >= accuracy.RECALL_GOAL, report.missed
    for name, tally in report.tallies.items():
        assert tally.recall >= accuracy.RECALL_GOAL, (name, report.missed)


def test_no_false_positive_in_positive_samples_either(report: accuracy.Report) -> None:
    assert report.false_positives == []


def test_cli_prints_the_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert accuracy.main([]) == 0
    table = capsys.readouterr().out
    assert "| entity | expected | found |" in table and "| EMAIL |" in table
    assert accuracy.main(["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["clean_false_positives"] == 0 and data["recall"] >= accuracy.RECALL_GOAL
