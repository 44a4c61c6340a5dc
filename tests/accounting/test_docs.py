"""Every config block in docs/keys-and-budgets.md is valid (fragments inside a minimal config)."""

from __future__ import annotations

import re
import textwrap

import pytest

from crossway.config.loader import parse_config
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "keys-and-budgets.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, re.S)
BACKEND = """
backends:
  llm: {type: llm, providers: {p: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: x}}}
"""
ENV = {"REDIS_URL": "redis://127.0.0.1:6379/0", "OPENAI_API_KEY": "sk-x"}


def _whole(block: str) -> str:
    """A whole config around a documented fragment."""
    if re.search(r"^routes:", block, re.M):
        return block
    if block.startswith("policies:"):
        body = textwrap.indent(block, "    ")
        redis = "accounting: {store: {type: redis, url: redis://127.0.0.1:6379/0}}\n"
        return redis + "routes:\n  - name: r\n    backend: llm\n" + body + BACKEND
    if block.startswith("- type:"):
        return (
            "routes:\n  - name: r\n    backend: llm\n    policies:\n"
            + textwrap.indent(block, "      ")
            + BACKEND
        )
    if block.startswith("backends:"):
        return "routes:\n  - name: r\n    backend: llm\n" + block
    return block + "routes:\n  - name: r\n    backend: llm\n" + BACKEND


def test_the_page_has_configs() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_config_block_is_valid(block: str) -> None:
    parse_config(_whole(block), "docs/keys-and-budgets.md", env=ENV)
