"""Prompt-injection and jailbreak heuristics.

`INJECTION_PATTERNS` and `HIDDEN_CHARS` are the rules the MCP tool-description scanner
(`crossway.mcp.pinning`) applies to tool metadata; they live here so the guard and the scanner
share one copy. The guard's `injection` detector applies them to conversation text, extended
with jailbreak heuristics (`JAILBREAK_PATTERNS`). Three of the scanner's rules are written for
tool descriptions and fire on ordinary developer prose ("act as a cache", "read the
credentials from the environment", "when calling the tool"); in conversation the detector
uses stricter variants of them (`CONVERSATION_VARIANTS`).

Matching runs on the text with invisible characters removed and NFKC-normalised (full-width
letters, ligatures), so `ig\u200bnore previous instructions` is still found; the spans of the
matches are mapped back to offsets in the original text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Final

from crossway.guard.detectors._prefilter import Prefilter, unicode_superset
from crossway.guard.detectors.base import Match

INJECTION_ENTITY: Final = "INJECTION"


def _rules(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((label, re.compile(pattern, re.IGNORECASE)) for label, pattern in pairs)


INJECTION_PATTERNS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = _rules(
    (
        (
            "ignore-instructions",
            r"\b(ignore|disregard|forget|override)\b[\w\s,]{0,30}\b(previous|prior|above|earlier|all|system|other)\b[\w\s]{0,20}\b(instructions?|prompts?|rules|directives)\b",
        ),
        ("important-tag", r"<\s*/?\s*(important|system|instructions?|secret|hidden)\s*>"),
        (
            "conceal-from-user",
            r"\b(do\s*n[o']t|never|must\s+not|without)\b[\w\s]{0,20}\b(tell|telling|inform|informing|mention|mentioning|show|showing|reveal|revealing|notify|notifying|alert|alerting)\b[\w\s]{0,15}\b(user|human|them)\b",
        ),
        (
            "exfiltration",
            r"\b(read|send|upload|post|forward|include|pass|leak|exfiltrate|copy)(s|es|ing)?\b[\w\s]{0,40}(~/\.ssh|id_rsa|\.env\b|mcp\.json|credentials|api[_\s-]?keys?|private\s+keys?|passwords?|secrets?|access\s+tokens?)",
        ),
        (
            "tool-shadowing",
            r"\b(before|instead\s+of|when)\b[\w\s]{0,20}\b(using|calling|invoking)\b[\w\s]{0,20}\b(any\s+other|other|the)\s+tools?\b",
        ),
        (
            "role-override",
            r"\b(you\s+are\s+now|act\s+as|new\s+instructions?\s*:|system\s+prompt\s*:)",
        ),
    )
)
"""The tool-description scanner's rules: (label, pattern), searched case-insensitively."""

HIDDEN_CHARS: Final = re.compile(
    "[\U000e0000-\U000e007f"  # unicode tag characters (invisible ASCII smuggling)
    "\u200b-\u200f"  # zero-width spaces / joiners, LRM/RLM
    "\u202a-\u202e"  # bidi embeddings and overrides
    "\u2060-\u2064"  # word joiner, invisible operators
    "\u2066-\u2069"  # bidi isolates
    "\ufeff]"  # zero-width no-break space
)
"""Invisible characters: removed before matching (and a finding of their own in tool
descriptions, where they have no business)."""

TAG_SMUGGLING: Final = re.compile("[\U000e0000-\U000e007f]{3,}")
"""Runs of unicode tag characters (invisible ASCII: text a model reads and a human does not
see). Subdivision flags (a black flag followed by tags) are not smuggling. Zero-width joiners
and bidi marks alone are not reported in conversation: emoji sequences and right-to-left text
use them legitimately."""

_BLACK_FLAG: Final = "\U0001f3f4"
_INVISIBLE: Final = Prefilter(
    [
        r"[\x{E0000}-\x{E007F}\x{200B}-\x{200F}\x{202A}-\x{202E}\x{2060}-\x{2064}\x{2066}-\x{2069}\x{FEFF}]"
    ]
)
"""Whether a text holds any of `HIDDEN_CHARS` (one RE2 pass instead of Python's)."""

_LIMITS: Final = (
    r"(?:restrictions?|limits|limitations|rules|filters?|guidelines|policies|censorship"
    r"|boundaries|guardrails|ethics|morals|safety\s+measures)"
)

