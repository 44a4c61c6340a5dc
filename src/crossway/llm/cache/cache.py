"""`LlmCache`: the response cache of one LLM backend (`backends.<name>.cache`).

The backend calls it at three points of `LlmBackend.serve`, after the request guards ran (so a
masked prompt is what is keyed and embedded):

    hit = await cache.lookup(call, ctx)       exact key, then (semantic on) the nearest prompt
    await hit.send(call, ctx, receive, send)  the whole answer, JSON or SSE, in the client's API
    cache.store(call, ctx, body, usage, cost)   a non-streamed answer, as the client got it
    relayed = cache.record(call, ctx, relayed)  a stream: tapped, stored once it ended cleanly

Every request it considers gets `x-crossway-cache: hit|miss` (semantic hits also
`x-crossway-cache-similarity`); one it does not (rules, `Cache-Control: no-store`) gets
`x-crossway-cache: bypass`. A hit sets `ctx.attrs["llm.cache"]`, zero usage and cost, and the
provider `cache`: the spend record says the call cost nothing and was served by the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from crossway.config.llm_cache import LlmCacheConfig
from crossway.llm.cache.answer import (
    CachedAnswer,
    Incomplete,
    StreamCapture,
    from_body,
    replay_body,
    replay_stream,
    usage_json,
)
from crossway.llm.cache.embedder import BackendEmbedder, Embedder, WordLlamaEmbedder
from crossway.llm.cache.index import CacheIndex, Vector
from crossway.llm.cache.keys import Considered, consider
from crossway.llm.cache.shared import SharedEntries
from crossway.llm.calls import LlmCall
from crossway.llm.usage import Usage, usage_from_body
from crossway.server.asgi import JSON_HEADERS, SSE_HEADERS, LastChunk, send_response
from crossway.server.context import RequestContext
from crossway.telemetry import metrics
from crossway.telemetry.request_log import note_response, tap_stream
from crossway.types import Message, Receive, Send

if TYPE_CHECKING:
    from crossway.llm.backend import LlmBackend

log = logging.getLogger("crossway.llm.cache")

HEADER: Final = b"x-crossway-cache"
SIMILARITY_HEADER: Final = b"x-crossway-cache-similarity"
CACHE_PROVIDER: Final = "cache"
"""The provider a hit's usage, access log line and spend record name."""
_STATE: Final = "llm.cache.pending"
"""`ctx.attrs` key: the request's keys (and prompt vector), from lookup to store."""
_ZERO_USAGE: Final = Usage().as_dict()


@dataclass(slots=True)
class _Pending:
    considered: Considered
    vector: Vector | None


class CacheHit:
    """A cached answer found for a request: `send` answers the client with it."""

    __slots__ = ("answer", "cache", "kind", "similarity")

    def __init__(
        self, cache: LlmCache, answer: CachedAnswer, kind: str, similarity: float | None
    ) -> None:
        self.cache = cache
        self.answer = answer
        self.kind = kind
        self.similarity = similarity

    async def send(self, call: LlmCall, ctx: RequestContext, receive: Receive, send: Send) -> None:
        """The whole answer in the client's API (JSON, or an SSE stream when it asked for one)."""
        from crossway.llm.backend import _response_phase  # (the backend imports this lazily)

        answer = self.answer
        saved_cost = answer.cost or 0.0
        saved_tokens = answer.saved_tokens()
        info: dict[str, Any] = {
            "hit": True,
            "kind": self.kind,
            "saved_tokens": saved_tokens,
            "saved_cost": saved_cost,
        }
        headers = [(HEADER, b"hit")]
        if self.similarity is not None:
            info["similarity"] = round(self.similarity, 3)
            headers.append((SIMILARITY_HEADER, f"{self.similarity:.3f}".encode()))
        _add_headers(ctx, headers)
        ctx.attrs["llm.cache"] = info
        ctx.attrs["llm.provider"] = CACHE_PROVIDER
        ctx.attrs["llm.upstream_model"] = None
        ctx.attrs["llm.usage"] = dict(_ZERO_USAGE)  # nothing was consumed upstream
        ctx.attrs["llm.cost"] = 0.0
        ctx.attrs["llm.attempts"] = 0
        self.cache.count_hit(self.kind, saved_tokens, saved_cost)
        await _response_phase(ctx)
        if not call.stream:
            body = replay_body(answer, call.api, call.model, call.source)
            note_response(body)
            await send_response(send, 200, body, JSON_HEADERS)
            return
        data = replay_stream(answer, call.api, call.model, call.source, call.wants_usage)
        await _stream_once(send, data)


