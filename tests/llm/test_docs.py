"""Every config in docs/llm.md is valid, and builds a working LLM backend."""

from __future__ import annotations

import re

import pytest

from crossway.config.llm import LlmBackendConfig
from crossway.config.loader import parse_config
from crossway.llm.backend import LlmBackend
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "llm.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, re.S)


def test_the_page_has_configs() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_config_block_is_valid(block: str) -> None:
    config = parse_config(block, "docs/llm.md", env={})
    for name, backend in config.backends.items():
        if isinstance(backend, LlmBackendConfig):
            LlmBackend(name, backend, 1 << 20)  # providers and routes build
