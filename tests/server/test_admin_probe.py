"""The readiness probe behind `/readyz`: each backend's upstreams, probed in the background
(TCP connect, command lookup), the cache read without waiting, the config re-read on change."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from crossway.config import load_config
from crossway.server.admin import ConfigView
from crossway.server.admin_probe import UpstreamProbe, backend_targets
from tests.helpers import READY_TIMEOUT, free_port

CONFIG = """\
routes: []
backends:
  web: {{type: http, url: "http://127.0.0.1:{port}"}}
  tools:
    type: mcp
    servers:
      local: {{type: stdio, command: "{python}"}}
      missing: {{type: stdio, command: no-such-command-anywhere}}
  agents:
    type: a2a
    agents:
      inline: {{card: {{name: inline, url: "http://127.0.0.1:1/"}}}}
  llm:
    type: llm
    providers:
      bedrock: {{type: bedrock, region: us-east-1}}
"""


async def _rounds(probe: UpstreamProbe, after: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while probe.rounds <= after:
        assert time.monotonic() < deadline, "the probe made no progress"
        await asyncio.sleep(0.01)


async def test_probe_reports_each_backend_and_follows_changes(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path = tmp_path / "crossway.yaml"
    path.write_text(CONFIG.format(port=port, python=sys.executable))
    view = ConfigView(str(path), load_config(str(path)))
    probe = UpstreamProbe(view, interval=0.02)
    before = probe.report()
    assert before["web"]["reachable"] is None  # not probed yet: unknown, not "down"
    probe.start()
    try:
        await _rounds(probe, 0)
        report: dict[str, Any] = probe.report()
        assert report["web"]["reachable"] is True
        assert report["web"]["upstreams"]["url"]["address"] == f"127.0.0.1:{port}"
        tools = report["tools"]
        assert tools["reachable"] is False
        assert tools["upstreams"]["local"]["reachable"] is True
        assert tools["upstreams"]["missing"] == {
            "kind": "command",
            "address": "no-such-command-anywhere",
            "reachable": False,
            "error": "command not found",
            "checked_at": tools["upstreams"]["missing"]["checked_at"],
        }
        # Nothing to connect to: listed, but neither up nor down.
        assert report["agents"]["reachable"] is None
        assert report["agents"]["upstreams"]["inline"]["kind"] == "none"
        assert report["llm"]["reachable"] is None

        # The upstream goes away: a later round says so.
        server.close()
        await server.wait_closed()
        seen = probe.rounds
        await _rounds(probe, seen + 1)
        web = probe.report()["web"]
        assert web["reachable"] is False and web["upstreams"]["url"]["error"]

        # A changed config file changes what is probed.
        path.write_text("routes: []\nbackends:\n  other: {type: http, url: 'http://127.0.0.1:9'}\n")
        os.utime(path, (time.time() + 5, time.time() + 5))
        seen = probe.rounds
        await _rounds(probe, seen + 1)
        assert set(probe.report()) == {"other"}
    finally:
        await probe.aclose()


def test_targets_of_every_backend_kind(tmp_path: Path) -> None:
    path = tmp_path / "crossway.yaml"
    path.write_text(CONFIG.format(port=free_port(), python=sys.executable))
    targets = backend_targets(load_config(str(path)))
    assert set(targets) == {"web", "tools", "agents", "llm"}
    assert [t.kind for t in targets["tools"]] == ["command", "command"]
    assert [t.kind for t in targets["llm"]] == ["none"]  # bedrock: derived per request
