"""The rate limiter both the `rate_limit` and the `virtual_key` policies use.

A limit (`LimitSpec`) counts `requests` or LLM `tokens` per `window` seconds, separately for
each counted value (a key id, a user, a model...). `Limiter.acquire` takes one request (and a
token reservation) from every limit that applies, all or nothing; `Limiter.settle` replaces
the reservation by the real token count once the call ended (or releases it when it failed).

- `local` limits are token buckets in this process: capacity `limit`, refilled at
  `limit / window` per second on `time.monotonic` (a wall-clock jump changes nothing). Full
  buckets are indistinguishable from new ones, so they are dropped; the table is bounded
  (`DEFAULT_MAX_BUCKETS`) however many values callers invent.
- `global` limits are window counters in Redis (`crossway.store.limits_redis`), shared by every
  replica: one Lua script per check, nothing added unless every counter has room; concurrent
  checks of a process share one script call, and token settlements are queued and written in
  batches off the request path (`Limiter.close` writes what is queued). When Redis cannot
  answer within `timeout`, `on_store_error` decides: `allow` skips the global limits (logged
  once per outage), `deny` answers 503; a breaker then skips Redis for a second.

A token reservation is the caller's estimate (prompt + `max_tokens`), at least 1 and at most the
limit: a request larger than the whole limit still runs when the limit is untouched, and its
real count is settled afterwards (a bucket may go into debt, down to minus its capacity, which
later requests wait out). A refused request takes nothing from any limit.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from crossway.config.accounting import DEFAULT_STORE_TIMEOUT, AccountingConfig, StoreErrorMode
from crossway.errors import RateLimited, ServiceUnavailable
from crossway.store.limits_redis import (
    MAX_VALUE_CHARS,
    RedisWindows,
    Refused,
    WindowsUnavailable,
)
from crossway.telemetry import metrics

if TYPE_CHECKING:
    from crossway.server.context import RequestContext

log = logging.getLogger("crossway.policy.limits")

Measure = Literal["requests", "tokens"]
TokenKind = Literal["total", "input", "output"]

DEFAULT_MAX_BUCKETS: Final = 100_000
"""Local buckets kept per process (about 100 bytes each); beyond it full buckets are dropped
first, then the oldest."""
SWEEP_INTERVAL_SECONDS: Final = 30.0
"""How often full (idle) local buckets are dropped even below the bound."""
EVICT_SHARE: Final = 0.1
"""Share of the table dropped (oldest first) when every bucket is in use at the bound."""
STORE_ERROR_RETRY_AFTER: Final = 1
"""`Retry-After` of the 503 answered when Redis is down and `on_store_error` is `deny`."""
WARM_TIMEOUT_SECONDS: Final = 2.0
"""How long start-up waits for Redis before serving with it marked down."""
RATE_LIMIT_CODE: Final = "rate_limit_exceeded"
SHOWN_ATTR: Final = "rate_limit.shown"
"""`ctx.attrs` key: the tightest hit of each measure whose headers this response carries."""
_HEADER_PREFIX: Final = b"x-ratelimit-"


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit. Limits with equal fields share their counters (across routes and policies);
    give them distinct names to count separately."""

    name: str
    """Shown in errors: "key rpm", "team:tokens"."""
    measure: Measure
    limit: int
    window: float
    """Seconds."""
    mode: Literal["local", "global"] = "local"
    token_kind: TokenKind = "total"


@dataclass(slots=True)
class Hit:
    """One granted reservation."""

    spec: LimitSpec
    value: str
    """The counted value (a key id, a user...)."""
    amount: int
    """Taken: 1 request, or the token reservation."""
    remaining: int
    """What the limit had left right after this hit."""
    reset: float
    """Seconds until the limit is whole again (local) or its window ends (global)."""
    key: Any = None
    """Where it was taken: the local bucket's key or the Redis window's key."""
    ends: float = 0.0
    """Global hits: when (`time.monotonic`) their Redis window ends, as seen by this process
    (0: not known)."""


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


def _bounded(value: str) -> str:
    if len(value) > MAX_VALUE_CHARS:
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return value


