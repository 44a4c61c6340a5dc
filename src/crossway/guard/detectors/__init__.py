"""The built-in detectors, and `build_detectors`, which compiles a detector config.

    base.py        `Match` and the `Detector` protocol
    pii.py         e-mail, phone, payment card, IBAN, US SSN, IP address (validated)
    secrets.py     credentials (detect-secrets' rules on free text, and a few more)
    injection.py   prompt-injection and jailbreak heuristics (shared with the MCP scanner)
    custom.py      a custom RE2 regular expression, a word list
    presidio.py    Microsoft Presidio, when installed

Config errors (an unknown secrets rule, a pattern RE2 refuses, Presidio not installed) raise
`ValueError` at load, with a message naming the problem.
"""

from __future__ import annotations

from crossway.config.guardrails import (
    DetectorConfig,
    InjectionDetector,
    ModerationDetector,
    PiiDetector,
    PresidioDetector,
    RegexDetector,
    SecretsDetector,
    WebhookDetector,
    WordsDetector,
)
from crossway.guard.detectors.base import Detector, Match


def build_detectors(config: DetectorConfig) -> list[Detector]:
    """The compiled detectors of one config entry: one per entity for `pii`, one otherwise,
    none for the external kinds (`moderation`, `webhook`: `crossway.guard.external`)."""
    # Imported here: the MCP scanner imports `injection` alone, without the PII and secrets
    # machinery.
    from crossway.guard.detectors import custom, injection, pii, presidio, secrets

    if isinstance(config, PiiDetector):
        if not config.entities:
            raise ValueError("pii: entities is empty (omit it for all entities)")
        built: list[Detector] = []
        for entity in dict.fromkeys(config.entities):
            name = config.name or entity
            if entity == "phone":
                built.append(pii.PhoneDetector(name, regions=config.phone_regions))
            else:
                built.append(pii.PII_DETECTORS[entity](name))
        return built
    if isinstance(config, SecretsDetector):
        return [secrets.SecretsDetector(config.name or "secrets", rules=config.rules)]
    if isinstance(config, InjectionDetector):
        return [injection.InjectionDetector(config.name or "injection")]
    if isinstance(config, RegexDetector):
        return [
            custom.RegexDetector(
                config.name or "regex", config.pattern, ignore_case=config.ignore_case
            )
        ]
    if isinstance(config, WordsDetector):
        return [custom.WordsDetector(config.name or "words", config.words)]
    if isinstance(config, PresidioDetector):
        return [
            presidio.PresidioDetector(
                config.name or "presidio",
                entities=config.entities,
                language=config.language,
                score_threshold=config.score_threshold,
                model=getattr(config, "model", None),
            )
        ]
    if isinstance(config, ModerationDetector | WebhookDetector):
        return []
    raise ValueError(f"unknown detector type {type(config).__name__}")


__all__ = ["Detector", "Match", "build_detectors"]
