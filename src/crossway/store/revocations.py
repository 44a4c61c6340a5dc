"""Revocations: opaque ids that must never be accepted again, each until it would have expired.

A caller revokes an id (a hash of a session id, a token id...) with the time the id could still
have lived; every replica sharing the store then refuses it. Two implementations, picked by
config (`crossway.config.store.RevocationStoreConfig`):

    MemoryRevocations   this process only (one replica, one worker)
    RedisRevocations    shared: key `{namespace}{id}`, value "1", TTL = the time left

Nothing here knows which protocol it serves; the caller names its own namespace.
"""

from __future__ import annotations

import heapq
import time
from typing import Final, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from crossway.config.store import MemoryStoreConfig, RedisStoreConfig, RevocationStoreConfig
from crossway.errors import ServiceUnavailable

MIN_TTL_SECONDS: Final = 1.0
"""Shortest a revocation is kept (an id about to expire still must not work in its last second)."""
REDIS_TIMEOUT_SECONDS: Final = 2.0
"""Connect and command timeout of the Redis client: a dead Redis fails requests fast."""


class StoreUnavailable(ServiceUnavailable):
    """A shared store could not be reached; callers fail closed (503)."""


class RevocationStore(Protocol):
    """Ids that must never work again, each kept for the time it could still have lived."""

    async def revoke(self, revoked_id: str, ttl_seconds: float) -> None:
        """Refuse `revoked_id` from now on, for at least `ttl_seconds`."""

    async def is_revoked(self, revoked_id: str) -> bool:
        """Whether `revoked_id` was revoked (raises `StoreUnavailable` if that is unknowable)."""

    async def close(self) -> None:
        """Release connections."""


class MemoryRevocations:
    """Revocations held by this process; expired ones are dropped as new ones arrive."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []

    def revoke_now(self, revoked_id: str, ttl_seconds: float) -> None:
        """`revoke`, synchronously (the in-process store needs no I/O)."""
        now = time.monotonic()
        self._prune(now)
        until = now + max(ttl_seconds, MIN_TTL_SECONDS)
        if until > self._until.get(revoked_id, 0.0):
            self._until[revoked_id] = until
            heapq.heappush(self._expiries, (until, revoked_id))

    def revoked_now(self, revoked_id: str) -> bool:
        """`is_revoked`, synchronously."""
        until = self._until.get(revoked_id)
        return until is not None and until > time.monotonic()

    async def revoke(self, revoked_id: str, ttl_seconds: float) -> None:
        self.revoke_now(revoked_id, ttl_seconds)

    async def is_revoked(self, revoked_id: str) -> bool:
        return self.revoked_now(revoked_id)

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._until)

    def _prune(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            until, revoked_id = heapq.heappop(self._expiries)
            if self._until.get(revoked_id) == until:
                del self._until[revoked_id]


class RedisRevocations:
    """Revocations in Redis, shared by every worker and replica using the same server.

    A revocation seen once is remembered in this process, so only ids not (yet) known to be
    revoked cost a round trip. Redis errors raise `StoreUnavailable`: a revocation that cannot
    be checked does not let the id through.
    """

    def __init__(self, url: str, namespace: str) -> None:
        self.namespace = namespace
        self._redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self._seen = MemoryRevocations()

    async def revoke(self, revoked_id: str, ttl_seconds: float) -> None:
        ttl = max(ttl_seconds, MIN_TTL_SECONDS)
        self._seen.revoke_now(revoked_id, ttl)
        try:
            await self._redis.set(self.namespace + revoked_id, b"1", px=int(ttl * 1000))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the revocation store is unreachable") from exc

    async def is_revoked(self, revoked_id: str) -> bool:
        if self._seen.revoked_now(revoked_id):
            return True
        try:
            ttl_ms = await self._redis.pttl(self.namespace + revoked_id)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the revocation store is unreachable") from exc
        if ttl_ms == -2:  # no such key
            return False
        self._seen.revoke_now(revoked_id, ttl_ms / 1000 if ttl_ms > 0 else MIN_TTL_SECONDS)
        return True

    async def close(self) -> None:
        await self._redis.aclose()


def build_revocations(cfg: RevocationStoreConfig, namespace: str) -> RevocationStore:
    """The store `cfg` names; `namespace` prefixes its Redis keys (e.g. `crossway:mcp:revoked:`)."""
    if isinstance(cfg, RedisStoreConfig):
        return RedisRevocations(cfg.url.get_secret_value(), namespace)
    assert isinstance(cfg, MemoryStoreConfig)
    return MemoryRevocations()
