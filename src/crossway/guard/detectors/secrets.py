"""Credentials in free text, after detect-secrets' rules.

detect-secrets scans files line by line through its own framework (settings, filters,
baselines); a guard scans prose and JSON strings, so this module takes only the compiled
patterns (`denylist`) of its regex plugins and applies them to the text, reporting the span of
the secret itself (the password of a `https://user:pass@host` URL, the value of an
`aws_secret_access_key = "..."` assignment, a whole token). Its entropy and keyword plugins
are left out: on prose they flag ordinary words. A few rules detect-secrets 1.5 lacks are
added (Anthropic, Google API keys, Hugging Face tokens, fine-grained GitHub tokens, whole PEM
private-key blocks).

Every rule has literal cues (one must occur in the text) so text without them skips its
regex; matches are `SECRET`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

from crossway.guard.detectors._prefilter import GateSet
from crossway.guard.detectors.base import Match
from crossway.guard.detectors.custom import Re2Spans

SECRET_ENTITY: Final = "SECRET"
LONG_TOKEN: Final = 20
"""Token rules whose secrets are at least this long share one prefilter: a whitespace-free
run of this many characters."""

_TOKEN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_JWT_CHARS: Final = _TOKEN_CHARS | frozenset("=.+/")
_EDGE_CHARS: Final = " \t\r\n=:\"'"


@dataclass(frozen=True, slots=True)
class SecretRule:
    """One rule: patterns, the cues that must occur for them to run, and how to take the
    secret's span from a match."""

    name: str
    patterns: tuple[re.Pattern[str], ...]
    cues: tuple[str, ...]
    """Literals one of which must occur in the text (`lower_cues`: in the lower-cased text)."""
    lower_cues: bool = False
    context: bool = False
    """The pattern reads around the secret (an assignment `key = "..."`, a multi-line PEM
    block): it runs on the whole text. Other rules' secrets are one whitespace-free token,
    and they run only on the text's tokens of at least `min_length` characters."""
    min_length: int = 20
    """The shortest text the secret can be (the gate for both kinds of rule)."""
    gate: str | None = None
    """An RE2 pattern any text holding the secret matches: the rule then runs on the whole
    text when it matches (context rules, and secrets that can be shorter than `LONG_TOKEN`).
    Rules without one are token rules. Case-insensitive when `lower_cues`."""
    group: bool = False
    """The secret is the pattern's first group (an assignment's value, a URL's password)."""
    extend: frozenset[str] | None = None
    """Characters the match is extended over at its end (the rest of a token the pattern
    stops short of)."""
    strip_edges: bool = False
    """Trim the delimiters the pattern includes (whitespace, quotes, `=`, `:`)."""
    truncate: frozenset[str] | None = None
    """Characters the secret is made of: it ends before the first other one (a pattern that
    runs on to the end of the line)."""
    validate: Callable[[str], bool] | None = None

    def applies(self, text: str) -> bool:
        """Whether one of the cues occurs in `text` (cheap: substring tests)."""
        probe = text.lower() if self.lower_cues else text
        return any(cue in probe for cue in self.cues)

    def find(self, text: str) -> Iterable[tuple[int, int]]:
        for pattern in self.patterns:
            for m in pattern.finditer(text):
                if self.group and m.lastindex:
                    start, end = m.span(1)
                else:
                    start, end = m.span()
                if self.strip_edges:
                    while start < end and text[start] in _EDGE_CHARS:
                        start += 1
                    while end > start and text[end - 1] in _EDGE_CHARS:
                        end -= 1
                if self.truncate is not None:
                    cut = start
                    while cut < end and text[cut] in self.truncate:
                        cut += 1
                    end = cut
                if self.extend is not None:
                    while end < len(text) and text[end] in self.extend:
                        end += 1
                if end > start and (self.validate is None or self.validate(text[start:end])):
                    yield start, end


def _plugin(cls: type, *indexes: int) -> tuple[re.Pattern[str], ...]:
    denylist: Sequence[re.Pattern[str]] = cls.denylist  # type: ignore[attr-defined]
    return tuple(denylist[i] for i in indexes) if indexes else tuple(denylist)


def _jwt_valid(token: str) -> bool:
    return token.count(".") >= 2 and bool(JwtTokenDetector.is_formally_valid(token))


_PEM_BLOCK: Final = re.compile(
    r"-----BEGIN ((?:RSA |DSA |EC |OPENSSH |ENCRYPTED |SSH2 ENCRYPTED )?PRIVATE KEY|PGP PRIVATE KEY BLOCK)-----"
    r"(?:[\s\S]{0,16384}?-----END \1-----"  # the whole block when it ends
    r"|[ \t]?[A-Za-z0-9+/=]*"  # else BEGIN, and the headers and base64 lines that follow
    r"(?:(?:\r?\n|\\n)(?:[A-Za-z0-9+/=]+|[A-Za-z\-]+: [^\r\n\\]*)(?=\r?\n|\\n|$))*)"
)
_PUTTY: Final = re.compile(
    r"PuTTY-User-Key-File-\d: [\s\S]{0,8192}?Private-MAC: [0-9a-f]+|PuTTY-User-Key-File-\d:[^\n]*"
)


