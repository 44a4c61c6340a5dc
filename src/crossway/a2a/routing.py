"""Capability routing and catalog search over the registered agents (pure logic, no I/O).

`CapabilityRouter(agents)` indexes every agent's skills once, at construction (the registry
builds a new router when a card changes); `pick(message, candidates)` then chooses the agent
for a v1.0 `Message` in three steps:

1. **Explicit skill.** A skill id in the message's `metadata` (`skillId` or `crossway/skill`),
   either the router card's `agent/skill` form or an agent's own skill id, picks that skill's
   agent. An id the caller cannot see is `INVALID_PARAMS`.
2. **Modality negotiation.** Every part's mode (text -> `text/plain`, data ->
   `application/json`, raw/url/file -> its `mediaType`, else `application/octet-stream`) must
   be among the skill's `inputModes` (the agent's `defaultInputModes` when the skill declares
   none; `*/*` and `image/*` wildcards match), and when the caller lists accepted output modes
   the skill must produce one of them. An agent that cannot is never chosen; when none can, the
   caller gets `CONTENT_TYPE_NOT_SUPPORTED` (-32005) naming the modes asked and what each agent
   accepts.
3. **Match.** Among the skills left: the most message `metadata.tags` in the skill's tags (and
   the agent's config tags), then the best BM25 score of the message's text against the skill
   documents (name, tags, description, examples, and a little of the agent's name and
   description; lower-cased word tokens, a light suffix stemmer, a small stop-word list), then
   the most specific mode match (`image/png` over `image/*` over `*/*`), then config order.

Decision reasons: `skill` (step 1), `match` (tags or text decided), `mode` (the only agent that
takes the message's modes, or the most specific one when nothing matched), `default` (the only
agent the caller may call, or the first in config order when nothing else decided).

Only agents that are `up` and named in `candidates` (the agents the caller's policies allow)
are considered; `up` is read at each pick, so marking an agent down needs no new router.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from crossway import __version__
from crossway.a2a.errors import (
    CONTENT_TYPE_NOT_SUPPORTED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    A2aError,
)
from crossway.a2a.model import Agent, Decision

SKILL_METADATA_KEYS: Final = ("skillId", "crossway/skill")
"""Message metadata keys naming a skill explicitly (the first present wins)."""
TAGS_METADATA_KEY: Final = "tags"
"""Message metadata key with tags the caller wants."""
TEXT_MODE: Final = "text/plain"
DATA_MODE: Final = "application/json"
BINARY_MODE: Final = "application/octet-stream"
DEFAULT_MODES: Final = (TEXT_MODE,)
"""The modes of an agent whose card declares none (v1.0 requires them; text is the safe
assumption, so such an agent never receives a file it did not promise to take)."""

BM25_K1: Final = 1.2
BM25_B: Final = 0.75
WEIGHT_SKILL_NAME: Final = 3.0
WEIGHT_TAGS: Final = 2.0
WEIGHT_DESCRIPTION: Final = 1.0
WEIGHT_EXAMPLES: Final = 1.0
WEIGHT_AGENT: Final = 0.5
"""The agent's name and description, shared by all its skills' documents."""
MAX_QUERY_CHARS: Final = 4096
"""Only the start of a long message's text is matched (the decision stays cheap)."""
MAX_CACHED_MODE_SETS: Final = 1024
"""Distinct (input modes, accepted output modes) combinations remembered per router."""
MAX_CACHED_STEMS: Final = 65536
"""Words whose stem is remembered (process-wide)."""
MAX_AGENTS_IN_ERROR: Final = 20
"""Agents listed by name in a content-type error (the rest are counted)."""

