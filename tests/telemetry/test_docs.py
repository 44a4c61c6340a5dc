"""docs/observability.md names every metric family Crossway declares, and its configs load."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

import crossway.server.admin_probe as probe
import crossway.telemetry.metrics
import crossway.telemetry.metrics_mcp_a2a  # noqa: F401  (declares the MCP/A2A families)
from crossway.config.loader import parse_config
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "observability.md").read_text()


def test_every_metric_family_is_documented() -> None:
    declared = {
        family.name
        for family in REGISTRY.collect()
        if family.name.startswith(("crossway_", "gen_ai_"))
    }
    declared.add(probe.UPSTREAM_UP_METRIC)
    assert declared, "no metric families found"
    # The family's exposed name in backticks (a counter is exposed with `_total`), so a
    # longer metric that merely starts with the name does not count.
    missing = sorted(
        name for name in declared if not re.search(rf"`{re.escape(name)}(_total)?`", DOC)
    )
    assert not missing, f"metrics missing from docs/observability.md: {missing}"


def test_config_blocks_load() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC, re.S)
    assert len(blocks) >= 3
    for block in blocks:
        parse_config(block, "docs/observability.md", env={})
