"""Entries shared across workers and replicas through Redis (`cache.redis_url`).

Redis 7 (Debian's) has no vector search, so Redis holds the answers and a feed of new entries,
and every process searches its own in-process index:

    {prefix}{backend}:e:{key}   the answer (normalized JSON), with the entry's TTL
    {prefix}{backend}:feed      a stream (capped near `max_entries`): per new entry its key,
                                semantic partition, vector (float32 bytes), expiry, writer id

A process that stores an entry writes both in one pipeline, in the background. A follower task
reads the feed (its backlog at start, then `XREAD BLOCK`) and adds each entry to the local
index without its answer; a hit on such an entry fetches the answer with one `GET`. Nothing
waits for Redis on the request path except that `GET`, bounded by `cache.redis_timeout`.
Redis down: logged once, the process serves from what it has (and misses the rest), and the
follower reconnects with back-off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, cast

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from crossway.llm.cache.index import Vector

log = logging.getLogger("crossway.llm.cache")

FEED_BLOCK_MS: Final = 1000
"""How long one `XREAD` waits for new entries (then it is sent again)."""
RECONNECT_MIN_SECONDS: Final = 0.5
RECONNECT_MAX_SECONDS: Final = 30.0

Apply = Callable[[str, float, str, Vector | None], None]
"""Adds an entry another process stored: key, expiry, semantic partition, vector."""


class SharedEntries:
    """One backend's cache entries in Redis, and the follower that feeds the local index."""

    def __init__(
        self,
        url: str,
        prefix: str,
        backend: str,
        timeout: float,
        max_entries: int,
        apply: Apply,
    ) -> None:
        self.url = url
        self.base = f"{prefix}{backend}:"
        self.feed = self.base + "feed"
        self.timeout = timeout
        self.max_entries = max_entries
        self._apply = apply
        self._me = os.urandom(8).hex()
        self._redis: aioredis.Redis | None = None
        self._follower: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._down = False
        self.following = asyncio.Event()  # set once the backlog was read (tests, readiness)

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        self._follower = asyncio.get_running_loop().create_task(self._follow())

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=self.timeout * 2)
        tasks = [t for t in (self._follower, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    def _failed(self, what: str, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            log.warning(
                "llm cache: Redis %s is unreachable (%s: %s); serving from this process's "
                "entries only until it is back",
                self.url.split("@")[-1],
                what,
                exc or type(exc).__name__,
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.warning("llm cache: Redis is reachable again; entries are shared again")

    # -- this process -> the others -------------------------------------------------------------

    def write(
        self, key: str, ttl: float, answer: bytes, partition: str, vector: Vector | None
    ) -> None:
        """Store an entry in Redis and announce it (in the background)."""
        self._spawn(self._write(key, ttl, answer, partition, vector))

    async def _write(
        self, key: str, ttl: float, answer: bytes, partition: str, vector: Vector | None
    ) -> None:
        assert self._redis is not None
        fields: dict[Any, Any] = {
            "k": key,
            "x": repr(time.time() + ttl),
            "o": self._me,
            "p": partition,
            "v": b"" if vector is None else vector.astype(np.float32).tobytes(),
        }
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self.base + "e:" + key, answer, px=max(int(ttl * 1000), 1))
                pipe.xadd(self.feed, fields, maxlen=self.max_entries, approximate=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("storing an entry", exc)
            return
        self._recovered()

    async def fetch(self, key: str) -> bytes | None:
        """The answer stored under `key`, or None (expired, evicted, or Redis unreachable)."""
        assert self._redis is not None
        try:
            value = await self._redis.get(self.base + "e:" + key)
        except (RedisError, OSError) as exc:
            self._failed("reading an entry", exc)
            return None
        self._recovered()
        return value if isinstance(value, bytes) else None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- the others -> this process -------------------------------------------------------------

    async def _follow(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        follower = aioredis.Redis.from_url(
            self.url,
            socket_timeout=FEED_BLOCK_MS / 1000 + self.timeout,
            socket_connect_timeout=self.timeout,
        )
        last = b""
        try:
            while True:
                try:
                    if not last:
                        last = await self._backlog(follower)
                    self.following.set()
                    self._recovered()
                    delay = RECONNECT_MIN_SECONDS
                    while True:
                        found = cast(
                            list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                            await follower.xread({self.feed: last}, block=FEED_BLOCK_MS),
                        )
                        for _stream, items in found or ():
                            for entry_id, fields in items:
                                last = entry_id
                                self._entry(fields)
                except (RedisError, OSError) as exc:
                    self._failed("following new entries", exc)
                    self.following.set()  # serving without it: nobody waits for the backlog
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_SECONDS)
        finally:
            await follower.aclose()

    async def _backlog(self, follower: aioredis.Redis) -> bytes:
        """Apply the entries already announced (newest `max_entries`); the last id read."""
        items = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await follower.xrevrange(self.feed, count=self.max_entries),
        )
        for _entry_id, fields in reversed(items):
            self._entry(fields, mine_too=True)
        return items[0][0] if items else b"0-0"

    def _entry(self, fields: dict[bytes, bytes], mine_too: bool = False) -> None:
        try:
            if fields.get(b"o", b"").decode() == self._me and not mine_too:
                return
            expires = float(fields[b"x"])
            if expires <= time.time():
                return
            raw = fields.get(b"v") or b""
            vector = np.frombuffer(raw, dtype=np.float32).copy() if raw else None
            self._apply(fields[b"k"].decode(), expires, fields.get(b"p", b"").decode(), vector)
        except (KeyError, ValueError, UnicodeDecodeError):
            log.debug("llm cache: skipped a malformed feed entry")
