"""Config of the `guardrails` policy: detectors over the content of LLM, MCP and A2A traffic.

```yaml
policies:
  - type: guardrails
    name: pii
    detectors:
      - {type: pii, entities: [email, phone], response: mask}
      - {type: pii, entities: [credit_card], request: block}
      - {type: secrets, action: block}
      - {type: injection, request: block}
      - {type: regex, name: codename, pattern: 'project-[a-z]{4}', action: mask}
      - {type: words, name: banned, words: [foo, bar], request: block}
```

Each detector acts per direction: `request` (what the caller sends: prompts, tool results sent
back, MCP tool arguments, A2A messages sent) and `response` (what comes back: answers, tool-call
arguments, MCP tool results, prompts and resources read, A2A messages and artifacts returned).
`action` sets both directions; `request` / `response` override it for one. Actions: `block` (the
caller gets an error naming the guard and the detector, never the matched text), `mask` (the
match becomes a typed placeholder such as `<EMAIL>`), `log` (counted and logged only), `off`.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field, SecretStr, model_validator

from crossway.config.base import StrictModel
from crossway.config.common import UpstreamTls

Action = Literal["block", "mask", "log", "off"]
Direction = Literal["request", "response"]
PiiEntity = Literal["email", "phone", "credit_card", "iban", "us_ssn", "ip_address"]
FailMode = Literal["open", "closed"]

PII_ENTITIES: Final[tuple[PiiEntity, ...]] = (
    "email",
    "phone",
    "credit_card",
    "iban",
    "us_ssn",
    "ip_address",
)
DEFAULT_STREAM_WINDOW: Final = 128
"""Characters of a streamed answer held back per channel, so a match split across chunks is
still found whole (the longest entity a stream can mask without buffering it all)."""
MAX_STREAM_WINDOW: Final = 65536
DEFAULT_PHONE_REGIONS: Final = ("US",)
DEFAULT_EXTERNAL_TIMEOUT: Final = 2.0
MAX_PATTERN_LENGTH: Final = 4096
MAX_WORDS: Final = 100_000


class _Detector(StrictModel):
    """What every detector has: a name, and what it does in each direction."""

    name: str | None = None
    """Name in errors, metrics and logs (default: the detector's type, or the PII entity)."""
    action: Action | None = None
    """What a finding does in both directions (default `block`); `request`/`response`
    override it for one direction."""
    request: Action | None = None
    """The action on requests (what the caller sends)."""
    response: Action | None = None
    """The action on responses (what comes back to the caller)."""

    def action_for(self, direction: Direction) -> Action:
        """The effective action in one direction. With only `request` or `response` given,
        the other direction is `off`; with none of the three, both are `block`."""
        own = self.request if direction == "request" else self.response
        if own is not None:
            return own
        if self.action is not None:
            return self.action
        if self.request is not None or self.response is not None:
            return "off"
        return "block"


class PiiDetector(_Detector):
    """Personal data, validated rather than matched by bare regex: e-mail addresses, phone
    numbers (`phonenumbers`), payment card numbers (Luhn), IBANs (mod-97), US social security
    numbers (area/group/serial rules) and IP addresses (`ipaddress`)."""

    type: Literal["pii"]
    """Detector kind."""
    entities: list[PiiEntity] = Field(default_factory=lambda: list(PII_ENTITIES))
    """Which entities to find (default all)."""
    phone_regions: list[str] = Field(default_factory=lambda: list(DEFAULT_PHONE_REGIONS))
    """ISO 3166 regions whose national phone formats are recognised without a `+` prefix
    (international numbers with `+` are found whatever the region)."""


class SecretsDetector(_Detector):
    """Credentials: cloud keys, GitHub / GitLab / Slack / Stripe / OpenAI tokens, private keys,
    JWTs, and more (rules after detect-secrets' plugins, applied to free text)."""

    type: Literal["secrets"]
    """Detector kind."""
    rules: list[str] | None = None
    """Which rules to apply, by name (default all; unknown names are refused at load)."""


class InjectionDetector(_Detector):
    """Prompt-injection and jailbreak heuristics (the MCP tool-description scanner's rules,
    extended: instruction overrides, role changes, concealment, exfiltration, hidden unicode)."""

    type: Literal["injection"]
    """Detector kind."""


class RegexDetector(_Detector):
    """A custom regular expression, compiled with RE2 (linear time: a pattern cannot
    backtrack catastrophically; constructs RE2 lacks, like back-references, are refused)."""

    type: Literal["regex"]
    """Detector kind."""
    pattern: str = Field(min_length=1, max_length=MAX_PATTERN_LENGTH)
    """The expression (RE2 syntax)."""
    ignore_case: bool = False
    """Match regardless of case."""
    placeholder: str | None = None
    """What a masked match becomes (default `<NAME>` from the detector's name)."""


class WordsDetector(_Detector):
    """A list of words or phrases, matched whole-word and regardless of case."""

    type: Literal["words"]
    """Detector kind."""
    words: list[str] = Field(min_length=1, max_length=MAX_WORDS)
    """The words or phrases."""
    placeholder: str | None = None
    """What a masked match becomes (default `<NAME>` from the detector's name)."""


class PresidioDetector(_Detector):
    """Microsoft Presidio's analyzer, when `presidio-analyzer` and a spaCy model are
    installed (refused at load otherwise, naming what to install)."""

    type: Literal["presidio"]
    """Detector kind."""
    entities: list[str] | None = None
    """Presidio entity names (default all it knows)."""
    language: str = "en"
    """Language of the analysed text."""
    score_threshold: float = Field(default=0.5, ge=0, le=1)
    """Least confidence for a finding."""


class _External(_Detector):
    """An external check over HTTP (through the one outbound client)."""

    url: str
    """Where to send the content."""
    api_key: SecretStr | None = None
    """Sent as `Authorization: Bearer ...`."""
    timeout: float = Field(default=DEFAULT_EXTERNAL_TIMEOUT, gt=0)
    """Seconds one check may take."""
    fail: FailMode = "closed"
    """When the service is down, slow or answers garbage: `closed` refuses the content (as a
    block), `open` lets it through (logged and counted)."""
    tls: UpstreamTls | None = None
    """TLS options for the service."""


class ModerationDetector(_External):
    """An OpenAI-moderation-compatible endpoint (`POST {url}` with `{"input": [...]}`, an answer
    with `results[].flagged` and `categories`)."""

    type: Literal["moderation"]
    """Detector kind."""
    model: str | None = None
    """The `model` sent in the request (omitted when unset)."""
    categories: list[str] | None = None
    """Only these categories count (default: any flagged result)."""


class WebhookDetector(_External):
    """A generic webhook (contract in docs/guardrails.md): it gets the texts and answers
    `allow`, `block` (with a reason) or `rewrite` (with the replacement texts)."""

    type: Literal["webhook"]
    """Detector kind."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers (values are secrets)."""


DetectorConfig = Annotated[
    PiiDetector
    | SecretsDetector
    | InjectionDetector
    | RegexDetector
    | WordsDetector
    | PresidioDetector
    | ModerationDetector
    | WebhookDetector,
    Field(discriminator="type"),
]
"""One configured detector."""


class GuardrailsConfig(StrictModel):
    """A guard: detectors applied to request and response content on every layer it covers
    (LLM messages and answers, streamed too; MCP tool arguments and results, prompts and
    resources; A2A messages and artifacts)."""

    type: Literal["guardrails"]
    """Policy kind."""
    name: str = "guardrails"
    """The guard's name (in errors, metrics and the request log)."""
    detectors: list[DetectorConfig] = Field(min_length=1)
    """What to look for and what to do about it, in order."""
    stream_window: int = Field(default=DEFAULT_STREAM_WINDOW, ge=1, le=MAX_STREAM_WINDOW)
    """Characters of a streamed answer held back per channel (content, each tool call's
    arguments) so a match split across chunks or events is masked whole; the longest entity
    a stream can mask, and the most a stream's first token is delayed by."""
    placeholder_format: str = "<{entity}>"
    """How a masked match reads; `{entity}` is the upper-case entity (`<EMAIL>`)."""

    @model_validator(mode="after")
    def _compiles(self) -> GuardrailsConfig:
        if "{entity}" not in self.placeholder_format:
            raise ValueError("placeholder_format must contain {entity}")
        # Compile the detectors now, so a bad pattern or word list is a located config error
        # (the policy compiles them again for its snapshot; detectors are pure).
        from crossway.guard.detectors import build_detectors

        for i, detector in enumerate(self.detectors):
            try:
                build_detectors(detector)
            except ValueError as exc:
                raise ValueError(f"detectors[{i}] ({detector.type}): {exc}") from None
        return self


__all__ = [
    "PII_ENTITIES",
    "Action",
    "DetectorConfig",
    "Direction",
    "GuardrailsConfig",
    "InjectionDetector",
    "ModerationDetector",
    "PiiDetector",
    "PresidioDetector",
    "RegexDetector",
    "SecretsDetector",
    "WebhookDetector",
    "WordsDetector",
]
