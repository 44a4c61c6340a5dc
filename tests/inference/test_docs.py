"""Every whole config in docs/inference-routing.md is valid and builds its LLM backend."""

from __future__ import annotations

import re

import pytest

from crossway.config.llm import LlmBackendConfig
from crossway.config.loader import parse_config
from crossway.llm.backend import LlmBackend
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "inference-routing.md").read_text()
BLOCKS = [b for b in re.findall(r"```yaml\n(.*?)```", DOC, re.S) if b.startswith("routes:")]


def test_the_page_has_a_whole_config() -> None:
    assert BLOCKS


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_config_block_is_valid(block: str) -> None:
    env = {"CROSSWAY_POOL_ENDPOINTS": "http://127.0.0.1:8001/v1,http://127.0.0.1:8002/v1"}
    config = parse_config(block, "docs/inference-routing.md", env=env)
    built = 0
    for name, backend in config.backends.items():
        if isinstance(backend, LlmBackendConfig):
            LlmBackend(name, backend, 1 << 20)
            built += 1
    assert built
