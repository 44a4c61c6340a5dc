"""Global rate limits on a real `redis-server`: three limiters with their own connection pools
(three replicas) granting exactly the limit between them, windows anchored at their first hit,
token reservations settled in the same window, all-or-nothing across local and global limits,
and a Redis that is killed or hangs: `allow` / `deny` within the timeout, a breaker, one log
line per outage, and an event loop that keeps running."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
import redis

from crossway.errors import RateLimited, ServiceUnavailable
from crossway.policy.limits import Hit, Limiter, LimitSpec, LocalBuckets
from crossway.store import limits_redis
from crossway.store.limits_redis import RedisWindows
from tests.helpers import RedisServer, free_port, redis_server


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


@pytest.fixture
def prefix() -> str:
    return f"t{os.urandom(4).hex()}:"


EXACT_TIMEOUT = 10.0
"""Store timeout of the tests that count exactly: on a loaded machine a check can wait longer
than the default, and a check that times out is let through (`on_store_error: allow`) without
being counted, which would break the count rather than test it."""


def _windows(port: int, prefix: str) -> RedisWindows:
    return RedisWindows(f"redis://127.0.0.1:{port}/0", prefix)


def _key(hit: Hit) -> str:
    assert isinstance(hit.key, str)
    return hit.key


async def test_three_replicas_grant_exactly_the_limit(redis_port: int, prefix: str) -> None:
    spec = LimitSpec("key rpm", "requests", 50, 30.0, mode="global")
    replicas = [
        Limiter(windows=_windows(redis_port, prefix), timeout=EXACT_TIMEOUT) for _ in range(3)
    ]

    async def one(limiter: Limiter) -> bool:
        try:
            await limiter.acquire([(spec, "k1")])
        except RateLimited as exc:
            assert 1 <= int(exc.headers["retry-after"]) <= 30
            assert exc.headers["x-ratelimit-remaining-requests"] == "0"
            return False
        return True

    try:
        results = await asyncio.gather(*(one(replicas[i % 3]) for i in range(300)))
        assert sum(results) == 50
        # The window lasts one window from its first hit.
        r = redis.Redis(port=redis_port)
        (key,) = r.keys(prefix + "*")
        assert 0 < r.pttl(key) <= 30_000
        assert int(r.get(key) or 0) == 50
        # Another value has its own window.
        assert (await replicas[0].acquire([(spec, "k2")]))[0].remaining == 49
    finally:
        for limiter in replicas:
            assert limiter.windows is not None
            await limiter.windows.aclose()


async def test_the_window_is_anchored_at_its_first_hit(redis_port: int, prefix: str) -> None:
    spec = LimitSpec("w", "requests", 3, 60.0, mode="global")
    limiter = Limiter(windows=_windows(redis_port, prefix), timeout=EXACT_TIMEOUT)
    r = redis.Redis(port=redis_port)
    try:
        (hit,) = await limiter.acquire([(spec, "v")])
        assert hit.remaining == 2 and 59 < hit.reset <= 60
        r.pexpire(_key(hit), 5000)  # as if 55 s had passed
        (hit,) = await limiter.acquire([(spec, "v")])
        # A later hit neither restarts nor extends the window.
        assert r.pttl(_key(hit)) <= 5000 and hit.reset <= 5
        await limiter.acquire([(spec, "v")])
        with pytest.raises(RateLimited) as info:
            await limiter.acquire([(spec, "v")])
        assert info.value.headers["retry-after"] == "5"
        r.delete(_key(hit))  # the window ended: a new one starts at the next hit
        (hit,) = await limiter.acquire([(spec, "v")])
        assert hit.remaining == 2 and 59_000 < r.pttl(_key(hit)) <= 60_000
    finally:
        assert limiter.windows is not None
        await limiter.windows.aclose()


async def test_tokens_reserve_and_settle_in_the_same_window(redis_port: int, prefix: str) -> None:
    spec = LimitSpec("team:tokens", "tokens", 1000, 60.0, mode="global")
    limiter = Limiter(windows=_windows(redis_port, prefix), timeout=EXACT_TIMEOUT)
    r = redis.Redis(port=redis_port)
    try:
        (hit,) = await limiter.acquire([(spec, "t")], tokens=600)
        with pytest.raises(RateLimited) as info:
            await limiter.acquire([(spec, "t")], tokens=500)
        assert info.value.headers["x-ratelimit-remaining-tokens"] == "400"
        await limiter.settle([hit], {"input_tokens": 70, "output_tokens": 30})
        await limiter.close()  # settlements are queued: write them now
        assert int(r.get(_key(hit)) or 0) == 100
        (second,) = await limiter.acquire([(spec, "t")], tokens=500)
        await limiter.settle([second], None)  # the call failed: released
        await limiter.close()
        assert int(r.get(_key(hit)) or 0) == 100
        # Settling never takes a counter below zero...
        await limiter.settle([Hit(spec, "t", 5000, 0, 0.0, _key(hit))], None)
        await limiter.close()
        assert int(r.get(_key(hit)) or 0) == 0
        # ...and never resurrects an expired window (which would have no TTL).
        (third,) = await limiter.acquire([(spec, "t")], tokens=10)
        r.delete(_key(third))
        await limiter.settle([third], {"input_tokens": 900, "output_tokens": 0})
        await limiter.close()
        assert not r.exists(_key(third))
    finally:
        assert limiter.windows is not None
        await limiter.windows.aclose()


async def test_all_or_nothing_across_local_and_global(redis_port: int, prefix: str) -> None:
    full = LimitSpec("team rpm", "requests", 1, 60.0, mode="global")
    room = LimitSpec("user rpm", "requests", 10, 60.0, mode="global")
    local = LimitSpec("key rpm", "requests", 2, 60.0)
    limiter = Limiter(windows=_windows(redis_port, prefix), timeout=EXACT_TIMEOUT)
    r = redis.Redis(port=redis_port)
    try:
        await limiter.acquire([(full, "t")])
        for _ in range(3):
            with pytest.raises(RateLimited, match="team rpm"):
                await limiter.acquire([(local, "k"), (room, "u"), (full, "t")])
        # Neither the global limit with room nor the local bucket lost anything.
        assert not [k for k in r.keys(prefix + "*") if b"user rpm" in k]
        hits = await limiter.acquire([(local, "k"), (room, "u")])
        assert [h.remaining for h in hits] == [1, 9]
        # A key listed twice counts twice.
        with pytest.raises(RateLimited):
            await limiter.acquire([(room, "x")] * 11)
        assert (await limiter.acquire([(room, "x")] * 10))[-1].remaining == 0
    finally:
        assert limiter.windows is not None
        await limiter.windows.aclose()


def _outage_lines(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


async def test_redis_killed_allow_and_deny(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="crossway.policy.limits")
    server = RedisServer()
    spec = LimitSpec("key rpm", "requests", 2, 60.0, mode="global")
    local = LimitSpec("ip rpm", "requests", 100, 60.0)
    windows = _windows(server.port, "k:")
    allow = Limiter(windows=windows, on_store_error="allow", timeout=0.5)
    deny = Limiter(local=allow.local, windows=windows, on_store_error="deny", timeout=0.5)
    try:
        with server:
            assert len(await allow.acquire([(spec, "k"), (local, "ip")])) == 2
            server.kill()
            started = time.monotonic()
            hits = await allow.acquire([(spec, "k"), (local, "ip")])
            assert time.monotonic() - started < 0.5
            assert [h.spec.name for h in hits] == ["ip rpm"]  # fail open: local limits only
            # Fail closed: 503 with a clear message; its local reservation is given back.
            with pytest.raises(ServiceUnavailable, match=r"Redis.*unreachable") as info:
                await deny.acquire([(spec, "k"), (local, "ip")])
            assert info.value.status_code == 503 and info.value.headers["retry-after"] == "1"
            (left,) = await allow.acquire([(local, "ip")])
            assert left.remaining == 97  # 100 - the 3 requests admitted (this one too)
            # The breaker: no connection attempt for a while, however many requests.
            started = time.monotonic()
            for _ in range(1000):
                await allow.acquire([(spec, "k")])
            assert time.monotonic() - started < 0.5
            windows._down_until = 0.0  # the breaker's second is over: one probe, failing
            await allow.acquire([(spec, "k")])
            assert _outage_lines(caplog, "Redis unreachable") == 1
            server.start()  # same port, no persistence
            windows._down_until = 0.0
            # Redis is back (empty): enforced again, and said once.
            await allow.acquire([(spec, "k")])
            await allow.acquire([(spec, "k")])
            with pytest.raises(RateLimited):
                await allow.acquire([(spec, "k")])
            assert _outage_lines(caplog, "Redis answers again") == 1
    finally:
        await windows.aclose()


@asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    accepted: list[int] = []
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, accepted
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_hung_redis_costs_at_most_the_timeout_and_never_blocks_the_loop() -> None:
    spec = LimitSpec("key rpm", "requests", 2, 60.0, mode="global")
    async with silent_server() as (port, accepted):
        windows = _windows(port, "h:")
        limiter = Limiter(windows=windows, on_store_error="deny", timeout=0.3)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        try:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable):
                await limiter.acquire([(spec, "k")])
            elapsed = time.monotonic() - started
            assert 0.25 <= elapsed < 0.6
            assert ticks >= 10  # the loop kept serving while the check waited
            connections = len(accepted)
            started = time.monotonic()
            for _ in range(100):
                with pytest.raises(ServiceUnavailable):
                    await limiter.acquire([(spec, "k")])
            assert time.monotonic() - started < 0.1
            assert len(accepted) == connections  # the breaker: no new connection
        finally:
            task.cancel()
            await windows.aclose()


async def test_settle_with_redis_down_never_raises() -> None:
    spec = LimitSpec("t", "tokens", 100, 60.0, mode="global")
    windows = _windows(free_port(), "d:")
    limiter = Limiter(local=LocalBuckets(), windows=windows, timeout=0.2)
    await limiter.settle([Hit(spec, "v", 10, 90, 1.0, "d:x")], {"input_tokens": 50})
    await limiter.settle([Hit(spec, "v", 10, 90, 1.0, "d:x")], None)
    await windows.aclose()


def _evalsha_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def _until(predicate: Callable[[], bool], what: str) -> None:
    """Wait (yielding to the loop, at most about 5 s) until `predicate` holds."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_concurrent_checks_share_script_calls_and_stay_exact(
    redis_port: int, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three replicas, each coalescing its concurrent checks into few script calls: the
    limits are still exact, and a refused check in a batch adds nothing (all or nothing per
    check, not per batch)."""
    monkeypatch.setattr(limits_redis, "MAX_BATCH_CHECKS", 16)
    rpm = LimitSpec("key rpm", "requests", 50, 30.0, mode="global")
    tpm = LimitSpec("key tpm", "tokens", 1000, 30.0, mode="global")
    replicas = [
        Limiter(windows=_windows(redis_port, prefix), timeout=EXACT_TIMEOUT) for _ in range(3)
    ]
    r = redis.Redis(port=redis_port)
    for limiter in replicas:
        await limiter.warm()
    before = _evalsha_calls(r)

    async def one(limiter: Limiter) -> bool:
        try:
            await limiter.acquire([(rpm, "k"), (tpm, "k")], tokens=30)
        except RateLimited:
            return False
        return True

    try:
        results = await asyncio.gather(*(one(replicas[i % 3]) for i in range(300)))
        calls = _evalsha_calls(r) - before
        # The token limit runs out first (33 x 30 <= 1000); the request limit counts only the
        # 33 granted checks, none of the refused ones batched with them.
        assert sum(results) == 33
        (rpm_key,) = [k for k in r.keys(prefix + "*") if b"key rpm" in k]
        (tpm_key,) = [k for k in r.keys(prefix + "*") if b"key tpm" in k]
        assert int(r.get(rpm_key) or 0) == 33 and int(r.get(tpm_key) or 0) == 990
        # 300 checks in few calls, and never more than MAX_BATCH_CHECKS per call.
        assert 300 / 16 <= calls <= 300 / 4
    finally:
        for limiter in replicas:
            assert limiter.windows is not None
            await limiter.windows.aclose()


async def test_a_lone_check_is_sent_at_once(redis_port: int, prefix: str) -> None:
    """Checks one after another each go alone, at once: nothing waits for a batch to fill."""
    spec = LimitSpec("lone", "requests", 100, 60.0, mode="global")
    windows = RedisWindows(f"redis://127.0.0.1:{redis_port}/0", prefix, settle_interval=3600)
    limiter = Limiter(windows=windows, timeout=EXACT_TIMEOUT)
    r = redis.Redis(port=redis_port)
    try:
        await limiter.warm()
        before = _evalsha_calls(r)
        for expected in range(99, 89, -1):
            (hit,) = await limiter.acquire([(spec, "v")])
            assert hit.remaining == expected
        assert _evalsha_calls(r) - before == 10
    finally:
        await windows.aclose()


async def test_settlements_are_queued_and_written_in_one_call(redis_port: int, prefix: str) -> None:
    """`settle` never waits for Redis: corrections are summed per window and written together
    a few ms later, exactly."""
    tpm = LimitSpec("team tpm", "tokens", 100_000, 60.0, mode="global")
    other = LimitSpec("user tpm", "tokens", 100_000, 60.0, mode="global")
    limiter = Limiter(windows=_windows(redis_port, prefix), timeout=EXACT_TIMEOUT)
    r = redis.Redis(port=redis_port)
    try:
        held = [await limiter.acquire([(tpm, "t"), (other, "u")], tokens=500) for _ in range(100)]
        tpm_key, other_key = _key(held[0][0]), _key(held[0][1])
        assert int(r.get(tpm_key) or 0) == 50_000
        before = _evalsha_calls(r)
        for hits in held:
            await limiter.settle(hits, {"input_tokens": 70, "output_tokens": 30})
        assert _evalsha_calls(r) == before  # nothing sent yet: no round trip per request
        assert limiter.windows is not None and limiter.windows.pending_settles == 2
        await _until(lambda: int(r.get(tpm_key) or 0) == 10_000, "the queued corrections")
        assert int(r.get(other_key) or 0) == 10_000
        assert _evalsha_calls(r) - before == 1  # both windows, 200 corrections: one call
        assert 0 < r.pttl(tpm_key) <= 60_000  # the window keeps its expiry
    finally:
        assert limiter.windows is not None
        await limiter.windows.aclose()


async def test_a_correction_of_an_ended_window_is_dropped(redis_port: int, prefix: str) -> None:
    spec = LimitSpec("tpm", "tokens", 1000, 60.0, mode="global")
    limiter = Limiter(windows=_windows(redis_port, prefix), timeout=EXACT_TIMEOUT)
    r = redis.Redis(port=redis_port)
    try:
        (hit,) = await limiter.acquire([(spec, "t")], tokens=600)
        key = _key(hit)
        # A hit of a window that has ended (the key now holds a later window): not applied.
        ended = Hit(spec, "t", 600, 400, 0.0, key, time.monotonic() - 1)
        await limiter.settle([ended], None)
        await limiter.close()
        assert int(r.get(key) or 0) == 600
        # Queued with a hit of the later window: the earlier window's correction is dropped,
        # the later one's applied.
        earlier = Hit(spec, "t", 300, 700, 0.0, key, hit.ends - 60)
        await limiter.settle([earlier], None)
        await limiter.settle([hit], {"input_tokens": 100})
        await limiter.settle([earlier], None)
        await limiter.close()
        assert int(r.get(key) or 0) == 100
    finally:
        assert limiter.windows is not None
        await limiter.windows.aclose()


async def test_settlements_with_redis_down_are_dropped_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="crossway.policy.limits")
    spec = LimitSpec("t", "tokens", 100, 60.0, mode="global")
    windows = _windows(free_port(), "d:")
    limiter = Limiter(windows=windows, timeout=0.2)
    ends = time.monotonic() + 60
    try:
        for i in range(3):
            await limiter.settle([Hit(spec, "v", 10, 90, 1.0, f"d:{i}", ends)], None)
            await limiter.close()  # fails: dropped, and nothing is kept
            assert windows.pending_settles == 0
        assert _outage_lines(caplog, "token correction(s) dropped") == 1
    finally:
        await windows.aclose()


async def test_the_settlement_queue_is_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crossway.policy.limits")
    monkeypatch.setattr(limits_redis, "MAX_PENDING_SETTLES", 10)
    monkeypatch.setattr(limits_redis, "SETTLE_BATCH", 1000)
    windows = RedisWindows(f"redis://127.0.0.1:{free_port()}/0", "b:", settle_interval=3600)
    spec = LimitSpec("t", "tokens", 100, 60.0, mode="global")
    limiter = Limiter(windows=windows)
    ends = time.monotonic() + 60
    try:
        for i in range(50):
            await limiter.settle([Hit(spec, "v", 10, 90, 1.0, f"b:{i}", ends)], None)
        assert windows.pending_settles == 10
        assert _outage_lines(caplog, "token correction(s) dropped (the queue is full)") == 1
    finally:
        await windows.aclose()