def _compiled(*patterns: str, flags: int = 0) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, flags) for p in patterns)


SECRET_RULES: Final[dict[str, SecretRule]] = {
    rule.name: rule
    for rule in (
        SecretRule(
            "aws_access_key",
            _plugin(AWSKeyDetector, 0),
            ("A3T", "ABIA", "ACCA", "AKIA", "ASIA"),
            extend=_TOKEN_CHARS,
        ),
        SecretRule(
            "aws_secret_key",
            _plugin(AWSKeyDetector, 1),
            ("aws",),
            lower_cues=True,
            group=True,
            context=True,
            min_length=40,
            gate=r"aws.{0,20}?(?:key|pwd|pw|password|pass|token).{0,20}?['\"][0-9a-zA-Z/+]{40}",
        ),
        SecretRule("azure_storage_key", _plugin(AzureStorageKeyDetector), ("AccountKey=",)),
        SecretRule(
            "basic_auth",
            # detect-secrets' pattern refuses RFC 3986 sub-delimiters in the password; real
            # passwords have them ("Pa55w0rd!x"), so a second pattern allows all but the
            # template characters (`${DB_PASSWORD}` is not a secret).
            _plugin(BasicAuthDetector)
            + _compiled(r"://[^:/?#\[\]@\s]+:([^/?#\[\]@${}\s<>\"'`]+)@"),
            ("://",),
            group=True,
            min_length=12,
            gate="://",
        ),
        SecretRule(
            "artifactory",
            _plugin(ArtifactoryDetector),
            ("AKC", "AP"),
            strip_edges=True,
            min_length=11,
            gate=r"AKC[a-zA-Z0-9]{10}|AP[\dA-F][a-zA-Z0-9]{8}",
        ),
        SecretRule(
            "cloudant",
            _plugin(CloudantDetector),
            ("cl",),
            lower_cues=True,
            group=True,
            context=True,
            min_length=24,
            gate=r"cl(?:oudant|ou)?[_-]?(?:api)?(?:key|pwd|pw|password|pass|token)|\.cloudant\.com",
        ),
        SecretRule("discord_bot_token", _plugin(DiscordBotTokenDetector), (".",)),
        SecretRule(
            "github_token",
            _plugin(GitHubTokenDetector) + _compiled(r"github_pat_[A-Za-z0-9_]{82}"),
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
            extend=_TOKEN_CHARS,
        ),
        SecretRule("gitlab_token", _plugin(GitLabTokenDetector), ("gl", "GR1348941")),
        SecretRule(
            "ibm_cloud_iam",
            _plugin(IbmCloudIamDetector),
            ("key", "pwd", "pass", "token"),
            lower_cues=True,
            group=True,
            context=True,
            min_length=44,
            gate=r"(?:key|pwd|pass|token)['\"]?\]? *(?:=|:| ) *['\"]?[a-zA-Z0-9_\-]{44}",
        ),
        SecretRule(
            "ibm_cos_hmac",
            _plugin(IbmCosHmacDetector),
            ("secret",),
            lower_cues=True,
            group=True,
            context=True,
            min_length=48,
            gate=r"secret[-_]?(?:access)?[-_]?key",
        ),
        SecretRule(
            "jwt", _plugin(JwtTokenDetector), ("eyJ",), extend=_JWT_CHARS, validate=_jwt_valid
        ),
        SecretRule("mailchimp", _plugin(MailchimpDetector), ("-us",)),
        SecretRule(
            "npm_token",
            _plugin(NpmDetector) + _compiled(r"\bnpm_[A-Za-z0-9]{36}\b"),
            ("_authToken", "npm_"),
            group=True,
            truncate=_TOKEN_CHARS,
        ),
        SecretRule(
            "openai",
            _plugin(OpenAIDetector) + _compiled(r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,}"),
            ("sk-",),
            extend=_TOKEN_CHARS,
        ),
        SecretRule(
            "anthropic",
            _compiled(r"\bsk-ant-(?:api|admin|oat|sid)\d\d-[A-Za-z0-9_\-]{40,}"),
            ("sk-ant-",),
        ),
        SecretRule("google_api_key", _compiled(r"\bAIza[0-9A-Za-z_\-]{35}(?![\w\-])"), ("AIza",)),
        SecretRule("huggingface", _compiled(r"\bhf_[A-Za-z]{34}(?![\w\-])"), ("hf_",)),
        SecretRule(
            "private_key",
            (_PEM_BLOCK, _PUTTY),
            ("PRIVATE KEY", "PuTTY-User-Key-File"),
            context=True,
            min_length=0,
            gate="PRIVATE KEY|PuTTY-User-Key-File",
        ),
        SecretRule("pypi_token", _plugin(PypiTokenDetector), ("pypi-",)),
        SecretRule("sendgrid", _plugin(SendGridDetector), ("SG.",)),
        SecretRule("slack", _plugin(SlackDetector), ("xox", "hooks.slack.com"), lower_cues=True),
        SecretRule(
            "softlayer",
            _plugin(SoftlayerDetector),
            ("softlayer", "sl"),
            lower_cues=True,
            group=True,
            context=True,
            min_length=64,
            gate=r"sl[_-]?(?:api)?[_-]?(?:key|pwd|password|pass|token)|softlayer",
        ),
        SecretRule("square_oauth", _plugin(SquareOAuthDetector), ("sq0csp-",)),
        SecretRule(
            "stripe",
            _plugin(StripeDetector) + _compiled(r"\b(?:sk|rk|pk)_test_[0-9a-zA-Z]{24,}"),
            ("_live_", "_test_"),
            extend=_TOKEN_CHARS,
        ),
        SecretRule("telegram_bot_token", _plugin(TelegramBotTokenDetector), (":",)),
        SecretRule("twilio", _plugin(TwilioKeyDetector), ("AC", "SK")),
    )
}
"""Every rule by its (stable) name."""