def _refused(spec: LimitSpec, retry_after: float, remaining: int, reset: float) -> RateLimited:
    metrics.observe_rate_limited(spec.name)
    wait = max(1, math.ceil(retry_after))
    measure = spec.measure
    return RateLimited(
        f"rate limit exceeded: {spec.name} allows {spec.limit} {measure} per "
        f"{spec.window:g} s; retry after {wait} s",
        code=RATE_LIMIT_CODE,
        headers={
            "retry-after": str(wait),
            f"x-ratelimit-limit-{measure}": str(spec.limit),
            f"x-ratelimit-remaining-{measure}": str(max(0, remaining)),
            f"x-ratelimit-reset-{measure}": duration(reset),
        },
    )


def _reservation(spec: LimitSpec, tokens: int) -> int:
    if spec.measure == "requests":
        return 1
    return min(max(tokens, 1), spec.limit)


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1.5s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


def counted(spec: LimitSpec, usage: Mapping[str, int]) -> int:
    """The tokens of `usage` a token limit counts."""
    if spec.token_kind == "input":
        return int(usage.get("input_tokens") or 0)
    if spec.token_kind == "output":
        return int(usage.get("output_tokens") or 0)
    return int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)


class LocalBuckets:
    """Token buckets of this process, by `(spec, value)`; bounded (see the module docstring)."""

    def __init__(
        self,
        *,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets: dict[tuple[LimitSpec, str], _Bucket] = {}
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, items: Sequence[tuple[LimitSpec, str]], tokens: int) -> list[Hit]:
        """Take from every bucket, or raise `RateLimited` and take from none."""
        now = self.clock()
        buckets = self._buckets
        planned: list[tuple[tuple[LimitSpec, str], _Bucket | None, float, int]] = []
        refusal: tuple[float, LimitSpec, float] | None = None
        for key in items:
            spec = key[0]
            limit = spec.limit
            bucket = buckets.get(key)
            if bucket is None:
                level = float(limit)
            else:
                level = bucket.level + (now - bucket.stamp) * limit / spec.window
                if level > limit:
                    level = float(limit)
            need = 1 if spec.measure == "requests" else min(max(tokens, 1), limit)
            if level < need:
                wait = (need - level) * spec.window / limit
                if refusal is None or wait > refusal[0]:
                    refusal = (wait, spec, level)
            planned.append((key, bucket, level, need))
        if refusal is not None:
            wait, spec, level = refusal
            reset = (spec.limit - level) * spec.window / spec.limit
            raise _refused(spec, wait, math.floor(level), reset)
        hits = []
        for key, bucket, level, need in planned:
            spec = key[0]
            left = level - need
            if bucket is None:
                if len(buckets) >= self.max_buckets:
                    self._sweep(now, force=True)
                buckets[key] = _Bucket(left, now)
            else:
                bucket.level = left
                bucket.stamp = now
            reset = (spec.limit - left) * spec.window / spec.limit
            hits.append(Hit(spec, key[1], need, math.floor(left), reset, key))
        if now - self._swept > SWEEP_INTERVAL_SECONDS:
            self._sweep(now)
        return hits

    def adjust(self, hit: Hit, delta: float) -> None:
        """Take `delta` more (or give back `-delta`) from `hit`'s bucket."""
        if not delta:
            return
        spec = hit.spec
        now = self.clock()
        bucket = self._buckets.get(hit.key)
        if bucket is None:  # dropped while full: it is full now
            if delta <= 0:
                return
            if len(self._buckets) >= self.max_buckets:
                self._sweep(now, force=True)
            bucket = self._buckets[hit.key] = _Bucket(float(spec.limit), now)
        level = min(spec.limit, bucket.level + (now - bucket.stamp) * spec.limit / spec.window)
        bucket.level = max(-spec.limit, min(spec.limit, level - delta))
        bucket.stamp = now

    def _sweep(self, now: float, *, force: bool = False) -> None:
        """Drop full buckets; at the bound (`force`), also the oldest if none is full."""
        self._swept = now
        buckets = self._buckets
        full = [
            key
            for key, b in buckets.items()
            if b.level + (now - b.stamp) * key[0].limit / key[0].window >= key[0].limit
        ]
        for key in full:
            del buckets[key]
        if force and len(buckets) >= self.max_buckets:
            excess = len(buckets) - self.max_buckets + max(1, int(self.max_buckets * EVICT_SHARE))
            for key in list(buckets)[:excess]:
                del buckets[key]
            log.warning(
                "rate limits: %d local buckets in use (the bound); the %d oldest were reset",
                self.max_buckets,
                excess,
            )


