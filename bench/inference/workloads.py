"""The benchmark's workloads, deterministic for a seed.

- `prefix`: heavy prefix sharing, the Inference Extension's published method at a smaller
  scale: `groups` groups, each with a long system prompt shared by all its requests, and a
  short distinct user question per request; a request's group is drawn uniformly.
- `hot`: the same with few groups of skewed popularity (one group takes about half the
  traffic): where prefix affinity alone piles a hot group onto one server.
- `distinct`: low sharing: every prompt is distinct from its first characters on.
- `lora`: many LoRA adapters with Zipf-like popularity (adapter k is asked for with weight
  1 / (k + 1) ** s); prompts distinct and short, so only adapter placement matters.

Prompt text is pseudo-words from a fixed vocabulary, so its token count under the simulator's
tokenizer (characters / 4) is close to `chars / 4`.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from bench.inference.load import chat_body

CHARS_PER_TOKEN: Final = 4
"""The simulator's tokenizer: 4 characters are one token."""
VOCABULARY_SIZE: Final = 4096


def _vocabulary(seed: int) -> list[str]:
    rng = random.Random(seed)
    letters = string.ascii_lowercase
    return ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(VOCABULARY_SIZE)]


_WORDS: Final = _vocabulary(12)


def text(rng: random.Random, chars: int) -> str:
    """Pseudo-words, `chars` characters long (roughly)."""
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:chars]


@dataclass(frozen=True)
class Batch:
    """The requests of one rate step: bodies and a tag for each (group, adapter...)."""

    bodies: list[bytes]
    tags: list[str]


@dataclass(frozen=True)
class Workload:
    """A kind of traffic: how to make `count` requests for step `step`."""

    name: str
    title: str
    model: str = "sim-model"
    system_tokens: int = 0
    """Tokens of each group's shared system prompt (prefix)."""
    question_tokens: int = 64
    """Tokens of each request's own text."""
    output_tokens: int = 32
    """`max_tokens` of each request (the simulator generates exactly that many)."""
    groups: int = 0
    """Prefix groups (prefix workloads)."""
    group_zipf_s: float = 0.0
    """Skew of group popularity (group g has weight 1 / (g + 1) ** s); 0: uniform."""
    adapters: int = 0
    """LoRA adapters (lora workload)."""
    zipf_s: float = 1.1
    """Skew of adapter popularity."""
    seed: int = 1
    sim_args: tuple[str, ...] = field(default_factory=tuple)
    """Extra simulator flags this workload needs (LoRA slots...)."""

    def adapter_names(self) -> list[str]:
        return [f"{self.model}-lora-{k:02d}" for k in range(self.adapters)]

    def system_prompt(self, group: int) -> str:
        rng = random.Random(self.seed * 1_000_003 + group)
        header = f"You are assistant number {group} of the benchmark. "
        return header + text(rng, self.system_tokens * CHARS_PER_TOKEN - len(header))

    def batch(self, count: int, step: int) -> Batch:
        """`count` requests for rate step `step` (each step's requests differ)."""
        rng = random.Random(f"{self.seed}:{step}:{self.name}")
        bodies: list[bytes] = []
        tags: list[str] = []
        names = self.adapter_names()
        weights = [1.0 / (k + 1) ** self.zipf_s for k in range(len(names))]
        systems = [self.system_prompt(g) for g in range(self.groups)]
        group_weights = [1.0 / (g + 1) ** self.group_zipf_s for g in range(self.groups)]
        for i in range(count):
            question = f"Question {step}.{i}: " + text(rng, self.question_tokens * CHARS_PER_TOKEN)
            model = self.model
            if self.groups:
                if self.group_zipf_s:
                    group = rng.choices(range(self.groups), group_weights)[0]
                else:
                    group = rng.randrange(self.groups)
                messages = [
                    {"role": "system", "content": systems[group]},
                    {"role": "user", "content": question},
                ]
                tag = f"g{group}"
            else:
                messages = [{"role": "user", "content": question}]
                tag = ""
            if names:
                model = rng.choices(names, weights)[0]
                tag = model
            bodies.append(chat_body(model, messages, self.output_tokens))
            tags.append(tag)
        return Batch(bodies, tags)


def zipf_shares(count: int, s: float) -> list[float]:
    """The popularity of each of `count` adapters (sums to 1)."""
    weights = [1.0 / (k + 1) ** s for k in range(count)]
    total = sum(weights)
    return [w / total for w in weights]


def names(workloads: Sequence[Workload]) -> list[str]:
    return [w.name for w in workloads]
