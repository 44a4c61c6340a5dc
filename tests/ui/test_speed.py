"""Every console page answers in under 300 ms against a request log of 100,000 entries."""

from __future__ import annotations

import statistics
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import ROOT
from tests.ui.conftest import Stack, start_stack, stop_stack
from tests.ui.logstore import fill_request_log

ROWS = 100_000
BUDGET_MS = 300.0
PAGES = (
    "/ui/",
    "/ui/?window=24h",
    "/ui/?window=7d",
    "/ui/models",
    "/ui/keys",
    "/ui/logs",
    "/ui/logs?model=sample-model-mini",
    "/ui/logs?status=5xx",
    "/ui/mcp",
    "/ui/a2a",
    "/ui/guardrails",
    "/ui/config",
)


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("speed")
    store = tmp / "request-log.sqlite3"
    fill_request_log(store, ROWS)
    config = tmp / "console.yaml"
    text = (ROOT / "examples" / "console.yaml").read_text()
    config.write_text(
        text.replace("    enabled: true\n", f"    enabled: true\n    path: {store}\n", 1)
    )
    stack = start_stack(config, tmp, token="speed-test-token")
    try:
        yield stack
    finally:
        stop_stack(stack)


def _time_ms(url: str, token: str) -> float:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200, url
        response.read()
    return (time.perf_counter() - started) * 1000


def test_every_page_under_300_ms_with_100k_log_rows(big_stack: Stack) -> None:
    assert big_stack.token is not None
    medians: dict[str, float] = {}
    first: dict[str, float] = {}
    for path in PAGES:
        url = big_stack.admin + path
        # The first view opens the stores and builds the Overview's aggregates.
        first[path] = _time_ms(url, big_stack.token)
        medians[path] = statistics.median(_time_ms(url, big_stack.token) for _ in range(5))
    print("console page first views (ms):", {k: round(v, 1) for k, v in first.items()})
    print("console page medians (ms):", {k: round(v, 1) for k, v in medians.items()})
    slow = {k: v for k, v in medians.items() if v >= BUDGET_MS}
    assert not slow, f"pages over {BUDGET_MS} ms: {slow}"
    # A first view builds a week of aggregates from nothing: ~250 ms on idle cores, more on a
    # loaded machine; later views reuse them.
    cold = {k: v for k, v in first.items() if v >= 3000}
    assert not cold, f"first views over 3 s: {cold}"
    # One detail page of an entry deep in the store.
    detail = statistics.median(
        _time_ms(big_stack.admin + "/ui/logs/50000", big_stack.token) for _ in range(5)
    )
    assert detail < BUDGET_MS