STOP_WORDS: Final = frozenset(
    """a an and are as at be but by can could do does for from have how i if in into is it
    its me my of on or our please should so than that the their them then there these this
    those to us was we what when where which who will with would you your""".split()
)
_WORD: Final = re.compile(r"[^\W_]+")
_SUFFIXES: Final = (
    ("izations", "iz"),
    ("ization", "iz"),
    ("ings", ""),
    ("ing", ""),
    ("ions", ""),
    ("ion", ""),
    ("ers", ""),
    ("ors", ""),
    ("ies", "y"),
    ("er", ""),
    ("or", ""),
    ("es", ""),
    ("ed", ""),
    ("ly", ""),
    ("s", ""),
)
_MIN_STEM: Final = 3


def _stem(word: str) -> str:
    """A light suffix stripper: translate, translates, translation, translator -> translat."""
    if len(word) <= _MIN_STEM + 1:
        return word
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix):
            if suffix == "s" and word.endswith("ss"):
                break
            stem = word[: -len(suffix)] + replacement
            if len(stem) >= _MIN_STEM:
                word = stem
            break
    if len(word) > _MIN_STEM + 1 and word.endswith("e"):
        word = word[:-1]
    return word


_stems: dict[str, str] = {}


def tokenize(text: str) -> list[str]:
    """Lower-cased, stemmed word tokens of `text` without stop words."""
    tokens = []
    for word in _WORD.findall(text.lower()):
        if word in STOP_WORDS:
            continue
        stem = _stems.get(word)
        if stem is None:
            if len(_stems) >= MAX_CACHED_STEMS:
                _stems.clear()
            stem = _stems[word] = _stem(word)
        tokens.append(stem)
    return tokens


MediaRange = tuple[str, str]


def _media_range(mode: str) -> MediaRange:
    """`Image/PNG; q=1` -> ("image", "png"); `text` -> ("text", "*"); `*` -> ("*", "*")."""
    bare = mode.split(";", 1)[0].strip().lower()
    if not bare or bare == "*":
        return ("*", "*")
    kind, slash, sub = bare.partition("/")
    if not slash:
        return (kind, "*")
    return (kind or "*", sub or "*")


def _specificity(a: MediaRange, b: MediaRange) -> int:
    """How exactly two media ranges meet (2 = same type and subtype, 0 = via `*/*`), or -1."""
    score = 0
    for x, y in zip(a, b, strict=True):
        if x == y and x != "*":
            score += 1
        elif x != "*" and y != "*":
            return -1
    return score


def _best_fit(mode: MediaRange, accepted: Sequence[MediaRange]) -> int:
    """The best specificity of `mode` against any of `accepted`, or -1."""
    best = -1
    for item in accepted:
        score = _specificity(mode, item)
        if score > best:
            best = score
            if best == 2:
                break
    return best


def _strings(value: Any) -> list[str]:
    """The strings of a card's list field (cards come from agents: tolerate junk)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dedup(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def skill_input_modes(agent: Agent, skill: Mapping[str, Any] | None) -> list[str]:
    """The modes a skill takes: its own `inputModes`, else the agent's defaults."""
    own = _strings(skill.get("inputModes")) if skill is not None else []
    return own or list(agent.input_modes) or list(DEFAULT_MODES)


def skill_output_modes(agent: Agent, skill: Mapping[str, Any] | None) -> list[str]:
    """The modes a skill produces: its own `outputModes`, else the agent's defaults."""
    own = _strings(skill.get("outputModes")) if skill is not None else []
    return own or list(agent.output_modes) or list(DEFAULT_MODES)


def _skills(agent: Agent) -> list[dict[str, Any]]:
    return [s for s in agent.skills if isinstance(s, dict)]


def _config_tags(agent: Agent) -> list[str]:
    """The agent's tags that no skill declares (its config tags)."""
    skill_tags = {t for s in _skills(agent) for t in _strings(s.get("tags"))}
    return [t for t in agent.tags if t not in skill_tags]


def _description(agent: Agent) -> str:
    return _text(agent.card.get("description"))


