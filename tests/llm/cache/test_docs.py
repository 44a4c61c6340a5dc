"""Every config in docs/cache.md is valid and builds an LLM backend with its cache; every cache
key is documented on the page."""

from __future__ import annotations

import re

import pytest

from crossway.config.llm import LlmBackendConfig
from crossway.config.llm_cache import CacheEmbeddingConfig, LlmCacheConfig, SemanticCacheConfig
from crossway.config.loader import parse_config
from crossway.llm.backend import LlmBackend
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "cache.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, re.S)


def test_the_page_has_configs() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_config_block_is_valid(block: str) -> None:
    config = parse_config(block, "docs/cache.md", env={"OPENAI_API_KEY": "sk-x"})
    built = 0
    for name, backend in config.backends.items():
        if isinstance(backend, LlmBackendConfig):
            assert backend.cache is not None
            assert LlmBackend(name, backend, 1 << 20).cache is not None
            built += 1
    assert built


def test_every_key_is_documented() -> None:
    for model, prefix in (
        (LlmCacheConfig, ""),
        (SemanticCacheConfig, "semantic."),
        (CacheEmbeddingConfig, "semantic.embedding."),
    ):
        for field in model.model_fields:
            assert f"| `{prefix}{field}` |" in DOC, field
