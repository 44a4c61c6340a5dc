"""One LLM gateway (with its mock providers) shared by the end-to-end tests under tests/llm."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.llm.harness import LlmStack, llm_stack


@pytest.fixture(scope="session")
def _llm_stack() -> Iterator[LlmStack]:
    with llm_stack() as stack:
        yield stack


@pytest.fixture
def stack(_llm_stack: LlmStack) -> Iterator[LlmStack]:
    """The shared gateway, with every mock's script and recordings cleared."""
    _llm_stack.reset()
    yield _llm_stack
    _llm_stack.reset()
