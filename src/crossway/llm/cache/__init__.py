"""The LLM response cache: exact and semantic, in process or shared through Redis.

cache      `LlmCache` (what `LlmBackend` calls) and `CacheHit`
keys       which requests are cached, their tenant partition and keys
answer     the normalized answer: captured from the client's body or stream, replayed in
           any client API, JSON or SSE
index      the in-process entries (LRU, TTL) and per-partition vector matrices
embedder   prompt embeddings: wordllama (bundled) or an embeddings model of the backend
shared     entries shared across processes and replicas through Redis
"""

from crossway.llm.cache.cache import CacheHit, LlmCache

__all__ = ["CacheHit", "LlmCache"]