class Limiter:
    """Local and global limits behind one all-or-nothing `acquire` (see the module docstring).
    Build it with `limiter_for`; tests build their own."""

    def __init__(
        self,
        *,
        local: LocalBuckets | None = None,
        windows: RedisWindows | None = None,
        on_store_error: StoreErrorMode = "allow",
        timeout: float = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        self.local = local if local is not None else LocalBuckets()
        self.windows = windows
        """Redis windows of `global` limits; None: global limits are counted locally."""
        self.on_store_error = on_store_error
        self.timeout = timeout

    async def warm(self) -> None:
        """Connect to Redis and load the scripts ahead of the first request (if global)."""
        if self.windows is not None:
            await self.windows.warm(max(self.timeout, WARM_TIMEOUT_SECONDS))

    async def acquire(self, items: Sequence[tuple[LimitSpec, str]], tokens: int = 0) -> list[Hit]:
        """Take 1 request or a `tokens` reservation from every `(spec, counted value)`, or
        raise `RateLimited` (429, `Retry-After`, `x-ratelimit-*`) and take nothing. With Redis
        down: `ServiceUnavailable` (503) when `on_store_error` is `deny`."""
        if not items:
            return []
        items = [(spec, _bounded(value)) for spec, value in items]
        windows = self.windows
        if windows is None or all(spec.mode == "local" for spec, _ in items):
            return self.local.take(items, tokens)
        local = [item for item in items if item[0].mode == "local"]
        remote = [item for item in items if item[0].mode == "global"]
        hits = self.local.take(local, tokens) if local else []
        try:
            hits += await self._take_global(windows, remote, tokens)
        except WindowsUnavailable:
            if self.on_store_error == "deny":
                self._refund(hits)
                raise ServiceUnavailable(
                    "rate limits cannot be checked: the shared store (Redis) is unreachable, "
                    "and this route's limits fail closed (on_store_error: deny)",
                    code="rate_limit_store_unavailable",
                    headers={"retry-after": str(STORE_ERROR_RETRY_AFTER)},
                ) from None
        except BaseException:  # refused, or the request was cancelled while waiting
            self._refund(hits)
            raise
        return hits

    async def _take_global(
        self, windows: RedisWindows, items: list[tuple[LimitSpec, str]], tokens: int
    ) -> list[Hit]:
        keys = [
            windows.key(s.name, s.measure, s.token_kind, s.limit, s.window, value)
            for s, value in items
        ]
        amounts = [_reservation(spec, tokens) for spec, _ in items]
        answer = await windows.take(
            [
                (key, amount, spec.limit, spec.window)
                for key, amount, (spec, _) in zip(keys, amounts, items, strict=True)
            ],
            self.timeout,
        )
        if isinstance(answer, Refused):
            spec = items[answer.index][0]
            raise _refused(spec, answer.ttl, spec.limit - answer.count, answer.ttl)
        now = time.monotonic()
        return [
            Hit(spec, value, amount, spec.limit - count, ttl, key, now + ttl)
            for (spec, value), key, amount, count, ttl in zip(
                items, keys, amounts, answer.counts, answer.ttls, strict=True
            )
        ]

    def _refund(self, local_hits: list[Hit]) -> None:
        for hit in local_hits:
            self.local.adjust(hit, -hit.amount)

    async def settle(self, hits: list[Hit], usage: Mapping[str, int] | None) -> None:
        """Replace token reservations by the real count (`usage`: `input_tokens`,
        `output_tokens`), or release them when `usage` is None (the call failed). Never
        raises."""
        try:
            remote: list[tuple[str, int, float, float]] = []
            for hit in hits:
                if hit.spec.measure != "tokens":
                    continue
                real = 0 if usage is None else counted(hit.spec, usage)
                delta = real - hit.amount
                if not delta:
                    continue
                if hit.spec.mode == "global" and self.windows is not None:
                    remote.append((hit.key, delta, hit.ends, hit.spec.window))
                else:
                    self.local.adjust(hit, delta)
            if remote and self.windows is not None:
                # queued: written with others' within `settle_interval`, off the request path
                self.windows.settle_later(remote)
        except Exception:
            log.exception("rate limits: settling a reservation failed")

    async def close(self) -> None:
        """Write the queued corrections of global token reservations now (at shutdown or
        reload; the limiter keeps working afterwards)."""
        if self.windows is not None:
            await self.windows.flush()

    def headers(self, hits: Sequence[Hit]) -> list[tuple[bytes, bytes]]:
        """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` of the tightest hit of each
        measure (OpenAI's names)."""
        tightest: dict[str, Hit] = {}
        for hit in hits:
            best = tightest.get(hit.spec.measure)
            if best is None or _tighter(hit, best):
                tightest[hit.spec.measure] = hit
        return _header_lines(tightest.values())

    def show(self, ctx: RequestContext, hits: Sequence[Hit]) -> None:
        """Put `hits`' headers on `ctx`'s response, keeping for each measure the tightest hit
        of everything shown for this request (several policies, several parsed runs)."""
        if not hits:
            return
        shown: dict[str, Hit] = ctx.attrs.setdefault(SHOWN_ATTR, {})
        changed = False
        for hit in hits:
            best = shown.get(hit.spec.measure)
            if best is None or _tighter(hit, best) or best.spec == hit.spec:
                shown[hit.spec.measure] = hit
                changed = True
        if not changed:
            return
        headers = ctx.response_headers
        if headers is None:
            headers = ctx.response_headers = []
        elif any(name.startswith(_HEADER_PREFIX) for name, _ in headers):
            headers[:] = [h for h in headers if not h[0].startswith(_HEADER_PREFIX)]
        headers.extend(_header_lines(shown.values()))


def _tighter(hit: Hit, than: Hit) -> bool:
    """Whether `hit` leaves less of its limit than `than` (the sooner-resetting wins a tie)."""
    mine = hit.remaining / hit.spec.limit
    theirs = than.remaining / than.spec.limit
    return mine < theirs or (mine == theirs and hit.reset > than.reset)


_HEADER_NAMES: Final = {
    m: (
        f"x-ratelimit-limit-{m}".encode(),
        f"x-ratelimit-remaining-{m}".encode(),
        f"x-ratelimit-reset-{m}".encode(),
    )
    for m in ("requests", "tokens")
}


def _header_lines(hits: Any) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for hit in hits:
        spec = hit.spec
        limit, remaining, reset = _HEADER_NAMES[spec.measure]
        out += (
            (limit, b"%d" % spec.limit),
            (remaining, b"%d" % max(0, hit.remaining)),
            (reset, duration(hit.reset).encode()),
        )
    return out


_LOCAL: Final = LocalBuckets()
_WINDOWS: dict[tuple[str, str], RedisWindows] = {}
_LIMITERS: dict[tuple[Any, ...], Limiter] = {}


def limiter_for(
    accounting: AccountingConfig | None,
    *,
    on_store_error: StoreErrorMode = "allow",
    timeout: float = DEFAULT_STORE_TIMEOUT,
) -> Limiter:
    """The process's limiter for this store config and failure mode: every policy (and every
    config reload) asking with the same arguments shares it, so counters survive reloads.
    Local buckets are one table per process; Redis windows one client per server and prefix.
    Without a Redis store, `global` limits are counted locally."""
    store = (accounting or AccountingConfig()).store
    where: tuple[str, str] | None = None
    if store.type == "redis":
        where = (store.url.get_secret_value(), store.prefix)
    cache_key = (where, on_store_error, timeout)
    limiter = _LIMITERS.get(cache_key)
    if limiter is None:
        windows = None
        if where is not None:
            windows = _WINDOWS.get(where)
            if windows is None:
                windows = _WINDOWS[where] = RedisWindows(*where)
        limiter = _LIMITERS[cache_key] = Limiter(
            local=_LOCAL, windows=windows, on_store_error=on_store_error, timeout=timeout
        )
    return limiter
