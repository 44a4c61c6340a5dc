"""Cooldown shared across workers and replicas through Redis (`routing.cooldown.redis_url`).

Routing health lives in each worker process. With a Redis URL, an ejection (a deployment put
in cooldown) is also written to Redis and announced on a channel, so every worker of every
replica that serves the same backend skips that deployment too; a success on an ejected
deployment clears it everywhere. Only ejections are shared: failure counts, latency and
in-flight numbers stay per process.

    key      crossway:llm:{backend}:cooldown:{provider}/{model}   value: end (Unix time), with a TTL
    channel  crossway:llm:{backend}:cooldown                      {"p", "m", "until", "from"}

Nothing here runs on the request path: publishing is a background task started only when a
deployment is ejected or cleared, and a listener task applies what the others announce (and,
on each (re)connection, the ejections already in Redis). When Redis is unreachable the gateway
keeps routing with its local health and reconnects in the background. Ends are wall-clock
times, so replicas' clocks should be in sync (NTP).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from crossway.llm.routing import DeploymentHealth

log = logging.getLogger("crossway.llm")

RECONNECT_MIN_SECONDS: Final = 0.5
RECONNECT_MAX_SECONDS: Final = 30.0

HealthKey = tuple[str, str | None]


class SharedCooldown:
    """Publishes this process's ejections and applies the others', for one backend."""

    def __init__(
        self, url: str, backend: str, health: Callable[[], dict[HealthKey, DeploymentHealth]]
    ) -> None:
        self.url = url
        self.backend = backend
        self.channel = f"crossway:llm:{backend}:cooldown"
        self._health = health
        self._me = os.urandom(8).hex()
        self._redis: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._down = False

    def key(self, provider: str, model: str | None) -> str:
        return f"{self.channel}:{provider}/{model or '*'}"

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(self.url)
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        tasks = [t for t in (self._listener, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    # -- this process -> the others -------------------------------------------------------------

    def ejected(self, provider: str, model: str | None, seconds: float) -> None:
        """Announce that this process put a deployment in cooldown for `seconds`."""
        self._spawn(self._publish(provider, model, time.time() + seconds, seconds))

    def cleared(self, provider: str, model: str | None) -> None:
        """Announce that an ejected deployment answered again."""
        self._spawn(self._publish(provider, model, 0.0, 0.0))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no running loop: nothing to share with
            coro.close()
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, provider: str, model: str | None, until: float, ttl: float) -> None:
        if self._redis is None:
            return
        key = self.key(provider, model)
        message = orjson.dumps({"p": provider, "m": model, "until": until, "from": self._me})
        try:
            if until:
                await self._redis.set(key, repr(until), px=max(1, int(ttl * 1000)))
            else:
                await self._redis.delete(key)
            await self._redis.publish(self.channel, message)
        except (RedisError, OSError) as exc:
            log.warning("llm %s: could not share a cooldown through Redis: %s", self.backend, exc)

    # -- the others -> this process ---------------------------------------------------------------

    async def _listen(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not self._down:
                    log.warning(
                        "llm %s: Redis for shared cooldown unreachable (%s); routing with this "
                        "process's health until it is back",
                        self.backend,
                        exc,
                    )
                self._down = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _follow(self) -> None:
        assert self._redis is not None
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            await self._load_existing()  # after subscribing, so nothing falls in between
            if self._down:
                log.warning("llm %s: Redis for shared cooldown is back", self.backend)
                self._down = False
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and message.get("type") == "message":
                    self._apply_message(message.get("data"))
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _load_existing(self) -> None:
        assert self._redis is not None
        keys = list(self._health())
        if not keys:
            return
        values = await self._redis.mget([self.key(p, m) for p, m in keys])
        for (provider, model), value in zip(keys, values, strict=True):
            if value is not None:
                try:
                    self._apply(provider, model, float(value))
                except ValueError:
                    continue

    def _apply_message(self, data: object) -> None:
        try:
            event = orjson.loads(data)  # type: ignore[arg-type]
            if event.get("from") == self._me:
                return
            self._apply(str(event["p"]), event.get("m"), float(event["until"]))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            log.warning("llm %s: ignored a malformed shared-cooldown message", self.backend)

    def _apply(self, provider: str, model: str | None, until: float) -> None:
        health = self._health().get((provider, model))
        if health is None:
            return  # a deployment this process's config does not have
        if not until:
            if health.cooldown_until:
                log.info("llm %s: %s/%s answered again elsewhere", self.backend, provider, model)
            health.cooldown_until = 0.0
            health.failures = 0
            return
        left = until - time.time()
        if left <= 0:
            return
        health.cooldown_until = max(health.cooldown_until, time.monotonic() + left)
        log.info(
            "llm %s: %s/%s cooling down for %.0f s (shared by another gateway process)",
            self.backend,
            provider,
            model or "*",
            left,
        )
