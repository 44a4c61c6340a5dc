"""Rate-limit windows in Redis, shared by every replica naming the same server (the `global`
mode of `crossway.policy.limits`).

One window counter per limit and counted value, anchored at its first hit:

    key    {prefix}rl:{measure}:{token kind}:{limit}/{window ms}:{len(name)}:{name}:{value}
    value  requests or tokens counted in the window; expires one window after its first hit

A check (`take`) covers every global item of a request: only if all counters have room is each
amount added (`INCRBY`), the expiry set only on a key that has none yet (a new window); if any
would exceed its limit, nothing is added. Windows use only Redis's own clock (the key's TTL),
so no replica's clock matters.

Checks are coalesced ("auto-pipelining"): a check is sent at once when no script call is in
flight; checks that arrive meanwhile (or in the same loop iteration) wait for it and then go
together, at most `MAX_BATCH_CHECKS`, in ONE script call that runs them one after another inside
Redis, each all or nothing over its own items, as if sent alone. Redis runs a script
atomically, so limits stay exact across replicas however checks are batched.

Corrections of token reservations (`settle_later`) never wait for Redis: they are summed per
window in this process and written in one script call every `SETTLE_INTERVAL_SECONDS` (sooner
past `SETTLE_BATCH` windows, and on `flush` / `aclose`). A correction only changes a window that
still exists (an expired window is never resurrected without a TTL), and one whose window has
ended by the time it is written is dropped. The queue is bounded (`MAX_PENDING_SETTLES`);
corrections that cannot be written (Redis down) are dropped with one log line per outage —
they only give back (or add) the difference to reservations that were already counted.

Calls wait at most `within` seconds (the caller's timeout); a failure opens a breaker for
`BREAKER_SECONDS`, during which calls fail at once (`WindowsUnavailable`) without touching the
network, and then one call probes Redis again. The outage is logged once, and its end once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

log = logging.getLogger("crossway.policy.limits")

BREAKER_SECONDS: Final = 1.0
"""After a failed call, Redis is not tried again for this long (a dead Redis costs nothing)."""
SOCKET_TIMEOUT_SECONDS: Final = 5.0
"""Backstop of the client's own socket timeouts (each call is bounded by its caller's)."""
MAX_CONNECTIONS: Final = 8
"""Connections per process and server: checks go one batch at a time, corrections and warm-up
take one more each."""
MAX_VALUE_CHARS: Final = 128
"""Counted values longer than this are replaced by their SHA-256 in keys (bounded key size)."""
MAX_BATCH_CHECKS: Final = 128
"""Checks sent together in one script call at most (the rest go in the next call)."""
MAX_QUEUED_CHECKS: Final = 20_000
"""Checks waiting for Redis at most; beyond, a check fails at once like an unreachable Redis."""
SETTLE_INTERVAL_SECONDS: Final = 0.05
"""Queued token corrections are written this often (one script call)."""
SETTLE_BATCH: Final = 512
"""Windows with a queued correction that trigger a write at once (and per script call)."""
MAX_PENDING_SETTLES: Final = 100_000
"""Windows with a queued correction at most; corrections of further windows are dropped."""
SETTLE_TIMEOUT_SECONDS: Final = 1.0
"""How long one write of queued corrections may take (off the request path)."""

_TAKE: Final = """
-- Checks one after another, each all or nothing over its own keys.
-- ARGV: per check its key count n, then amount, limit, window ms of each of its n keys;
-- KEYS: every check's keys in order. One reply per check:
-- granted {1, count1, ttl1, count2, ttl2, ...} (counts after adding);
-- refused {0, index, count, ttl} of the refusing key that frees up last; nothing is added.
local replies = {}
local k, a = 0, 1
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  a = a + 1
  local counts = {}
  local after = {}  -- a key listed twice counts both amounts
  local worst, worst_ttl = 0, -1
  for i = 1, n do
    local key = KEYS[k + i]
    local count = after[key] or tonumber(redis.call('GET', key) or '0')
    counts[i] = count
    after[key] = count + tonumber(ARGV[a + 3 * i - 3])
    if after[key] > tonumber(ARGV[a + 3 * i - 2]) then
      local ttl = redis.call('PTTL', key)
      if ttl < 0 then ttl = tonumber(ARGV[a + 3 * i - 1]) end
      if ttl > worst_ttl then worst, worst_ttl = i, ttl end
    end
  end
  if worst > 0 then
    replies[#replies + 1] = {0, worst, counts[worst], worst_ttl}
  else
    local out = {1}
    for i = 1, n do
      local key = KEYS[k + i]
      local window = tonumber(ARGV[a + 3 * i - 1])
      local count = redis.call('INCRBY', key, ARGV[a + 3 * i - 3])
      local ttl = redis.call('PTTL', key)
      if ttl < 0 then
        -- a new window (INCRBY created the key): it lasts one window from this first hit
        redis.call('PEXPIRE', key, window)
        ttl = window
      end
      out[#out + 1] = count
      out[#out + 1] = ttl
    end
    replies[#replies + 1] = out
  end
  k = k + n
  a = a + 3 * n
end
return replies
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

_SCRIPTS: Final = (_TAKE, _ADJUST)
_SHAS: Final = tuple(hashlib.sha1(s.encode()).hexdigest() for s in _SCRIPTS)
_TAKE_HEAD: Final = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n" + _SHAS[0].encode() + b"\r\n"
_LOAD_TAKE: Final = b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$%d\r\n%b\r\n" % (
    len(_TAKE.encode()),
    _TAKE.encode(),
)


def _pack_take(keys: list[str], args: list[int]) -> bytes:
    """`EVALSHA <take> numkeys keys... args...` in RESP, packed here: a fraction of what
    redis-py's generic packing (encoders, per-argument type checks) costs per call."""
    out = [_TAKE_HEAD % (3 + len(keys) + len(args))]
    n = b"%d" % len(keys)
    out.append(b"$%d\r\n%b\r\n" % (len(n), n))
    for key in keys:
        data = key.encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    for arg in args:
        data = b"%d" % arg
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


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


class _Check:
    __slots__ = ("args", "future", "keys", "within")

    def __init__(
        self, keys: list[str], args: list[int], future: asyncio.Future[Any], within: float
    ) -> None:
        self.keys = keys
        self.args = args
        self.future = future
        self.within = within


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

    def __init__(
        self,
        url: str,
        prefix: str = "crossway:",
        *,
        settle_interval: float = SETTLE_INTERVAL_SECONDS,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.settle_interval = settle_interval
        self._client: aioredis.Redis | None = None
        self._conn: Any = None  # the checks' connection (see `_send_take`)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_until = 0.0
        self._down = False
        self._probing = False
        # checks waiting to be sent, and whether a sender task runs on `_loop`
        self._checks: list[_Check] = []
        self._sending = False
        # queued corrections: window key -> [delta, monotonic time its window ends, window s]
        self._settles: dict[str, list[float]] = {}
        self._settle_timer: asyncio.TimerHandle | None = None
        self._flushing = False
        self._dropped_logged = False
        self._tasks: set[asyncio.Task[None]] = set()

    def key(
        self, name: str, measure: str, token_kind: str, limit: int, window: float, value: str
    ) -> str:
        return window_key(self.prefix, name, measure, token_kind, limit, window, value)

    @property
    def down(self) -> bool:
        """Whether the last call failed (the outage has not ended yet)."""
        return self._down

    @property
    def pending_settles(self) -> int:
        """Windows with a correction queued and not written yet."""
        return len(self._settles)

    def _redis(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            pool = aioredis.ConnectionPool.from_url(
                self.url,
                max_connections=MAX_CONNECTIONS,
                socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),
            )
            self._client = aioredis.Redis(connection_pool=pool)
            self._conn = None
            self._loop = loop
            # what belonged to another (ended) loop: its senders and timers are gone
            self._checks = []
            self._sending = False
            self._settle_timer = None
            self._flushing = False
            self._tasks = set()
        return self._client

    # -- checks -------------------------------------------------------------------------------

    async def take(
        self, items: Sequence[tuple[str, int, int, float]], within: float
    ) -> Granted | Refused:
        """Add `amount` to each `(key, amount, limit, window seconds)` if all have room, else
        nothing. Raises `WindowsUnavailable`."""
        if len(self._checks) >= MAX_QUEUED_CHECKS:
            raise WindowsUnavailable("too many rate-limit checks wait for the store")
        self._enter()
        loop = self._loop
        if loop is None or loop is not asyncio.get_running_loop():
            self._redis()
            loop = self._loop
            assert loop is not None
        keys = [item[0] for item in items]
        args: list[int] = []
        for _, amount, limit, window in items:
            args += (amount, limit, max(1, int(window * 1000)))
        future: asyncio.Future[Any] = loop.create_future()
        self._checks.append(_Check(keys, args, future, within))
        if not self._sending:
            self._sending = True
            self._spawn(self._send_checks())
        try:
            async with asyncio.timeout(within):
                reply = await future
        except TimeoutError as exc:
            self._failed(exc)
            raise WindowsUnavailable("the rate-limit store is unreachable") from exc
        if int(reply[0]) == 1:
            return Granted([int(c) for c in reply[1::2]], [int(t) / 1000 for t in reply[2::2]])
        return Refused(int(reply[1]) - 1, int(reply[2]), int(reply[3]) / 1000)

    def _enter(self) -> None:
        """Raise at once while the breaker is open; the first call after it is the probe."""
        if self._down:
            if time.monotonic() < self._down_until or self._probing:
                raise WindowsUnavailable("the rate-limit store is unreachable")
            self._probing = True

    async def _send_checks(self) -> None:
        """Send queued checks, one script call at a time, until none is left."""
        try:
            while self._checks:
                batch = [c for c in self._checks[:MAX_BATCH_CHECKS] if not c.future.done()]
                del self._checks[:MAX_BATCH_CHECKS]
                if not batch:
                    continue
                keys: list[str] = []
                args: list[int] = []
                for check in batch:
                    keys += check.keys
                    args.append(len(check.keys))
                    args += check.args
                try:
                    async with asyncio.timeout(max(c.within for c in batch)):
                        replies = await self._send_take(_pack_take(keys, args))
                except (RedisError, OSError, TimeoutError) as exc:
                    self._failed(exc)
                    # the breaker is open: what queued meanwhile fails at once too
                    batch += self._checks
                    self._checks = []
                    for check in batch:
                        if not check.future.done():
                            check.future.set_exception(
                                WindowsUnavailable("the rate-limit store is unreachable")
                            )
                    continue
                finally:
                    self._probing = False
                self._answered()
                for check, reply in zip(batch, replies, strict=True):
                    if not check.future.done():
                        check.future.set_result(reply)
        finally:
            self._sending = False

    # -- corrections --------------------------------------------------------------------------

    def settle_later(self, items: Sequence[tuple[str, int, float, float]]) -> None:
        """Queue `(key, delta, monotonic time the window ends or 0, window seconds)` corrections,
        written within `settle_interval` (see the module docstring). Never raises, never
        waits."""
        pending = self._settles
        for key, delta, ends, window in items:
            entry = pending.get(key)
            if entry is None:
                if len(pending) >= MAX_PENDING_SETTLES:
                    self._dropped(1, "the queue is full")
                    continue
                pending[key] = [delta, ends, window]
            elif not (ends and entry[1]):  # an end not known (0): Redis's EXISTS decides
                entry[0] += delta
                entry[1] = max(entry[1], ends)
            elif ends > entry[1] + window / 2:
                # a later window of the same key: the earlier one has ended, so has its
                # correction
                entry[0], entry[1] = delta, ends
            elif ends >= entry[1] - window / 2:
                entry[0] += delta
            # else: a correction of an earlier, ended window
        if not pending:
            return
        if self._loop is not asyncio.get_running_loop():
            self._redis()
        if len(pending) >= SETTLE_BATCH:
            self._flush_soon()
        elif self._settle_timer is None and not self._flushing:
            assert self._loop is not None
            self._settle_timer = self._loop.call_later(self.settle_interval, self._flush_soon)

    def _flush_soon(self) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush_all())

    async def _flush_all(self) -> None:
        try:
            while self._settles:
                await self._write_settles()
        finally:
            self._flushing = False

    async def flush(self) -> None:
        """Write every queued correction now (at shutdown, and in tests)."""
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        while self._settles:
            await self._write_settles()

    async def _write_settles(self) -> None:
        pending = self._settles
        now = time.monotonic()
        keys: list[str] = []
        deltas: list[int] = []
        for key in list(pending)[:SETTLE_BATCH]:
            delta, ends, _ = pending.pop(key)
            if delta and (not ends or ends > now):  # an ended window's correction is moot
                keys.append(key)
                deltas.append(int(delta))
        if not keys:
            return
        if self._down and time.monotonic() < self._down_until:
            self._dropped(len(keys), "Redis is unreachable")
            return
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT_SECONDS):
                await self._script(1, keys, deltas)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            self._dropped(len(keys), "Redis is unreachable")
            return
        self._answered()

    def _dropped(self, count: int, why: str) -> None:
        if not self._dropped_logged:
            self._dropped_logged = True
            log.warning(
                "rate limits: %d token correction(s) dropped (%s); counters keep the "
                "reservations until their windows end",
                count,
                why,
            )

    # -- the client ---------------------------------------------------------------------------

    async def _send_take(self, command: bytes) -> Any:
        """One take script call on the checks' own connection (one call at a time, so no pool;
        no socket timeout of its own: the caller's `asyncio.timeout` bounds it, and an
        interrupted call disconnects it, to reconnect at the next)."""
        conn = self._conn
        if conn is None:
            pool = self._redis().connection_pool
            options = dict(pool.connection_kwargs, socket_timeout=None)
            conn = self._conn = pool.connection_class(**options)
        await conn.send_packed_command(command, check_health=False)
        try:
            return await conn.read_response(timeout=math.inf)
        except NoScriptError:  # a restarted or flushed Redis: load it and try again
            await conn.send_packed_command(_LOAD_TAKE, check_health=False)
            await conn.read_response(timeout=math.inf)
            await conn.send_packed_command(command, check_health=False)
            return await conn.read_response(timeout=math.inf)

    async def _script(self, which: int, keys: list[str], args: list[int]) -> Any:
        client = self._redis()
        try:
            return await client.evalsha(_SHAS[which], len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:  # a restarted or flushed Redis: load it and try again
            await client.script_load(_SCRIPTS[which])
            return await client.evalsha(_SHAS[which], len(keys), *keys, *args)  # type: ignore[misc]

    def _spawn(self, work: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def warm(self, within: float) -> None:
        """Open a connection and load the scripts (at start-up, so the first burst of requests
        does not pay for it). Failures only mark the store down."""
        try:
            client = self._redis()
            async with asyncio.timeout(within):
                for script in _SCRIPTS:
                    await client.script_load(script)
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

    def _answered(self) -> None:
        if self._down:
            self._down = False
            self._dropped_logged = False
            log.warning("rate limits: Redis answers again; global limits are enforced")

    async def aclose(self) -> None:
        """Write queued corrections, then close this loop's client (tests; a process's
        windows live as long as it)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self.flush()
        for task in list(self._tasks):
            task.cancel()
        client, self._client = self._client, None
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()
        if client is not None:
            await client.aclose()
