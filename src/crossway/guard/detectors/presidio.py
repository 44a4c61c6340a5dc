"""Microsoft Presidio's analyzer as a detector, when it is installed.

Presidio is optional: `presidio-analyzer` and a spaCy model (`en_core_web_sm`, or another pipeline
of the configured language) are not dependencies of Crossway. The first installed pipeline of
`MODEL_CANDIDATES` is used, or the one a `model` names (nothing is downloaded at run time). Without them the detector is
refused at load, naming what to install. Presidio entity names become the placeholder stem
(`PERSON`, `LOCATION`, `EMAIL_ADDRESS`, ...).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any, Final

from crossway.guard.detectors.base import Match

INSTALL_HINT: Final = "install presidio-analyzer and a spaCy model (e.g. en_core_web_sm)"


MODEL_CANDIDATES: Final = ("{lang}_core_web_lg", "{lang}_core_web_md", "{lang}_core_web_sm",
                           "{lang}_core_news_lg", "{lang}_core_news_md", "{lang}_core_news_sm")  # fmt: skip
"""spaCy pipelines tried, in order, when no model is configured: the first installed one is
used (Presidio's own default would download `en_core_web_lg` at run time)."""


def _installed_model(language: str) -> str | None:
    for candidate in MODEL_CANDIDATES:
        name = candidate.format(lang=language)
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def _offline_tldextract() -> None:
    """Presidio's e-mail and URL recognizers call `tldextract.extract`, which fetches the
    public suffix list over the network on first use (a blocked DNS lookup in request code);
    use the snapshot tldextract ships instead."""
    try:
        import tldextract  # type: ignore[import-not-found]
    except ImportError:
        return
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=())


def _analyzer_engine(language: str, model: str | None) -> Any:
    try:
        from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found]
        from presidio_analyzer.nlp_engine import (  # type: ignore[import-not-found]
            NlpEngineProvider,
        )
    except ImportError:
        raise ValueError(f"presidio detector: {INSTALL_HINT}") from None
    _offline_tldextract()
    name = model or _installed_model(language)
    if name is None or importlib.util.find_spec(name) is None:
        raise ValueError(
            f"presidio detector: no spaCy model {name or 'for ' + repr(language)} is installed; "
            f"{INSTALL_HINT}"
        )
    try:
        provider = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": language, "model_name": name}],
            }
        )
        return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=[language])
    except (OSError, ValueError, ImportError) as exc:
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
        model: str | None = None,
    ) -> None:
        self.name = name
        self._engine = _analyzer_engine(language, model)
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