@dataclass(frozen=True, slots=True)
class _Entry:
    """One routable unit: a skill of an agent (or an agent without skills)."""

    agent: int
    """Index of the agent in config order."""
    skill: str | None
    inputs: tuple[MediaRange, ...]
    outputs: tuple[MediaRange, ...]
    tags: frozenset[str]
    """Lower-cased skill tags and agent config tags."""


class _Bm25:
    """A BM25 index over weighted token documents, with per-(term, doc) weights precomputed."""

    def __init__(self, documents: Sequence[Mapping[str, float]]) -> None:
        count = len(documents)
        lengths = [sum(doc.values()) for doc in documents]
        average = (sum(lengths) / count) if count else 0.0
        frequency: dict[str, int] = {}
        for doc in documents:
            for term in doc:
                frequency[term] = frequency.get(term, 0) + 1
        self.count = count
        self.postings: dict[str, tuple[list[int], list[float]]] = {}
        for index, doc in enumerate(documents):
            norm = BM25_K1 * (1 - BM25_B + BM25_B * (lengths[index] / average if average else 0))
            for term, tf in doc.items():
                df = frequency[term]
                idf = math.log(1 + (count - df + 0.5) / (df + 0.5))
                weight = idf * tf * (BM25_K1 + 1) / (tf + norm)
                indices, weights = self.postings.setdefault(term, ([], []))
                indices.append(index)
                weights.append(weight)

    def scores(self, text: str) -> list[float]:
        """Per document, its score for the (unique) terms of `text` (0.0: no match)."""
        result = [0.0] * self.count
        postings = self.postings
        for term in set(tokenize(text[:MAX_QUERY_CHARS])):
            found = postings.get(term)
            if found is not None:
                for index, weight in zip(*found, strict=True):
                    result[index] += weight
        return result


def _document(agent: Agent, skill: Mapping[str, Any] | None) -> dict[str, float]:
    doc: dict[str, float] = {}

    def add(text: str, weight: float) -> None:
        for token in tokenize(text):
            doc[token] = doc.get(token, 0.0) + weight

    add(agent.name.replace("-", " "), WEIGHT_AGENT)
    add(_description(agent), WEIGHT_AGENT)
    for tag in _config_tags(agent):
        add(tag, WEIGHT_TAGS)
    if skill is not None:
        add(_text(skill.get("name")) or _text(skill.get("id")), WEIGHT_SKILL_NAME)
        add(" ".join(_strings(skill.get("tags"))), WEIGHT_TAGS)
        add(_text(skill.get("description")), WEIGHT_DESCRIPTION)
        add(" ".join(_strings(skill.get("examples"))), WEIGHT_EXAMPLES)
    return doc


@dataclass(frozen=True, slots=True)
class _Ask:
    """What a message asks for, as far as routing cares."""

    inputs: tuple[str, ...]
    """The distinct modes of its parts, in order."""
    text: str
    tags: frozenset[str]
    skill: str | None


def _part_mode(part: Mapping[str, Any]) -> str | None:
    """The mode of a v1.0 part (a v0.3 `file`/`kind` part is tolerated), or None if unknown."""
    if "text" in part:
        return TEXT_MODE
    if "data" in part:
        return DATA_MODE
    if "raw" in part or "url" in part:
        media = part.get("mediaType")
        return media if isinstance(media, str) and media.strip() else BINARY_MODE
    file = part.get("file")
    if isinstance(file, dict):
        media = file.get("mediaType", file.get("mimeType"))
        return media if isinstance(media, str) and media.strip() else BINARY_MODE
    return None


