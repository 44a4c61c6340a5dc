"""The guard engine: overlap resolution, masking, per-direction actions, config errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from crossway.config.guardrails import GuardrailsConfig
from crossway.guard.engine import Finding, Guard, _resolve, blocking


def _guard(*detectors: dict[str, object]) -> Guard:
    return Guard(GuardrailsConfig(type="guardrails", name="g", detectors=list(detectors)))


def test_actions_per_direction() -> None:
    guard = _guard(
        {"type": "pii", "entities": ["email"], "response": "mask"},
        {"type": "pii", "entities": ["credit_card"], "request": "block"},
    )
    text = "mail a@example.com card 4111111111111111"
    request = guard.scan(text, "request")
    response = guard.scan(text, "response")
    assert [(f.detector, f.action) for f in request] == [("credit_card", "block")]
    assert [(f.detector, f.action) for f in response] == [("email", "mask")]
    assert Guard.mask(text, response) == "mail <EMAIL> card 4111111111111111"
    assert blocking(request) is not None and blocking(response) is None


def test_action_sets_both_directions_and_defaults_to_block() -> None:
    both = _guard({"type": "pii", "entities": ["email"], "action": "log"})
    assert [f.action for f in both.scan("x@example.com", "request")] == ["log"]
    assert [f.action for f in both.scan("x@example.com", "response")] == ["log"]
    default = _guard({"type": "pii", "entities": ["email"]})
    assert [f.action for f in default.scan("x@example.com", "response")] == ["block"]
    assert not _guard({"type": "pii", "entities": ["email"], "request": "mask"}).acts_on("response")


def _f(start: int, end: int, action: str = "mask") -> Finding:
    return Finding("d", "E", action, start, end, "<E>")  # type: ignore[arg-type]


def test_overlaps_keep_the_earlier_then_the_longer_and_never_drop_a_block() -> None:
    assert [(f.start, f.end) for f in _resolve([_f(5, 9), _f(0, 6), _f(0, 3)])] == [(0, 6)]
    kept = _resolve([_f(0, 10), _f(2, 4, "block")])
    assert blocking(kept) is not None


def test_mask_every_replaces_all_findings() -> None:
    text = "abc SECRET def"
    findings = [Finding("d", "X", "log", 4, 10, "<X>")]
    assert Guard.mask(text, findings) == text
    assert Guard.mask(text, findings, every=True) == "abc <X> def"


def test_placeholder_format_and_custom_placeholder() -> None:
    guard = Guard(
        GuardrailsConfig(
            type="guardrails",
            detectors=[
                {"type": "pii", "entities": ["email"], "action": "mask"},
                {"type": "regex", "name": "ticket", "pattern": r"TICKET-\d+", "action": "mask"},
                {
                    "type": "words",
                    "name": "w",
                    "words": ["zebra"],
                    "action": "mask",
                    "placeholder": "[animal]",
                },
            ],
            placeholder_format="[{entity}]",
        )
    )
    text = "a@example.com TICKET-12 zebra"
    assert Guard.mask(text, guard.scan(text, "response")) == "[EMAIL] [TICKET] [animal]"


@pytest.mark.parametrize(
    "detector",
    [
        {"type": "regex", "pattern": r"(a)\1"},  # back-reference: RE2 refuses it
        {"type": "regex", "pattern": r"x*"},  # matches the empty string
        {"type": "regex", "pattern": r"(unclosed"},
        {"type": "secrets", "rules": ["no-such-rule"]},
    ],
)
def test_bad_detectors_are_config_errors(detector: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as err:
        GuardrailsConfig(type="guardrails", detectors=[detector])
    assert "detectors[0]" in str(err.value)


def test_placeholder_format_needs_the_entity() -> None:
    with pytest.raises(ValidationError):
        GuardrailsConfig(
            type="guardrails", detectors=[{"type": "injection"}], placeholder_format="*"
        )
