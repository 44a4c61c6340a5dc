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
from dataclasses import dataclass, field
from typing import Any, Final

import re2
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

_TOKEN_CHARS: Final = re.compile(r"[A-Za-z0-9_\-]*")
_JWT_CHARS: Final = re.compile(r"[A-Za-z0-9_\-=.+/]*")
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
    extend: re.Pattern[str] | None = None
    """Characters the match is extended over at its end (the rest of a token the pattern
    stops short of)."""
    strip_edges: bool = False
    """Trim the delimiters the pattern includes (whitespace, quotes, `=`, `:`)."""
    truncate: re.Pattern[str] | None = None
    """Characters the secret is made of: it ends before the first other one (a pattern that
    runs on to the end of the line)."""
    validate: Callable[[str], bool] | None = None
    finder: Callable[[str], Iterable[tuple[int, int]]] | None = None
    """Finds the spans itself (instead of `patterns`)."""
    engines: tuple[_Engine, ...] = field(init=False, repr=False, compare=False, default=())
    """The patterns, compiled for RE2 where it can run them (set at construction)."""

    def applies(self, text: str) -> bool:
        """Whether one of the cues occurs in `text` (cheap: substring tests)."""
        probe = text.lower() if self.lower_cues else text
        return any(cue in probe for cue in self.cues)

    def __post_init__(self) -> None:
        object.__setattr__(self, "engines", tuple(_Engine(p) for p in self.patterns))

    def find(self, text: str) -> Iterable[tuple[int, int]]:
        if self.finder is not None:
            yield from self.finder(text)
            return
        for engine in self.engines:
            covered = 0  # a match inside the last one's (extended) span is the same secret
            for whole, first in engine.matches(text):
                if whole[0] < covered:
                    continue
                start, end = first if self.group and first is not None else whole
                if self.strip_edges:
                    while start < end and text[start] in _EDGE_CHARS:
                        start += 1
                    while end > start and text[end - 1] in _EDGE_CHARS:
                        end -= 1
                if self.truncate is not None:
                    cut = self.truncate.match(text, start, end)
                    end = cut.end() if cut else start
                if self.extend is not None:
                    more = self.extend.match(text, end)
                    if more:
                        end = more.end()
                covered = max(covered, end)
                if end > start and (self.validate is None or self.validate(text[start:end])):
                    yield start, end


_WORD_LOOKBEHIND: Final = r"(?:(?<=\W)|(?<=^))"
_CLASS_LOOKAHEADS: Final = (r"(?![a-zA-Z0-9_\-])", r"(?![a-f0-9])")


class _Engine:
    """One pattern, run by RE2 (linear time) whenever RE2 can: detect-secrets' patterns are
    written for Python's backtracking engine, and some of them (`sk-[...]*[...]{20}T3Bl...`,
    `key *(?:=| +) *...`) take quadratic time on crafted text. The lookarounds RE2 lacks
    (a word-start lookbehind, a character-class lookahead after the secret) are checked
    after the match instead. Patterns RE2 still refuses keep Python's engine; their
    repetitions are bounded (linear)."""

    __slots__ = ("_bytes", "_python", "_str", "not_after", "word_start")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        source = pattern.pattern
        self.word_start = source.startswith(_WORD_LOOKBEHIND)
        if self.word_start:
            source = source[len(_WORD_LOOKBEHIND) :]
        self.not_after: re.Pattern[str] | None = None
        for lookahead in _CLASS_LOOKAHEADS:
            if lookahead in source:
                source = source.replace(lookahead, "")
                self.not_after = re.compile(lookahead[3:-1])
        options = re2.Options()
        options.log_errors = False
        options.case_sensitive = not pattern.flags & re.IGNORECASE
        self._python: re.Pattern[str] | None = None
        try:
            self._str: Any = re2.compile(source, options)
            self._bytes: Any = re2.compile(source.encode(), options)
        except re2.error:
            self._python = pattern
            self.word_start = False
            self.not_after = None

    def matches(self, text: str) -> Iterable[tuple[tuple[int, int], tuple[int, int] | None]]:
        """(span of the match, span of its first group or None), left to right."""
        if self._python is not None:
            for m in self._python.finditer(text):
                yield m.span(), (m.span(1) if m.lastindex else None)
            return
        regex, subject = (self._bytes, text.encode()) if text.isascii() else (self._str, text)
        for m in regex.finditer(subject):
            whole = m.span()
            first = m.span(1) if m.lastindex else None
            if first is not None and first[0] < 0:
                first = None
            if self.word_start and whole[0] > 0:
                before = text[whole[0] - 1]
                if before.isalnum() or before == "_":
                    continue
            if self.not_after is not None:
                after = (first or whole)[1]
                if after < len(text) and self.not_after.match(text, after):
                    continue
            yield whole, first