def _read_message(message: Any) -> _Ask:
    if not isinstance(message, dict):
        raise A2aError(INVALID_PARAMS, "message must be an object")
    parts = message.get("parts", [])
    if not isinstance(parts, list):
        raise A2aError(INVALID_PARAMS, "message.parts must be an array")
    modes: dict[str, None] = {}
    texts: list[str] = []
    size = 0
    for number, part in enumerate(parts):
        if not isinstance(part, dict):
            raise A2aError(INVALID_PARAMS, f"message.parts[{number}] must be an object")
        mode = _part_mode(part)
        if mode is None:
            raise A2aError(
                INVALID_PARAMS, f"message.parts[{number}] has none of text, raw, url, data"
            )
        modes[mode.strip()] = None
        text = part.get("text")
        if isinstance(text, str) and size < MAX_QUERY_CHARS:
            texts.append(text)
            size += len(text)
    metadata = message.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise A2aError(INVALID_PARAMS, "message.metadata must be an object")
    skill: str | None = None
    for key in SKILL_METADATA_KEYS:
        if key in metadata:
            value = metadata[key]
            if not isinstance(value, str) or not value:
                raise A2aError(INVALID_PARAMS, f"message.metadata.{key} must be a skill id string")
            skill = value
            break
    raw_tags = metadata.get(TAGS_METADATA_KEY)
    if raw_tags is None:
        tags: frozenset[str] = frozenset()
    elif isinstance(raw_tags, str):
        tags = frozenset({raw_tags.lower()})
    elif isinstance(raw_tags, list) and all(isinstance(t, str) for t in raw_tags):
        tags = frozenset(t.lower() for t in raw_tags)
    else:
        raise A2aError(INVALID_PARAMS, "message.metadata.tags must be an array of strings")
    return _Ask(tuple(modes), " ".join(texts), tags, skill)


