"""Microsoft Presidio's analyzer as a detector, when it is installed.

Presidio is optional: `presidio-analyzer` and a spaCy model (`en_core_web_sm`, or the model of
the configured language) are not dependencies of Crossway. Without them the detector is
refused at load, naming what to install. Presidio entity names become the placeholder stem
(`PERSON`, `LOCATION`, `EMAIL_ADDRESS`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from crossway.guard.detectors.base import Match

INSTALL_HINT: Final = "install presidio-analyzer and a spaCy model (e.g. en_core_web_sm)"


def _analyzer_engine() -> Any:
    try:
        from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found]
    except ImportError:
        raise ValueError(f"presidio detector: {INSTALL_HINT}") from None
    try:
        return AnalyzerEngine()
    except (OSError, ValueError, ImportError) as exc:  # no spaCy model for the language
        raise ValueError(f"presidio detector: {INSTALL_HINT} ({exc})") from None


class PresidioDetector:
    """Findings of Presidio's `AnalyzerEngine` above `score_threshold`."""

    def __init__(
        self,
        name: str = "presidio",
        *,
        entities: Sequence[str] | None = None,
        language: str = "en",
        score_threshold: float = 0.5,
    ) -> None:
        self.name = name
        self._engine = _analyzer_engine()
        self._entities = list(entities) if entities else None
        self._language = language
        self._threshold = score_threshold
        if self._entities:
            known = set(self._engine.get_supported_entities(language=language))
            unknown = [e for e in self._entities if e not in known]
            if unknown:
                raise ValueError(
                    f"presidio detector: unknown entities {unknown}; known: {sorted(known)}"
                )

    def find(self, text: str) -> list[Match]:
        results = self._engine.analyze(
            text=text,
            language=self._language,
            entities=self._entities,
            score_threshold=self._threshold,
        )
        return [Match(r.start, r.end, str(r.entity_type)) for r in results]


__all__ = ["INSTALL_HINT", "PresidioDetector"]
