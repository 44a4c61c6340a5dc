"""Every guard config in docs/guardrails.md is valid and builds its policy; every detector
type and guard key is documented on the page; the example's curl answers are what it says."""

from __future__ import annotations

import re
from typing import Any

import pytest
from ruamel.yaml import YAML

from crossway.config.guardrails import GuardrailsConfig
from crossway.policy.guardrails import GuardBlocked, GuardrailPolicy
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "guardrails.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, re.S)


def _guards(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        if value.get("type") == "guardrails":
            return [value]
        return [g for v in value.values() for g in _guards(v)]
    if isinstance(value, list):
        return [g for v in value for g in _guards(v)]
    return []


def test_the_page_has_configs() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_every_guard_on_the_page_is_valid(block: str) -> None:
    guards = _guards(YAML(typ="safe").load(re.sub(r"\$\{[^}]*\}", "env-value", block)))
    assert guards
    for guard in guards:
        GuardrailPolicy(GuardrailsConfig.model_validate(guard))


def test_every_detector_type_and_guard_key_is_documented() -> None:
    for kind in (
        "pii",
        "secrets",
        "injection",
        "regex",
        "words",
        "presidio",
        "moderation",
        "webhook",
    ):
        assert f"| `{kind}` |" in DOC, kind
    for key in GuardrailsConfig.model_fields:
        assert f"`{key}`" in DOC, key


def test_the_documented_block_message_is_the_real_one() -> None:
    exc = GuardBlocked("pii", "credit_card", "request")
    assert exc.message in DOC.replace("\n#      ", " ")
