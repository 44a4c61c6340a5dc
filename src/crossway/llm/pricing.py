"""What a request cost: the bundled price table, config overrides, and the lookup by model name.

Prices are USD per 1M tokens. A model name is matched after dropping provider prefixes
(`openai/gpt-4o`, `us.anthropic.claude-3-5-sonnet-20241022-v2:0`, `models/gemini-2.0-flash`),
first exactly, then by the longest table key it starts with at a `-`, `@`, `:` or `.`
boundary — so `claude-3-5-sonnet-20241022` costs what `claude-3-5-sonnet` costs, while
`gpt-4o-mini` never falls back to `gpt-4o`'s price.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import orjson

from crossway.llm.usage import Usage

PER_TOKENS: Final = 1_000_000
"""Prices are quoted per this many tokens."""
_BOUNDARY: Final = frozenset("-@:.")
_REGION_PREFIXES: Final = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.")
_VENDOR_PREFIXES: Final = ("anthropic.", "amazon.", "meta.", "mistral.", "cohere.", "ai21.")


@dataclass(slots=True, frozen=True)
class Price:
    """USD per 1M tokens; cache prices default to the input price when a model has none, the
    reasoning price to the output price."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None

    def cost(self, usage: Usage) -> float:
        """USD for `usage` at this price."""
        cached = min(usage.cached_tokens, usage.input_tokens)
        written = min(usage.cache_write_tokens, usage.input_tokens - cached)
        fresh = usage.input_tokens - cached - written
        total = (
            fresh * self.input
            + cached * (self.cached_input if self.cached_input is not None else self.input)
            + written * (self.cache_write if self.cache_write is not None else self.input)
            + usage.output_tokens * self.output
        )
        if self.reasoning is not None:  # reasoning tokens are output tokens at their own price
            reasoning = min(usage.reasoning_tokens, usage.output_tokens)
            total += reasoning * (self.reasoning - self.output)
        return total / PER_TOKENS


def normalize_model_name(name: str) -> str:
    """Drop routing and vendor prefixes: `openai/gpt-4o` -> `gpt-4o`."""
    name = name.strip().lower().rsplit("/", 1)[-1]
    for prefix in _REGION_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    for prefix in _VENDOR_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name


@functools.cache
def bundled_prices() -> dict[str, Price]:
    """The price table shipped with Crossway (read once)."""
    raw = importlib.resources.files("crossway.llm").joinpath("data/prices.json").read_bytes()
    return {name: Price(**entry) for name, entry in orjson.loads(raw)["models"].items()}


class PriceTable:
    """The bundled prices with a backend's overrides on top; lookups are memoized per name."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._prices = dict(bundled_prices())
        self._exact = {name.lower(): price for name, price in (overrides or {}).items()}
        self._prices.update({normalize_model_name(k): v for k, v in self._exact.items()})
        self._by_length = sorted(self._prices, key=len, reverse=True)
        self._memo: dict[str, Price | None] = {}

    def lookup(self, model: str) -> Price | None:
        """The price of `model`, or None when neither the table nor the overrides know it."""
        try:
            return self._memo[model]
        except KeyError:
            pass
        price = self._exact.get(model.lower())
        if price is None:
            name = normalize_model_name(model)
            price = self._prices.get(name)
            if price is None:
                for key in self._by_length:
                    if name.startswith(key) and name[len(key)] in _BOUNDARY:
                        price = self._prices[key]
                        break
        if len(self._memo) < 10_000:
            self._memo[model] = price
        return price

    def cost(self, usage: Usage, *models: str) -> float | None:
        """USD for `usage`, priced as the first of `models` the table knows; None if none."""
        for model in models:
            price = self.lookup(model)
            if price is not None:
                return price.cost(usage)
        return None
