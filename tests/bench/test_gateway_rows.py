"""The gateway-policy benches' shared pieces (bench/gateway_rows.py); no load is generated here.

- every committed accounting and observability result renders to its committed report, byte
  for byte, and its ratios come out the same (the shared table, paragraphs and ratios did not
  change what a reader of bench/results sees);
- py-spy's collapsed stacks are read as `path:function` frames with their counts;
- a run without figures keeps its row in the table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import accounting, gateway_rows, observability

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
BENCHES = {
    "accounting": (accounting, "plain", False),
    "observability": (observability, "off", True),
}
COMMITTED = sorted(p for name in BENCHES for p in RESULTS.glob(f"{name}-*.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_results_render_to_their_report(path: Path) -> None:
    bench, base, latency = BENCHES[path.stem.split("-", 1)[0]]
    data = json.loads(path.read_text())
    for key in ("load_average_start", "load_average_end"):
        data[key] = tuple(data[key])  # os.getloadavg()'s tuple, a list once through JSON

    assert bench.render(data) == path.with_suffix(".md").read_text()
    assert gateway_rows.ratios(data["runs"], base, bench.GOALS, latency=latency) == data["ratios"]


def test_committed_results_exist() -> None:
    assert {p.stem.split("-", 1)[0] for p in COMMITTED} == set(BENCHES)


def test_collapsed_stacks_give_frames_and_counts(tmp_path: Path) -> None:
    collapsed = tmp_path / "stacks.txt"
    site = "/x/.venv/lib/python3.11/site-packages"
    collapsed.write_text(
        f"main (/x/src/crossway/cli.py:3);put (/x/src/crossway/store/ledger.py:9) 7\n"
        f"run ({site}/redis/client.py:40) 2\n"
        "not a sample line\n"
    )

    assert list(gateway_rows.collapsed_stacks(collapsed)) == [
        (["crossway/cli.py:main", "crossway/store/ledger.py:put"], 7),
        (["redis/client.py:run"], 2),
    ]
    key, rows = accounting.accounting_breakdown(collapsed, 90.0)
    assert key == "accounting"
    assert rows == [
        {"function": "crossway/store/ledger.py:put", "percent": 77.8, "us_per_request": 70.0},
        {"function": "redis/client.py:run", "percent": 22.2, "us_per_request": 20.0},
    ]


def test_a_run_without_figures_keeps_its_row() -> None:
    run = {"mode": "json", "target": "keys-redis", "failed": "RuntimeError: boom\nlog tail"}
    head = gateway_rows.table_head("plain", ["spend recorded / answered"])

    line = gateway_rows.table_gap(run, 1)

    assert line.startswith("| json | keys-redis | RuntimeError: boom |")
    assert line.count("|") == head[0].count("|") + 1  # as in the committed reports


def test_telemetry_breakdown_gives_each_sample_one_part(tmp_path: Path) -> None:
    collapsed = tmp_path / "stacks.txt"
    src = "/x/src/crossway/telemetry"
    collapsed.write_text(
        f"handle (/x/src/crossway/llm/spans.py:5) 3\n"
        f"run (/usr/lib/python3.11/threading.py:1);LineWriter._line ({src}/access_log.py:9) 1\n"
        "serve (/x/src/crossway/server/app.py:1) 4\n"
    )

    key, figures = observability.breakdown(collapsed, 80.0)

    assert key == "telemetry"
    assert figures == {
        "parts": [
            {
                "part": "request path: crossway attempt span attributes (llm/spans.py)",
                "percent": 37.5,
                "us_per_request": 30.0,
            },
            {
                "part": "access log thread: formatting (time, redaction, JSON)",
                "percent": 12.5,
                "us_per_request": 10.0,
            },
        ],
        "telemetry_percent": 50.0,
    }
