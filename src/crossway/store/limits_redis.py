"""Rate-limit windows in Redis, shared by every replica naming the same server (the `global`
mode of `crossway.policy.limits`).

One window counter per limit and counted value, anchored at its first hit:

    key    {prefix}rl:{measure}:{token kind}:{limit}/{window ms}:{len(name)}:{name}:{value}
    value  requests or tokens counted in the window; expires one window after its first hit

`take` is ONE Lua script over every global item of a request (one round trip): it reads every
counter, and only if all have room it adds each amount (`INCRBY`), setting the expiry only on a
key that has none yet (a new window). If any would exceed its limit, nothing is added. Windows
use only Redis's own clock (the key's TTL), so no replica's clock matters. `adjust` corrects a
token reservation once the real count is known, only in a window that still exists (an expired
window is never resurrected without a TTL).

Calls wait at most `within` seconds (the caller's timeout); a failure opens a breaker for
`BREAKER_SECONDS`, during which calls fail at once (`WindowsUnavailable`) without touching the
network, and then one call probes Redis again. The outage is logged once, and its end once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("crossway.policy.limits")

BREAKER_SECONDS: Final = 1.0
"""After a failed call, Redis is not tried again for this long (a dead Redis costs nothing)."""
SOCKET_TIMEOUT_SECONDS: Final = 5.0
"""Backstop of the client's own socket timeouts (each call is bounded by its caller's)."""
MAX_CONNECTIONS: Final = 32
"""Connections per process and server; a burst queues for one (a script takes microseconds)
instead of opening hundreds at once."""
MAX_VALUE_CHARS: Final = 128
"""Counted values longer than this are replaced by their SHA-256 in keys (bounded key size)."""

_TAKE: Final = """
-- KEYS: window counters; ARGV: amount, limit, window ms for each key (3 per key).
-- Granted: {1, count1, ttl1, count2, ttl2, ...} (counts after adding).
-- Refused: {0, index, count, ttl} of the refusing key that frees up last; nothing is added.
local n = #KEYS
local counts = {}
local after = {}  -- a key listed twice counts both amounts
local worst, worst_ttl = 0, -1
for i = 1, n do
  local count = after[KEYS[i]] or tonumber(redis.call('GET', KEYS[i]) or '0')
  counts[i] = count
  after[KEYS[i]] = count + tonumber(ARGV[3 * i - 2])
  if after[KEYS[i]] > tonumber(ARGV[3 * i - 1]) then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then ttl = tonumber(ARGV[3 * i]) end
    if ttl > worst_ttl then worst, worst_ttl = i, ttl end
  end
end
if worst > 0 then return {0, worst, counts[worst], worst_ttl} end
local out = {1}
for i = 1, n do
  local window = tonumber(ARGV[3 * i])
  local count = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl < 0 then
    -- a new window (INCRBY created the key): it lasts one window from this first hit
    redis.call('PEXPIRE', KEYS[i], window)
    ttl = window
  end
  out[#out + 1] = count
  out[#out + 1] = ttl
end
return out
"""

_ADJUST: Final = """
-- KEYS: window counters; ARGV: a delta for each. Only windows that still exist change, and a
-- counter never goes below zero; INCRBY keeps the key's TTL.
for i = 1, #KEYS do
  local delta = tonumber(ARGV[i])
  if delta ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    local count = redis.call('INCRBY', KEYS[i], delta)
    if count < 0 then redis.call('INCRBY', KEYS[i], -count) end
  end
end
return 1
"""


class WindowsUnavailable(Exception):
    """Redis could not answer in time (or the breaker is open after a recent failure)."""


@dataclass(frozen=True, slots=True)
class Granted:
    """Every item got its amount: counts after adding, and seconds left in each window."""

    counts: list[int]
    ttls: list[float]


@dataclass(frozen=True, slots=True)
class Refused:
    """Item `index` has no room (nothing was added): its count and seconds left."""

    index: int
    count: int
    ttl: float


def window_key(
    prefix: str, name: str, measure: str, token_kind: str, limit: int, window: float, value: str
) -> str:
    """The Redis key of one limit's window for one counted value (long values hashed)."""
    if len(value) > MAX_VALUE_CHARS:
        value = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return (
        f"{prefix}rl:{measure}:{token_kind}:{limit}/{int(window * 1000)}:{len(name)}:{name}:{value}"
    )


class RedisWindows:
    """Window counters in one Redis server, with a breaker. One client per event loop (a
    client's connections belong to the loop that opened them)."""

    def __init__(self, url: str, prefix: str = "crossway:") -> None:
        self.url = url
        self.prefix = prefix
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._take: Any = None
        self._adjust: Any = None
        self._down_until = 0.0
        self._down = False
        self._probing = False

    def key(
        self, name: str, measure: str, token_kind: str, limit: int, window: float, value: str
    ) -> str:
        return window_key(self.prefix, name, measure, token_kind, limit, window, value)

    @property
    def down(self) -> bool:
        """Whether the last call failed (the outage has not ended yet)."""
        return self._down

    def _redis(self) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=MAX_CONNECTIONS,
                timeout=None,  # a request waits for a connection within its own timeout
                socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),
            )
            self._client = aioredis.Redis(connection_pool=pool)
            self._loop = loop
            self._take = self._client.register_script(_TAKE)
            self._adjust = self._client.register_script(_ADJUST)
        return self._take, self._adjust

    async def take(
        self, items: Sequence[tuple[str, int, int, float]], within: float
    ) -> Granted | Refused:
        """Add `amount` to each `(key, amount, limit, window seconds)` if all have room, else
        nothing. Raises `WindowsUnavailable`."""
        keys = [item[0] for item in items]
        args: list[int] = []
        for _, amount, limit, window in items:
            args += (amount, limit, max(1, int(window * 1000)))
        reply = await self._call(0, keys, args, within)
        if int(reply[0]) == 1:
            return Granted([int(c) for c in reply[1::2]], [int(t) / 1000 for t in reply[2::2]])
        return Refused(int(reply[1]) - 1, int(reply[2]), int(reply[3]) / 1000)

    async def adjust(self, items: Sequence[tuple[str, int]], within: float) -> None:
        """Add each delta to its window if the window still exists. Raises
        `WindowsUnavailable`."""
        await self._call(1, [k for k, _ in items], [d for _, d in items], within)

    async def warm(self, within: float) -> None:
        """Open a connection and load the scripts (at start-up, so the first burst of requests
        does not pay for it). Failures only mark the store down."""
        try:
            self._redis()
            assert self._client is not None
            async with asyncio.timeout(within):
                await self._client.script_load(_TAKE)
                await self._client.script_load(_ADJUST)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + BREAKER_SECONDS
        if not self._down:
            self._down = True
            log.warning(
                "rate limits: Redis unreachable (%s); global limits follow on_store_error "
                "until it answers again (retried every %.0f s)",
                str(exc) or type(exc).__name__,
                BREAKER_SECONDS,
            )

    async def _call(self, which: int, keys: list[str], args: list[int], within: float) -> Any:
        now = time.monotonic()
        if now < self._down_until or (self._down and self._probing):
            raise WindowsUnavailable("the rate-limit store is unreachable")
        probe = self._down
        if probe:
            self._probing = True
        try:
            script = self._redis()[which]
            async with asyncio.timeout(within):
                reply = await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise WindowsUnavailable("the rate-limit store is unreachable") from exc
        finally:
            if probe:
                self._probing = False
        if self._down:
            self._down = False
            log.warning("rate limits: Redis answers again; global limits are enforced")
        return reply

    async def aclose(self) -> None:
        """Close this loop's client (tests; a process's windows live as long as it)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
