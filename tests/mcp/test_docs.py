"""Every config in docs/mcp.md is valid and builds an MCP backend."""

from __future__ import annotations

import re
import secrets

import pytest

from crossway.config.loader import parse_config
from crossway.config.mcp import McpBackendConfig
from crossway.mcp.backend import McpBackend
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "mcp.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, re.S)


def test_the_page_has_configs() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_config_block_is_valid(block: str) -> None:
    # A `${VAR}` with no default in a secret field must be set (unset, it is a config error).
    needed = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", block)
    config = parse_config(
        block, "docs/mcp.md", env={name: secrets.token_urlsafe(32) for name in needed}
    )
    backends = [b for b in config.backends.items() if isinstance(b[1], McpBackendConfig)]
    assert backends
    for name, backend in backends:
        McpBackend.from_config(name, backend)
