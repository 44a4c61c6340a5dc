"""Every config block in docs/a2a.md is a valid config, and examples/a2a.yaml builds."""

from __future__ import annotations

import re
import secrets

import pytest

from crossway.config import parse_config
from crossway.config.a2a import A2aBackendConfig
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "a2a.md").read_text()
BLOCKS = [b for b in re.findall(r"```yaml\n(.*?)```", DOC, re.S) if "backends:" in b]


def test_the_page_has_configs() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_config_block_is_valid(block: str) -> None:
    needed = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", block)
    config = parse_config(block, "docs/a2a.md", env={n: secrets.token_urlsafe(32) for n in needed})
    assert any(isinstance(b, A2aBackendConfig) for b in config.backends.values())