class CapabilityRouter:
    """Picks the agent (and skill) for a message; searches the catalog. Built once per set of
    cards: the skill index, mode sets and text index are computed here, not per message."""

    def __init__(self, agents: Sequence[Agent]) -> None:
        self.agents: tuple[Agent, ...] = tuple(agents)
        self._index = {agent.name: i for i, agent in enumerate(self.agents)}
        entries: list[_Entry] = []
        documents: list[dict[str, float]] = []
        self._by_id: dict[str, list[int]] = {}
        self._by_routed_id: dict[str, int] = {}
        self._agent_entries: list[list[int]] = []
        for position, agent in enumerate(self.agents):
            config_tags = {t.lower() for t in _config_tags(agent)}
            skills: list[dict[str, Any] | None] = list(_skills(agent)) or [None]
            own: list[int] = []
            for skill in skills:
                skill_id = _text(skill.get("id")) if skill is not None else ""
                tags = config_tags | {
                    t.lower() for t in (_strings(skill.get("tags")) if skill else [])
                }
                entry = _Entry(
                    agent=position,
                    skill=skill_id or None,
                    inputs=tuple(_media_range(m) for m in skill_input_modes(agent, skill)),
                    outputs=tuple(_media_range(m) for m in skill_output_modes(agent, skill)),
                    tags=frozenset(tags),
                )
                number = len(entries)
                entries.append(entry)
                documents.append(_document(agent, skill))
                own.append(number)
                if skill_id:
                    self._by_id.setdefault(skill_id, []).append(number)
                    self._by_routed_id.setdefault(routed_skill_id(agent.name, skill_id), number)
            self._agent_entries.append(own)
        self._entries: tuple[_Entry, ...] = tuple(entries)
        self._bm25 = _Bm25(documents)
        self._fits_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[int, ...]] = {}

    # -- modality -------------------------------------------------------------------------

    def _fits(self, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> tuple[int, ...]:
        """Per entry: the summed specificity of its fit to the modes, or -1 if it cannot."""
        key = (inputs, outputs)
        cached = self._fits_cache.get(key)
        if cached is not None:
            return cached
        asked_in = [_media_range(m) for m in inputs]
        asked_out = [_media_range(m) for m in outputs]
        fits: list[int] = []
        for entry in self._entries:
            total = 0
            for mode in asked_in:
                score = _best_fit(mode, entry.inputs)
                if score < 0:
                    total = -1
                    break
                total += score
            if total >= 0 and asked_out:
                score = max(_best_fit(mode, entry.outputs) for mode in asked_out)
                total = -1 if score < 0 else total + score
            fits.append(total)
        result = tuple(fits)
        if len(self._fits_cache) >= MAX_CACHED_MODE_SETS:
            self._fits_cache.clear()
        self._fits_cache[key] = result
        return result

    def _unsupported(
        self, ask: _Ask, outputs: tuple[str, ...], agents: Sequence[int], skill: str | None
    ) -> A2aError:
        asked = f"parts of {', '.join(ask.inputs)}" if ask.inputs else "a message without parts"
        wanted = f" answering in one of {', '.join(outputs)}" if outputs else ""
        listed: list[dict[str, Any]] = []
        lines: list[str] = []
        for position in agents:
            agent = self.agents[position]
            entries = [
                self._entries[e]
                for e in self._agent_entries[position]
                if skill is None or self._entries[e].skill == skill
            ]
            takes = _dedup(_range_text(r) for e in entries for r in e.inputs)
            gives = _dedup(_range_text(r) for e in entries for r in e.outputs)
            listed.append({"name": agent.name, "inputModes": takes, "outputModes": gives})
            if len(lines) < MAX_AGENTS_IN_ERROR:
                lines.append(f"{agent.name} takes {', '.join(takes)} -> {', '.join(gives)}")
        more = len(listed) - len(lines)
        if more > 0:
            lines.append(f"and {more} more")
        subject = "no agent accepts" if skill is None else f"skill {skill!r} does not accept"
        message = f"{subject} {asked}{wanted}" + (f" ({'; '.join(lines)})" if lines else "")
        return A2aError(
            CONTENT_TYPE_NOT_SUPPORTED,
            message,
            {
                "inputModes": list(ask.inputs),
                "acceptedOutputModes": list(outputs),
                "agents": listed,
            },
        )

    # -- the decision ---------------------------------------------------------------------

    def pick(
        self,
        message: Any,
        candidates: Collection[str] | None = None,
        *,
        accepted_output_modes: Sequence[str] | None = None,
    ) -> Decision:
        """The agent (and skill) for a v1.0 `Message` JSON. `candidates`: the agent names the
        caller may call (None: all). Raises `A2aError` for bad input, an unknown skill id,
        modes no agent takes (-32005), or no agent available."""
        ask = _read_message(message)
        outputs = tuple(
            m for m in (accepted_output_modes or ()) if isinstance(m, str) and m.strip()
        )
        if candidates is not None and not isinstance(candidates, (set, frozenset, dict)):
            candidates = set(candidates)
        permitted = [candidates is None or agent.name in candidates for agent in self.agents]
        fits = self._fits(ask.inputs, outputs)
        if ask.skill is not None:
            return self._explicit(ask, outputs, fits, permitted)
        live = [i for i, agent in enumerate(self.agents) if permitted[i] and agent.up]
        if not live:
            raise A2aError(
                INTERNAL_ERROR,
                "no agent is available for this message (every agent the caller may call is down)"
                if any(permitted)
                else "no agent is available for this message (the caller may call none)",
                status=503,
            )
        live_set = set(live)
        entries = self._entries
        eligible = [i for i, fit in enumerate(fits) if fit >= 0 and entries[i].agent in live_set]
        if not eligible:
            raise self._unsupported(ask, outputs, live, None)
        fitting_agents = {entries[i].agent for i in eligible}
        scores = self._bm25.scores(ask.text) if ask.text else None
        best: tuple[int, float, int, int] | None = None
        for i in eligible:
            hits = len(entries[i].tags & ask.tags) if ask.tags else 0
            score = scores[i] if scores is not None else 0.0
            if hits or score > 0:
                key = (hits, score, fits[i], -i)
                if best is None or key > best:
                    best = key
        if best is not None:
            hits, score, _, negative = best
            entry = entries[-negative]
            return Decision(
                self.agents[entry.agent].name, entry.skill, "match", round(hits + score, 6)
            )
        chosen = max(eligible, key=lambda i: (fits[i], -i))
        entry = entries[chosen]
        fitting_skills = [i for i in eligible if entries[i].agent == entry.agent]
        skill = entry.skill if len(fitting_skills) == 1 else None
        if len(live) == 1:
            reason = "default"
        elif len(fitting_agents) == 1:
            reason = "mode"
        else:
            runner_up = max(
                (fits[i] for i in eligible if entries[i].agent != entry.agent), default=-1
            )
            reason = "mode" if fits[chosen] > runner_up else "default"
        return Decision(self.agents[entry.agent].name, skill, reason, 0.0)

    def _explicit(
        self,
        ask: _Ask,
        outputs: tuple[str, ...],
        fits: tuple[int, ...],
        permitted: Sequence[bool],
    ) -> Decision:
        skill = ask.skill or ""
        routed = self._by_routed_id.get(skill)
        owners = [routed] if routed is not None else self._by_id.get(skill, [])
        owners = [e for e in owners if permitted[self._entries[e].agent]]
        if not owners:
            raise A2aError(INVALID_PARAMS, f"unknown skill id {skill!r}", {"skillId": skill})
        up = [e for e in owners if self.agents[self._entries[e].agent].up]
        if not up:
            names = ", ".join(_dedup(self.agents[self._entries[e].agent].name for e in owners))
            raise A2aError(
                INTERNAL_ERROR, f"the agent of skill {skill!r} is down ({names})", status=503
            )
        fitting = [e for e in up if fits[e] >= 0]
        if not fitting:
            agents = _dedup_ints(self._entries[e].agent for e in up)
            raise self._unsupported(ask, outputs, agents, self._entries[up[0]].skill)
        chosen = max(fitting, key=lambda e: (fits[e], -e))
        entry = self._entries[chosen]
        return Decision(self.agents[entry.agent].name, entry.skill, "skill", 1.0)

    def resolve_skill(self, skill_id: str) -> tuple[str, str] | None:
        """(agent name, the agent's own skill id) for a router-card id `agent/skill`."""
        number = self._by_routed_id.get(skill_id)
        if number is None:
            return None
        entry = self._entries[number]
        return self.agents[entry.agent].name, entry.skill or ""

    # -- the catalog ----------------------------------------------------------------------

    def search(
        self,
        *,
        skill: str | None = None,
        tag: str | None = None,
        mode: str | None = None,
        q: str | None = None,
    ) -> list[dict[str, Any]]:
        """Catalog entries of the agents matching every filter given (case-insensitive):
        `skill` an id, router id (`agent/skill`) or name; `tag` an agent or skill tag; `mode` an
        input or output mode, wildcards either side (`image/*`); `q` free text, ranked by the
        same BM25 match as `pick` (agents without a match left out)."""
        wanted_skill = skill.strip().lower() if skill else None
        wanted_tag = tag.strip().lower() if tag else None
        wanted_mode = _media_range(mode) if mode and mode.strip() else None
        scores = self._bm25.scores(q) if q and q.strip() else None
        found: list[tuple[float, int, dict[str, Any]]] = []
        for position, agent in enumerate(self.agents):
            skills = _skills(agent)
            if wanted_skill is not None and not any(
                wanted_skill
                in {
                    _text(s.get("id")).lower(),
                    _text(s.get("name")).lower(),
                    routed_skill_id(agent.name, _text(s.get("id"))).lower(),
                }
                for s in skills
            ):
                continue
            if wanted_tag is not None and wanted_tag not in {t.lower() for t in agent.tags} | {
                t.lower() for s in skills for t in _strings(s.get("tags"))
            }:
                continue
            own = [self._entries[e] for e in self._agent_entries[position]]
            if wanted_mode is not None and not any(
                _best_fit(wanted_mode, e.inputs) >= 0 or _best_fit(wanted_mode, e.outputs) >= 0
                for e in own
            ):
                continue
            entry = catalog_entry(agent)
            score = 0.0
            if scores is not None:
                score = max((scores[e] for e in self._agent_entries[position]), default=0.0)
                if score <= 0:
                    continue
                entry["score"] = round(score, 6)
            found.append((score, position, entry))
        if scores is not None:
            found.sort(key=lambda item: (-item[0], item[1]))
        return [entry for _, _, entry in found]


def _dedup_ints(items: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(items))


def _range_text(media: MediaRange) -> str:
    return f"{media[0]}/{media[1]}"


def routed_skill_id(agent: str, skill_id: str) -> str:
    """A skill's id on the router card: `agent-name/skill-id` (agent names have no `/`)."""
    return f"{agent}/{skill_id}"


def _skill_entry(agent: Agent, skill: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": _text(skill.get("id")),
        "name": _text(skill.get("name")),
        "description": _text(skill.get("description")),
        "tags": _strings(skill.get("tags")),
        "inputModes": skill_input_modes(agent, skill),
        "outputModes": skill_output_modes(agent, skill),
    }


def catalog_entry(agent: Agent) -> dict[str, Any]:
    """One agent in the catalog; `cardUrl` is None here, filled by the backend (it knows the
    public URL)."""
    return {
        "name": agent.name,
        "description": _description(agent),
        "version": agent.version,
        "skills": [_skill_entry(agent, s) for s in _skills(agent)],
        "tags": list(agent.tags),
        "inputModes": list(agent.input_modes) or list(DEFAULT_MODES),
        "outputModes": list(agent.output_modes) or list(DEFAULT_MODES),
        "up": agent.up,
        "cardUrl": None,
    }


def search_catalog(
    agents: Sequence[Agent],
    *,
    skill: str | None = None,
    tag: str | None = None,
    mode: str | None = None,
    q: str | None = None,
) -> list[dict[str, Any]]:
    """`CapabilityRouter(agents).search(...)`: for a one-off search (a router already built
    for the same agents is cheaper)."""
    return CapabilityRouter(agents).search(skill=skill, tag=tag, mode=mode, q=q)


def router_card(
    agents: Sequence[Agent],
    base_url: str,
    name: str = "Crossway router",
    description: str = "Routes each message to the registered agent whose skills fit it best.",
    *,
    version: str = __version__,
) -> dict[str, Any]:
    """The router agent's v1.0 card: every agent's skills, each with the id
    `agent-name/skill-id` (unique; `CapabilityRouter.resolve_skill` maps it back) and its
    effective modes; default modes the union of the agents'; JSON-RPC and HTTP+JSON at
    `base_url`."""
    skills: list[dict[str, Any]] = []
    inputs: list[str] = []
    outputs: list[str] = []
    for agent in agents:
        inputs.extend(agent.input_modes or DEFAULT_MODES)
        outputs.extend(agent.output_modes or DEFAULT_MODES)
        for skill in _skills(agent):
            skill_id = _text(skill.get("id"))
            if not skill_id:
                continue
            entry = _skill_entry(agent, skill)
            entry["id"] = routed_skill_id(agent.name, skill_id)
            entry["name"] = entry["name"] or skill_id
            examples = _strings(skill.get("examples"))
            if examples:
                entry["examples"] = examples
            inputs.extend(entry["inputModes"])
            outputs.extend(entry["outputModes"])
            skills.append(entry)
    return {
        "name": name,
        "description": description,
        "version": version,
        "supportedInterfaces": [
            {"url": base_url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": base_url, "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
        ],
        "capabilities": {"streaming": True},
        "defaultInputModes": _dedup(inputs) or list(DEFAULT_MODES),
        "defaultOutputModes": _dedup(outputs) or list(DEFAULT_MODES),
        "skills": skills,
    }


__all__ = [
    "CapabilityRouter",
    "catalog_entry",
    "routed_skill_id",
    "router_card",
    "search_catalog",
    "skill_input_modes",
    "skill_output_modes",
    "tokenize",
]
