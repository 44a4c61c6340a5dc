"""The prompt normalization before wordllama embeds it: meaning-preserving changes vanish,
meaning-changing symbols stay, and it moves similarities the way the threshold assumes."""

from __future__ import annotations

import asyncio

import pytest

from crossway.config.llm_cache import DEFAULT_SEMANTIC_THRESHOLD
from crossway.llm.cache.embedder import WordLlamaEmbedder, normalize_prompt


def test_case_contractions_possessives_and_punctuation_vanish() -> None:
    assert normalize_prompt("What\u2019s France's CAPITAL?") == "what is france capital"
    assert normalize_prompt("I don't know, it's   late!") == "i do not know it is late"
    assert normalize_prompt("What is the capital of France?") == normalize_prompt(
        "what is the capital of france"
    )


def test_symbols_that_change_the_question_stay() -> None:
    assert normalize_prompt("What is 2+2?") != normalize_prompt("What is 2*2?")
    assert normalize_prompt("x = y - 1") == "x = y - 1"


@pytest.fixture(scope="module")
def embedder() -> WordLlamaEmbedder:
    e = WordLlamaEmbedder(None)
    asyncio.run(e.load())
    return e


def _sim(e: WordLlamaEmbedder, a: str, b: str) -> float:
    return float(e.embed_now(a) @ e.embed_now(b))


def test_paraphrases_clear_the_threshold_and_near_misses_do_not(
    embedder: WordLlamaEmbedder,
) -> None:
    assert _sim(embedder, "What is the capital of France?", "what's the capital of france") > 0.99
    assert _sim(embedder, "What is the capital of France?", "Tell me the capital of France") >= (
        DEFAULT_SEMANTIC_THRESHOLD
    )
    # Raw, these scored 0.965 (an answer about HTTP served for HTTPS).
    assert _sim(embedder, "What does HTTP stand for?", "What does HTTPS stand for?") < (
        DEFAULT_SEMANTIC_THRESHOLD
    )
    assert _sim(embedder, "What is the capital of France?", "What is the capital of Germany?") < (
        DEFAULT_SEMANTIC_THRESHOLD
    )