class SecretsDetector:
    """Credentials (`SECRET`): the rules named in `rules`, default all of `SECRET_RULES`.

    Speed: one RE2 set search says which gates the text passes (a whitespace-free token of
    `LONG_TOKEN` characters, each gated rule's own gate); prose passes none, so it costs
    that one pass. Token rules then run on the long tokens holding one of their cues, gated
    rules on the whole text."""

    entity: Final = SECRET_ENTITY

    def __init__(self, name: str = "secrets", rules: Iterable[str] | None = None) -> None:
        self.name = name
        if rules is None:
            selected = list(SECRET_RULES.values())
        else:
            names = list(rules)
            unknown = [n for n in names if n not in SECRET_RULES]
            if unknown:
                raise ValueError(
                    f"unknown secrets rule(s) {', '.join(map(repr, unknown))}; "
                    f"known: {', '.join(sorted(SECRET_RULES))}"
                )
            if not names:
                raise ValueError("secrets: rules is empty (omit it for all rules)")
            selected = [SECRET_RULES[n] for n in dict.fromkeys(names)]
        # Token rules: secrets of at least LONG_TOKEN characters without whitespace, run on
        # such tokens only. Gated rules (context rules, shorter secrets) run on the whole
        # text when their own gate matches.
        self._token = [r for r in selected if r.gate is None]
        self._gated = [r for r in selected if r.gate is not None]
        # Every cue of the token rules, flat: one pass of substring tests per long token.
        self._exact_cues = [
            (cue, i) for i, r in enumerate(self._token) if not r.lower_cues for cue in r.cues
        ]
        self._lower_cues = [
            (cue, i) for i, r in enumerate(self._token) if r.lower_cues for cue in r.cues
        ]
        gates = [rf"\S{{{LONG_TOKEN},}}"] + [
            f"(?i:{r.gate})" if r.lower_cues else f"(?:{r.gate})" for r in self._gated
        ]
        self._gates = GateSet(gates)
        self._tokens = Re2Spans(rf"\S{{{LONG_TOKEN},}}")

    def find(self, text: str) -> list[Match]:
        passed = self._gates.passed(text)
        if not passed:
            return []
        found: list[Match] = []
        longest = 0  # of the whitespace-free tokens, when one is LONG_TOKEN or more
        if 0 in passed:
            for start, end in self._tokens.spans(text):
                longest = max(longest, end - start)
                if not self._token:
                    continue
                token = text[start:end]
                hits = {i for cue, i in self._exact_cues if cue in token}
                if self._lower_cues:
                    lowered = token.lower()
                    hits.update(i for cue, i in self._lower_cues if cue in lowered)
                for i in sorted(hits):
                    found.extend(
                        Match(start + s, start + e, SECRET_ENTITY)
                        for s, e in self._token[i].find(token)
                    )
        for index, rule in enumerate(self._gated, start=1):
            if index in passed and (rule.min_length < LONG_TOKEN or longest >= rule.min_length):
                found.extend(Match(s, e, SECRET_ENTITY) for s, e in rule.find(text))
        # Two rules (or two patterns of one) may report the same secret.
        return list(dict.fromkeys(found))


__all__ = ["SECRET_ENTITY", "SECRET_RULES", "SecretRule", "SecretsDetector"]
