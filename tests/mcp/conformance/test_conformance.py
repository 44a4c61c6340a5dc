"""The `@modelcontextprotocol/conformance` server suite, against the fixture server alone and
through Crossway (one upstream, names unprefixed, the route bound to the expected Host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, start_gateway
from tests.mcp.conftest import spawn, stop

NODE_BIN = ROOT / "tests" / "node" / "node_modules" / ".bin"
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
    url: str, out: Path, baseline: Path | None = None
) -> tuple[int, dict[str, dict[str, int]], str]:
    """Run `conformance server --suite all` (with a baseline of expected failures); returns
    (exit code, per-scenario check counts by status, output)."""
    if not (NODE_BIN / "conformance").exists():
        pytest.skip("tests/node dependencies not installed (make node-deps)")
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [
            str(NODE_BIN / "node"),
            str(NODE_BIN / "conformance"),
            "server",
            "--url",
            url,
            "--suite",
            "all",
            "-o",
            str(out),
            *(["--expected-failures", str(baseline)] if baseline else []),
        ],
        cwd=ROOT / "tests" / "node",
        env=env,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
    )
    results: dict[str, dict[str, int]] = {}
    for checks_file in sorted(out.glob("server-*/checks.json")):
        scenario = checks_file.parent.name.removeprefix("server-").rsplit("-20", 1)[0]
        counts = results.setdefault(scenario, {})
        for check in json.loads(checks_file.read_text()):
            counts[check["status"]] = counts.get(check["status"], 0) + 1
    return done.returncode, results, done.stdout + done.stderr


def _failing(results: dict[str, dict[str, int]]) -> set[str]:
    return {s for s, c in results.items() if c.get("FAILURE") or c.get("WARNING")}


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


def test_through_crossway(fixture_url: str, tmp_path: Path) -> None:
    port = free_port()
    config = f"""
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
    with start_gateway(config, port=port) as gw:
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
