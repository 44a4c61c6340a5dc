"""Config of an LLM backend's response cache (`backends.<name>.cache`): exact and semantic."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import Field

from crossway.config.base import StrictModel
from crossway.config.secrets import SecretUrl

DEFAULT_CACHE_TTL_SECONDS: Final = 3600.0
DEFAULT_CACHE_MAX_ENTRIES: Final = 10_000
DEFAULT_CACHE_MAX_ENTRY_BYTES: Final = 256 * 1024
DEFAULT_SEMANTIC_THRESHOLD: Final = 0.86
"""Cosine similarity a semantic hit needs. On wordllama of normalized prompts (256 dims,
bench/cache/run.py's labelled pairs) paraphrases score 0.69-1.0 (median 0.96) and different
questions on one topic at most 0.82: at 0.86, 12 of 16 paraphrases are served and none of
16 different questions."""
DEFAULT_MAX_TEMPERATURE: Final = 0.0
DEFAULT_MAX_USER_TURNS: Final = 1
DEFAULT_REDIS_PREFIX: Final = "crossway:cache:"
DEFAULT_REDIS_TIMEOUT_SECONDS: Final = 0.5

CacheScope = Literal["key", "team", "global"]


class CacheEmbeddingConfig(StrictModel):
    """Which model embeds prompts for the semantic cache."""

    model: str | None = None
    """A model name of this same backend that serves `/v1/embeddings` (called through the
    backend's own routing, retries and failover). Unset: the bundled wordllama model (no
    download, well under a millisecond per prompt)."""
    wordllama_dir: Path | None = None
    """Where wordllama's weights and tokenizer are. Unset: the ones inside the wordllama
    wheel."""


class SemanticCacheConfig(StrictModel):
    """The semantic cache: a prompt close enough to a cached one gets its answer."""

    threshold: float = Field(default=DEFAULT_SEMANTIC_THRESHOLD, gt=0, le=1)
    """Cosine similarity (0-1] the nearest cached prompt needs to be served. Lower serves more
    paraphrases, and more wrong answers."""
    embedding: CacheEmbeddingConfig = Field(default_factory=CacheEmbeddingConfig)
    """The embedding model (default: wordllama, bundled)."""


class LlmCacheConfig(StrictModel):
    """The response cache of an LLM backend. Safe by default: entries are per team (or key),
    and requests with tools, a temperature above 0 or more than one user turn are not cached."""

    ttl: float = Field(default=DEFAULT_CACHE_TTL_SECONDS, gt=0)
    """Seconds an answer is served from the cache after it was stored."""
    max_entries: int = Field(default=DEFAULT_CACHE_MAX_ENTRIES, gt=0)
    """Entries kept per worker process; the least recently used go first."""
    max_entry_bytes: int = Field(default=DEFAULT_CACHE_MAX_ENTRY_BYTES, gt=0)
    """Largest answer stored (its normalized JSON); larger answers are not cached."""
    scope: CacheScope = "team"
    """Who shares entries: `team` (the caller's team when its key has one, else its key),
    `key` (the key, or the authenticated identity), `global` (every caller: only for a route
    whose answers are not private)."""
    semantic: SemanticCacheConfig | None = None
    """Also answer prompts similar to a cached one (off when unset: exact matches only)."""
    allow_tools: bool = False
    """Cache requests that offer tools (or functions); off by default, since agents' tool
    calls depend on state the request does not show."""
    max_temperature: float = Field(default=DEFAULT_MAX_TEMPERATURE, ge=0)
    """Highest `temperature` a cached request may ask for. A request without one is cached
    (the provider's default is not known to be random)."""
    max_user_turns: int = Field(default=DEFAULT_MAX_USER_TURNS, ge=1)
    """Most user turns a cached request may hold. A request with an assistant or tool message
    has at least two."""
    redis_url: SecretUrl | None = None
    """`redis://HOST:PORT/DB`: share entries with every worker and replica using the same
    Redis and backend name (each keeps its own in-process index, fed from Redis). Unset: each
    worker process keeps its own."""
    redis_prefix: str = DEFAULT_REDIS_PREFIX
    """Prefix of the Redis keys (with the backend name after it)."""
    redis_timeout: float = Field(default=DEFAULT_REDIS_TIMEOUT_SECONDS, gt=0)
    """Seconds a Redis command may take before the cache gives up on it (and serves without)."""