JAILBREAK_PATTERNS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = _rules(
    (
        (
            "dan",
            r"\bdo\s+anything\s+now\b"
            r"|\b(?:you\s+are|act\s+as|pretend\s+to\s+be|become)\s+(?:now\s+)?(?-i:DAN)\b"
            r"|\b(?-i:DAN)\s+mode\b",
        ),
        (
            "developer-mode",
            r"\b(?:with|in)\s+developer\s+mode\s+(?:enabled|activated)\b"
            r"|\b(?:jailbreak|jailbroken|unrestricted|unfiltered)\s+mode\s+(?:enabled|activated|on)\b"
            r"|\b(?:enable|activate|enter|switch\s+to|turn\s+on)\s+(?:the\s+)?"
            r"(?:jailbreak|jailbroken|unrestricted|unfiltered|(?-i:DAN))\s+mode\b",
        ),
        (
            "no-restrictions",
            r"\b(?:pretend|imagine|suppose|assume|act\s+as\s+if|behave\s+as\s+if|from\s+now\s+on)\b[\w\s,']{0,30}?"
            r"\b(?:you|there)\s+(?:have|had|are|were|is)\s+(?:no|free\s+(?:of|from)|not\s+bound\s+by|no\s+longer\s+bound\s+by|without(?:\s+any)?)\s+"
            r"(?:\w+\s+){0,2}" + _LIMITS + r"\b",
        ),
        (
            "ignore-guidelines",
            r"\b(?:ignore|disregard|bypass|forget|abandon)\s+(?:all\s+)?(?:of\s+)?(?:your|the|any)\s+(?:\w+\s+){0,2}"
            r"(?:safety\s+)?(?:guidelines|guardrails|content\s+polic(?:y|ies)|filters|restrictions|programming|training)\b",
        ),
        (
            "reveal-system-prompt",
            r"\b(?:reveal|show|print|repeat|output|display|leak|dump|recite|tell\s+me|give\s+me|what\s+(?:is|are|were|was))\b[\w\s,]{0,20}?"
            r"\byour\s+(?:system\s+prompt|(?:initial|original|hidden|secret|full|exact)\s+(?:prompt|instructions)|instructions\s+verbatim|pre-?prompt)",
        ),
        (
            "repeat-above",
            r"\brepeat\s+(?:all\s+)?(?:of\s+)?the\s+(?:words|text)\s+above\b",
        ),
    )
)
"""Jailbreak heuristics: the DAN family, "developer mode", "pretend you have no
restrictions", and attempts to extract the system prompt."""

CONVERSATION_VARIANTS: Final[dict[str, re.Pattern[str]]] = dict(
    _rules(
        (
            (
                "role-override",
                r"\b(?:you\s+are\s+now\s+(?:no\s+longer\s+|an?\s+(?:unrestricted|unfiltered|uncensored|evil|jailbroken)\b)"
                r"|new\s+instructions?\s*:|system\s+prompt\s*:|your\s+new\s+(?:role|persona|instructions)\s+(?:is|are)\b)",
            ),
            (
                "exfiltration",
                r"\b(?:send|upload|post|forward|leak|exfiltrate)(?:s|es|ing)?\b\s+(?:\w+\s+){0,6}?"
                r"(?:~/\.ssh|id_rsa|mcp\.json|(?:the\s+)?(?:user'?s?|all|every)\s+(?:\w+\s+)?(?:credentials|api\s*keys|passwords|secrets|access\s+tokens))"
                r"\s+(?:\w+\s+){0,4}?(?:to|at)\s+(?:https?://|[\w.-]+\.\w{2,}|this\s+(?:url|address|endpoint|server))",
            ),
            (
                "tool-shadowing",
                r"\b(?:before|instead\s+of)\s+(?:using|calling|invoking)\s+any\s+other\s+tools?\b",
            ),
        )
    )
)
"""Stricter forms, for conversation, of the scanner's rules that fire on ordinary prose."""

CONVERSATION_RULES: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    tuple(
        (label, CONVERSATION_VARIANTS.get(label, pattern)) for label, pattern in INJECTION_PATTERNS
    )
    + JAILBREAK_PATTERNS
)
"""What the guard's `injection` detector applies."""