async def _stream_once(send: Send, data: bytes) -> None:
    """A whole SSE stream in one body message (kept by the request log, when on)."""
    await send({"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)})
    chunks = tap_stream(_one(data))
    async for chunk in chunks:
        message: Message = {"type": "http.response.body", "body": bytes(chunk)}
        await send(message)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield LastChunk(data)


def _add_headers(ctx: RequestContext, headers: list[tuple[bytes, bytes]]) -> None:
    if ctx.response_headers is None:
        ctx.response_headers = headers
    else:
        ctx.response_headers.extend(headers)


class LlmCache:
    """Exact and semantic response cache of one LLM backend (one per worker process)."""

    def __init__(self, backend: LlmBackend, config: LlmCacheConfig) -> None:
        self.backend_name = backend.name
        self.config = config
        self.max_event_bytes = backend.config.max_event_bytes
        self.embedder: Embedder | None = None
        semantic = config.semantic
        if semantic is not None:
            model = semantic.embedding.model
            if model is None:
                self.embedder = WordLlamaEmbedder(semantic.embedding.wordllama_dir)
            else:
                self.embedder = BackendEmbedder(model, _embeddings_through(backend))
        self.threshold = semantic.threshold if semantic is not None else 1.0
        self.semantic = False  # True once the embedding model loaded
        self.index = CacheIndex(config.max_entries, 0)
        self.shared: SharedEntries | None = None
        self._embed_failed = False
        self._loader: asyncio.Task[None] | None = None

    def _metrics(self) -> metrics.LlmCacheChildren:
        return metrics.llm_cache_children(self.backend_name)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the embedding model (off the event loop) and connect to Redis, if configured.
        A model that fails to load turns the semantic part off, with one log line."""
        if self.embedder is not None:
            if isinstance(self.embedder, BackendEmbedder):
                # The backend's providers may not be reachable yet: loaded in the background.
                self._loader = asyncio.get_running_loop().create_task(self._load())
            else:
                await self._load()
        if self.config.redis_url:
            self.shared = SharedEntries(
                self.config.redis_url,
                self.config.redis_prefix,
                self.backend_name,
                self.config.redis_timeout,
                self.config.max_entries,
                self._announced,
            )
            await self.shared.start()

    async def _load(self) -> None:
        assert self.embedder is not None
        try:
            await self.embedder.load()
        except Exception as exc:
            log.error(
                "llm cache %s: the semantic cache is off: its embedding model failed to load "
                "(%s: %s); the exact cache still serves",
                self.backend_name,
                type(exc).__name__,
                exc,
            )
            return
        self.index.dim = self.embedder.dim
        self.semantic = True
        log.info(
            "llm cache %s: semantic cache on (%d dimensions, threshold %.2f)",
            self.backend_name,
            self.embedder.dim,
            self.threshold,
        )

    async def close(self) -> None:
        if self._loader is not None:
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        if self.shared is not None:
            await self.shared.close()
            self.shared = None

    # -- lookup ---------------------------------------------------------------------------------

    async def lookup(self, call: LlmCall, ctx: RequestContext) -> CacheHit | None:
        """The cached answer for this request, or None (then the request goes upstream)."""
        considered, reason = consider(call, ctx, self.config)
        if considered is None:
            _add_headers(ctx, [(HEADER, b"bypass")])
            self._metrics().bypassed(reason)
            return None
        pending = _Pending(considered, None)
        ctx.attrs[_STATE] = pending
        if considered.lookup:
            answer = await self._exact(considered.exact)
            if answer is not None:
                return CacheHit(self, answer, "exact", None)
            self._metrics().requests["exact", "miss"].inc()
        if self.semantic and considered.prompt is not None:
            pending.vector = await self._embed(considered.prompt)
            if pending.vector is not None and considered.lookup:
                hit = await self._nearest(considered.semantic_partition, pending.vector)
                if hit is not None:
                    return hit
                self._metrics().requests["semantic", "miss"].inc()
        _add_headers(ctx, [(HEADER, b"miss")])
        return None

    async def _exact(self, key: str) -> CachedAnswer | None:
        entry = self.index.get(key)
        if entry is None:
            return None
        if entry.answer is None:  # another process stored it: the answer is in Redis
            entry.answer = await self._fetch(key)
            if entry.answer is None:
                self.index.remove(key)
                self._gauge()
                return None
        return entry.answer

    async def _nearest(self, partition: str, vector: Vector) -> CacheHit | None:
        key, similarity = self.index.nearest(partition, vector)
        if key is None or similarity < self.threshold:
            return None
        answer = await self._exact(key)
        if answer is None:
            return None
        return CacheHit(self, answer, "semantic", min(similarity, 1.0))

    async def _fetch(self, key: str) -> CachedAnswer | None:
        if self.shared is None:
            return None
        data = await self.shared.fetch(key)
        if data is None:
            return None
        try:
            return CachedAnswer.from_json(data)
        except (ValueError, KeyError, TypeError):
            return None

    async def _embed(self, prompt: str) -> Vector | None:
        assert self.embedder is not None
        try:
            vector = await self.embedder.embed(prompt)
        except Exception as exc:
            if not self._embed_failed:
                self._embed_failed = True
                log.warning(
                    "llm cache %s: embedding a prompt failed (%s: %s); those requests use the "
                    "exact cache only",
                    self.backend_name,
                    type(exc).__name__,
                    exc,
                )
            return None
        self._embed_failed = False
        return vector

    # -- store ----------------------------------------------------------------------------------

    def store(
        self,
        call: LlmCall,
        ctx: RequestContext,
        body: bytes,
        usage: Usage | None,
        cost: float | None,
    ) -> None:
        """Keep a non-streamed answer (`body`: what the client gets)."""
        pending: _Pending | None = ctx.attrs.pop(_STATE, None)
        if pending is None:
            return
        try:
            answer = from_body(call.api, body)
        except Incomplete:
            self._metrics().stores["incomplete"].inc()
            return
        if usage is None:
            usage = usage_from_body(body)
        if usage is not None:
            answer.usage = usage_json(usage)
        answer.cost = cost
        self._put(pending, answer)

    def record(
        self, call: LlmCall, ctx: RequestContext, chunks: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        """The client's stream, unchanged; its answer is stored once it ended cleanly."""
        pending: _Pending | None = ctx.attrs.pop(_STATE, None)
        if pending is None:
            return chunks
        return self._record(call, ctx, chunks, pending)

    async def _record(
        self, call: LlmCall, ctx: RequestContext, chunks: AsyncIterator[Any], pending: _Pending
    ) -> AsyncIterator[Any]:
        capture = StreamCapture(
            call.api, call.model, self.config.max_entry_bytes, self.max_event_bytes
        )
        async for chunk in chunks:
            capture.feed(chunk)
            yield chunk
        # The relay's own end ran before the loop above ended: usage and cost are known.
        try:
            answer = capture.answer(_usage_of(ctx.attrs.get("llm.usage")))
        except Incomplete:
            self._metrics().stores["incomplete"].inc()
            return
        answer.cost = ctx.attrs.get("llm.cost")
        self._put(pending, answer)

    def _put(self, pending: _Pending, answer: CachedAnswer) -> None:
        data = answer.to_json()
        if len(data) > self.config.max_entry_bytes:
            self._metrics().stores["too_large"].inc()
            return
        considered = pending.considered
        expires = time.time() + self.config.ttl
        vector = pending.vector
        partition = considered.semantic_partition if vector is not None else ""
        self.index.put(considered.exact, expires, answer, partition, vector)
        self._metrics().stores["stored"].inc()
        self._gauge()
        if self.shared is not None:
            self.shared.write(considered.exact, self.config.ttl, data, partition, vector)

    def _announced(self, key: str, expires: float, partition: str, vector: Vector | None) -> None:
        """An entry another process stored (from the Redis feed)."""
        if vector is not None and (not self.semantic or len(vector) != self.index.dim):
            vector, partition = None, ""
        self.index.put(key, expires, None, partition, vector)
        self._gauge()

    def _gauge(self) -> None:
        self._metrics().entries.set(len(self.index))

    def count_hit(self, kind: str, tokens: int, cost: float) -> None:
        self._metrics().requests[kind, "hit"].inc()
        if tokens:
            self._metrics().saved_tokens.inc(tokens)
        if cost:
            self._metrics().saved_cost.inc(cost)


def _usage_of(value: Any) -> Usage | None:
    """`ctx.attrs["llm.usage"]` (a `Usage.as_dict()`) as a `Usage` again."""
    if not isinstance(value, dict):
        return None
    try:
        return Usage(**{k: v for k, v in value.items() if k != "total_tokens"})
    except TypeError:
        return None


def _embeddings_through(backend: LlmBackend) -> Any:
    """An `EmbeddingsCall` served by `backend`'s own routing (retries, failover, cooldown)."""
    from crossway.llm.embeddings import embeddings_call, embeddings_plan

    async def never_disconnects() -> Message:
        await asyncio.Event().wait()  # the cache's own request has no client to leave
        raise AssertionError("unreachable")

    async def call(body: bytes) -> bytes:
        request = embeddings_call(body)
        plan = embeddings_plan(request, backend.router)
        ctx = RequestContext("_cache", backend.name, "", "/v1/embeddings")
        answer = await backend._attempt_all(request, plan, never_disconnects, ctx)
        return answer.body

    return call