def _plugin(cls: type, *indexes: int) -> tuple[re.Pattern[str], ...]:
    denylist: Sequence[re.Pattern[str]] = cls.denylist  # type: ignore[attr-defined]
    return tuple(denylist[i] for i in indexes) if indexes else tuple(denylist)


def _jwt_valid(token: str) -> bool:
    return token.count(".") >= 2 and bool(JwtTokenDetector.is_formally_valid(token))


_PEM_BEGIN: Final = re.compile(
    r"-----BEGIN ((?:RSA |DSA |EC |OPENSSH |ENCRYPTED |SSH2 ENCRYPTED )?PRIVATE KEY"
    r"|PGP PRIVATE KEY BLOCK)-----"
)
_PEM_BODY: Final = re.compile(  # when there is no END: the headers and base64 lines that follow
    r"[ \t]?[A-Za-z0-9+/=]*"
    r"(?:(?:\r?\n|\\n)(?:[A-Za-z0-9+/=]+|[A-Za-z\-]+: [^\r\n\\]*)(?=\r?\n|\\n|$))*"
)
MAX_PEM_BLOCK: Final = 16384
"""The longest private-key block searched for its END line (an RSA-8192 key is ~6.5 KB)."""


def _private_keys(text: str) -> Iterable[tuple[int, int]]:
    """Whole PEM blocks (BEGIN to END), else the BEGIN line and the base64 lines after it;
    the END is looked for with `str.find` (linear), never a backtracking regex."""
    covered = 0
    next_end: dict[str, int] = {}  # per kind, where its next END line is (-1: none left)
    for m in _PEM_BEGIN.finditer(text):
        if m.start() < covered:
            continue
        end_line = f"-----END {m.group(1)}-----"
        end = next_end.get(end_line, 0)
        if 0 <= end < m.end():
            end = next_end[end_line] = text.find(end_line, m.end())
        if 0 <= end <= m.end() + MAX_PEM_BLOCK:
            end += len(end_line)
        else:
            body = _PEM_BODY.match(text, m.end())
            end = body.end() if body else m.end()
        covered = end
        yield m.start(), end


_PUTTY: Final = re.compile(r"PuTTY-User-Key-File-\d:[^\n]*")


def _putty_keys(text: str) -> Iterable[tuple[int, int]]:
    """A PuTTY key file from its first line to its `Private-MAC` line, else the first line."""
    covered = 0
    for m in _PUTTY.finditer(text):
        if m.start() < covered:
            continue
        mac = text.find("Private-MAC: ", m.end(), m.end() + MAX_PEM_BLOCK)
        end = text.find("\n", mac) if mac >= 0 else m.end()
        end = len(text) if end < 0 else end
        covered = end
        yield m.start(), end


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
            (_PEM_BEGIN, _PUTTY),
            ("PRIVATE KEY", "PuTTY-User-Key-File"),
            context=True,
            min_length=0,
            gate="PRIVATE KEY|PuTTY-User-Key-File",
            finder=lambda text: [*_private_keys(text), *_putty_keys(text)],
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
