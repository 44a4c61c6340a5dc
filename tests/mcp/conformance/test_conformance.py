"""The `@modelcontextprotocol/conformance` server suite, against the fixture server alone and
through Crossway (one upstream, names unprefixed, the route bound to the expected Host).

Two runs each: conformance 0.1.16 `--suite all` (the session era, 2025-06-18 / 2025-11-25) and
the 0.2.0 pre-release `--requirements 2026-07-28` (the stateless era)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from tests.helpers import ROOT, free_port, missing_component, start_gateway
from tests.mcp.conftest import spawn, stop

NODE_DIR = ROOT / "tests" / "node"
NODE_BIN = NODE_DIR / "node_modules" / ".bin"
CLI = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
RESULT_DIR: Final = re.compile(r"^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")
CLI_NEXT = NODE_DIR / "node_modules" / "conformance-next" / "dist" / "index.js"
BASELINE = Path(__file__).parent / "baseline.yml"
FIXTURE_KNOWN_FAILURES = {
    # The scenario's tools/call POST carries MCP-Protocol-Version 2025-03-26; for that version
    # the mcp SDK server sends no SSE priming event or retry field and cannot close the stream
    # mid-call (SEP-1699 is 2025-11-25 behaviour), so it ends with two WARNING checks, which the
    # CLI scores as a failure. Through Crossway the scenario answers with JSON (no stream to
    # poll), which the scenario records as not applicable.
    "server-sse-polling",
}
SUITE_TIMEOUT = 240

pytestmark = pytest.mark.timeout(SUITE_TIMEOUT + 60)


@pytest.fixture(scope="module")
def fixture_url() -> Iterator[str]:
    port = free_port()
    proc = spawn([sys.executable, "-m", "tests.mcp.conformance.server", str(port)], port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


def run_suite(
    url: str, out: Path, baseline: Path | None = None, *, revision: str | None = None
) -> tuple[int, dict[str, dict[str, int]], str]:
    """Run `conformance server --suite all` (with a baseline of expected failures), or with a
    `revision` the 0.2.0 CLI's `--requirements REVISION`; returns (exit code, per-scenario check
    counts by status, output)."""
    cli = CLI_NEXT if revision else CLI
    if not cli.exists() or not (NODE_BIN / "node").exists():
        missing_component("tests/node dependencies not installed (make node-deps)")
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    selection = ["--requirements", revision] if revision else ["--suite", "all"]
    done = subprocess.run(
        [
            str(NODE_BIN / "node"),
            str(cli),
            "server",
            "--url",
            url,
            *selection,
            "-o",
            str(out),
            *(["--expected-failures", str(baseline)] if baseline else []),
        ],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
    )
    results: dict[str, dict[str, int]] = {}
    for checks_file in sorted(out.glob("server-*/checks.json")):
        named = RESULT_DIR.match(checks_file.parent.name)
        if named is None:
            continue
        scenario = named.group(1)
        counts = results.setdefault(scenario, {})
        for check in json.loads(checks_file.read_text()):
            counts[check["status"]] = counts.get(check["status"], 0) + 1
    return done.returncode, results, done.stdout + done.stderr


def _failing(results: dict[str, dict[str, int]], *, warnings: bool = True) -> set[str]:
    """Scenarios with a failed check (and, as the 0.1.16 CLI's baseline logic counts them,
    with a warning; the 0.2.0 CLI scores warnings as passes)."""
    return {s for s, c in results.items() if c.get("FAILURE") or (warnings and c.get("WARNING"))}


# 2026-07-28 scenarios the 0.2.0 CLI runs but does not score for the revision (extensions and
# pending scenarios); left out of the comparison.
UNSCORED_2026: Final = frozenset(
    {
        "http-header-validation",
        "http-custom-header-server-validation",
        "json-schema-2020-12",
        "tasks-lifecycle",
        "tasks-capability-negotiation",
        "tasks-wire-fields",
        "tasks-request-state-removal",
        "tasks-mrtr-input",
        "tasks-request-headers",
        "tasks-dispatch-and-envelope",
        "tasks-status-notifications",
        "tasks-required-task-error",
        "tasks-mrtr-composition",
    }
)


# Unscored scenarios the fixture passes (alone and through Crossway alike); the tasks-*
# extension scenarios fail both ways (the fixture has no tasks support).
UNSCORED_PASSING: Final = frozenset(
    {"http-header-validation", "http-custom-header-server-validation", "json-schema-2020-12"}
)


def _baseline() -> set[str]:
    return {
        line.strip()[2:]
        for line in BASELINE.read_text().splitlines()
        if line.strip().startswith("- ")
    }


def test_fixture_alone(fixture_url: str, tmp_path: Path) -> None:
    _, results, output = run_suite(fixture_url, tmp_path)
    assert len(results) >= 30, output[-3000:]
    assert _failing(results) == FIXTURE_KNOWN_FAILURES, output[-3000:]
    assert _baseline() <= FIXTURE_KNOWN_FAILURES


def _single_server_config(fixture_url: str) -> str:
    return f"""
routes:
  - name: mcp
    backend: tools
    match: {{host: 127.0.0.1}}
backends:
  tools:
    type: mcp
    servers:
      conformance: {{type: streamable_http, url: "{fixture_url}", prefix: false}}
"""


def test_through_crossway(fixture_url: str, tmp_path: Path) -> None:
    with start_gateway(_single_server_config(fixture_url)) as gw:
        code, results, output = run_suite(f"{gw.url}/mcp", tmp_path, BASELINE)
    assert len(results) >= 30, output[-3000:]
    passing = {s for s in results if s not in _failing(results)}
    assert {
        "server-initialize",
        "tools-call-sampling",
        "tools-call-elicitation",
        "tools-call-with-progress",
        "tools-call-with-logging",
        "resources-templates-read",
        "prompts-get-with-image",
        "dns-rebinding-protection",
    } <= passing
    assert _failing(results) == _baseline(), output[-3000:]
    assert code == 0, output[-3000:]


def test_fixture_alone_2026_07_28(fixture_url: str, tmp_path: Path) -> None:
    _, results, output = run_suite(fixture_url, tmp_path, revision="2026-07-28")
    scored = set(results) - UNSCORED_2026
    assert len(scored) >= 35, output[-3000:]
    assert _failing(results, warnings=False) & scored == set(), output[-3000:]
    assert UNSCORED_PASSING <= set(results) - _failing(results, warnings=False), output[-3000:]


def test_through_crossway_2026_07_28(fixture_url: str, tmp_path: Path) -> None:
    """Every scored scenario passes through Crossway as against the fixture alone: 2026-07-28
    requests go on to the fixture in 2026-07-28 (input-required results relayed as they are),
    `subscriptions/listen` relays the fixture's own listen stream."""
    with start_gateway(_single_server_config(fixture_url)) as gw:
        _, results, output = run_suite(f"{gw.url}/mcp", tmp_path, revision="2026-07-28")
    scored = set(results) - UNSCORED_2026
    assert len(scored) >= 35, output[-3000:]
    assert _failing(results, warnings=False) & scored == set(), output[-3000:]
    assert {"server-stateless", "input-required-result-multi-round"} <= scored
    # Unscored, passing against the fixture alone and through Crossway alike.
    assert UNSCORED_PASSING <= set(results) - _failing(results, warnings=False), output[-3000:]
