"""The stream masker: matches split across any chunking are masked whole, the hold-back is
bounded, blocks raise before any of the match is released, and several guards chain."""

from __future__ import annotations

import random
from typing import Any

import pytest

from crossway.config.guardrails import GuardrailsConfig
from crossway.guard.engine import Finding, Guard
from crossway.guard.stream import StreamBlocked, StreamMasker

TEXT = (
    "Hello! Write to jane.doe@example.com or call +1 415 555 2671 today. "
    "The backup address is ops-team@mail.example.org; thanks. " * 3
)


def _guard(window: int = 64, **detector: Any) -> Guard:
    spec = detector or {"type": "pii", "entities": ["email", "phone"], "action": "mask"}
    return Guard(
        GuardrailsConfig(type="guardrails", name="g", detectors=[spec], stream_window=window)
    )


def _whole(guard: Guard, text: str) -> str:
    return Guard.mask(text, guard.scan(text, "response"))


def _streamed(guard: Guard, pieces: list[str], seen: list[Finding] | None = None) -> str:
    masker = StreamMasker(guard, "response", (seen if seen is not None else []).extend)
    out = [masker.feed(p) for p in pieces]
    out.append(masker.flush())
    return "".join(out)


def _split(text: str, rng: random.Random, most: int) -> list[str]:
    pieces, at = [], 0
    while at < len(text):
        n = rng.randint(1, most)
        pieces.append(text[at : at + n])
        at += n
    return pieces


@pytest.mark.parametrize("most", [1, 2, 3, 7, 40, 500])
def test_any_chunking_gives_the_whole_text_result(most: int) -> None:
    guard = _guard()
    expected = _whole(guard, TEXT)
    assert "<EMAIL>" in expected and "<PHONE>" in expected and "@" not in expected
    rng = random.Random(most)
    for _ in range(20):
        assert _streamed(guard, _split(TEXT, rng, most)) == expected


def test_hold_back_is_bounded_by_the_window() -> None:
    guard = _guard(window=32)
    masker = StreamMasker(guard, "response", lambda f: None)
    released = 0
    fed = 0
    for ch in "plain words without anything to find, " * 20:
        fed += 1
        released += len(masker.feed(ch))
        assert fed - released <= 32  # never more than the window held
    assert released + len(masker.flush()) == fed


def test_first_text_is_released_before_the_stream_ends() -> None:
    guard = _guard(window=16)
    masker = StreamMasker(guard, "response", lambda f: None)
    out = "".join(masker.feed(c) for c in "a" * 40)
    assert out  # released as it flows, not at the end


def test_block_raises_before_any_part_of_the_match_is_released() -> None:
    guard = _guard(window=32, type="pii", entities=["credit_card"], action="block")
    masker = StreamMasker(guard, "response", lambda f: None)
    released = ""
    with pytest.raises(StreamBlocked) as err:
        for ch in "the card is 4111 1111 1111 1111, keep it safe and sound please":
            released += masker.feed(ch)
        masker.flush()
    assert err.value.finding.detector == "credit_card"
    assert "4111" not in released


def test_findings_are_reported_once_each() -> None:
    guard = _guard()
    seen: list[Finding] = []
    _streamed(guard, list(TEXT), seen)
    whole = guard.scan(TEXT, "response")
    assert sorted(f.entity for f in seen) == sorted(f.entity for f in whole)


def test_unicode_text_streams_unchanged() -> None:
    guard = _guard(window=8)
    text = "naïve café — 東京 🚀 " * 10
    assert _streamed(guard, list(text)) == text


def test_a_word_longer_than_the_lookahead_but_within_the_window_is_held_whole() -> None:
    guard = _guard(window=32)  # lookahead 16; the address is 27 characters
    text = "mail me at jane.doe.smith@example.com soon, thanks a lot"
    assert _streamed(guard, list(text)) == "mail me at <EMAIL> soon, thanks a lot"