_LIMIT_CUES: Final = (
    "restriction",
    "limit",
    "rule",
    "filter",
    "guideline",
    "polic",
    "censor",
    "boundar",
    "guardrail",
    "ethic",
    "moral",
    "safety",
)
RULE_CUES: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "ignore-instructions": (
        ("ignor", "disregard", "forget", "override"),
        ("instruction", "prompt", "rule", "directive"),
    ),
    "important-tag": (("<",), ("important", "system", "instruction", "secret", "hidden")),
    "conceal-from-user": (
        ("n't", "not", "n'", "never", "without"),
        ("tell", "inform", "mention", "show", "reveal", "notif", "alert"),
        ("user", "human", "them"),
    ),
    "exfiltration": (
        ("send", "upload", "post", "forward", "leak", "exfiltrat"),
        ("ssh", "id_rsa", "mcp.json", "credential", "key", "password", "secret", "token"),
    ),
    "tool-shadowing": (("other",), ("tool",)),
    "role-override": (("now", "instruction", "prompt", "new"),),
    "dan": (("anything", "dan"),),
    "developer-mode": (("mode",), ("developer", "jailbr", "unrestricted", "unfiltered", "dan")),
    "no-restrictions": (
        ("pretend", "imagine", "suppose", "assume", "as if", "from now"),
        _LIMIT_CUES,
    ),
    "ignore-guidelines": (
        ("ignor", "disregard", "bypass", "forget", "abandon"),
        ("guideline", "guardrail", "polic", "filter", "restriction", "programming", "training"),
    ),
    "reveal-system-prompt": (("your",), ("prompt", "instruction")),
    "repeat-above": (("repeat",), ("above",)),
}
"""Per rule, groups of cues (lower case): a rule's regex runs only when every group has one
of its cues in the text, so ordinary text skips almost all of them for a few substring
tests."""


def normalize_for_matching(text: str) -> tuple[str, list[int] | None]:
    """`text` without invisible characters and NFKC-normalised, and for each character of the
    result the offset of the original character it came from (None: unchanged, offsets are
    the same)."""
    if text.isascii():
        return text, None
    invisible = _INVISIBLE.maybe(text)
    if not invisible and unicodedata.is_normalized("NFKC", text):
        return text, None
    pieces: list[str] = []
    offsets: list[int] = []
    for index, char in enumerate(text):
        if HIDDEN_CHARS.match(char):
            continue
        piece = unicodedata.normalize("NFKC", char) if not char.isascii() else char
        pieces.append(piece)
        offsets.extend([index] * len(piece))
    return "".join(pieces), offsets


class InjectionDetector:
    """Finds prompt-injection and jailbreak phrases; each match is an `INJECTION`."""

    def __init__(self, name: str = "injection") -> None:
        self.name = name
        self._rules = tuple(
            (label, pattern, RULE_CUES[label]) for label, pattern in CONVERSATION_RULES
        )
        self._maybe = Prefilter(
            (unicode_superset(p.pattern) for _, p in CONVERSATION_RULES), ignore_case=True
        )

    def find(self, text: str) -> list[Match]:
        found: list[Match] = []
        if not text.isascii() and _INVISIBLE.maybe(text):
            found.extend(
                Match(m.start(), m.end(), INJECTION_ENTITY)
                for m in TAG_SMUGGLING.finditer(text)
                if text[m.start() - 1 : m.start()] != _BLACK_FLAG
            )
        normalized, offsets = normalize_for_matching(text)
        if not self._maybe.maybe(normalized):
            return found
        lowered = normalized.lower()
        for _label, pattern, cues in self._rules:
            if not all(any(cue in lowered for cue in group) for group in cues):
                continue
            for m in pattern.finditer(normalized):
                start, end = m.start(), m.end()
                if offsets is not None:
                    start, end = offsets[start], offsets[end - 1] + 1
                found.append(Match(start, end, INJECTION_ENTITY))
        return found

    def labels(self, text: str) -> list[str]:
        """Which rules match `text` (for tests and logs)."""
        normalized, _ = normalize_for_matching(text)
        return [label for label, pattern, _ in self._rules if pattern.search(normalized)]


__all__ = [
    "CONVERSATION_RULES",
    "HIDDEN_CHARS",
    "INJECTION_ENTITY",
    "INJECTION_PATTERNS",
    "JAILBREAK_PATTERNS",
    "RULE_CUES",
    "InjectionDetector",
    "normalize_for_matching",
]
