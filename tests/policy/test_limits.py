"""The limiter's local side: token-bucket arithmetic on an injected clock, all-or-nothing,
token reservations settled with the real count, headers, the bounded bucket table, and what
one check costs."""

from __future__ import annotations

import time

import pytest

from crossway.config.accounting import AccountingConfig
from crossway.errors import RateLimited
from crossway.policy.limits import (
    Hit,
    Limiter,
    LimitSpec,
    LocalBuckets,
    duration,
    limiter_for,
)
from crossway.server.context import RequestContext


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


RPM = LimitSpec("key rpm", "requests", 3, 60.0)
TPM = LimitSpec("key tpm", "tokens", 1000, 60.0)


def _limiter(**kwargs: int) -> tuple[Limiter, Clock]:
    clock = Clock()
    return Limiter(local=LocalBuckets(clock=clock, **kwargs)), clock


async def test_bucket_refills_at_limit_per_window() -> None:
    limiter, clock = _limiter()
    for expected in (2, 1, 0):
        (hit,) = await limiter.acquire([(RPM, "k1")])
        assert hit.remaining == expected
    with pytest.raises(RateLimited) as info:
        await limiter.acquire([(RPM, "k1")])
    err = info.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded"
    assert "key rpm" in err.message and "3 requests per 60 s" in err.message
    # One request comes back every 20 s (3 per 60 s): the wait is rounded up, at least 1 s.
    assert err.headers["retry-after"] == "20"
    assert err.headers["x-ratelimit-limit-requests"] == "3"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.headers["x-ratelimit-reset-requests"] == "1m0s"
    # Another value has its own bucket.
    assert (await limiter.acquire([(RPM, "k2")]))[0].remaining == 2
    clock.now += 19.9
    with pytest.raises(RateLimited) as info:
        await limiter.acquire([(RPM, "k1")])
    assert info.value.headers["retry-after"] == "1"
    clock.now += 0.1
    (hit,) = await limiter.acquire([(RPM, "k1")])
    assert hit.remaining == 0
    # A long pause fills the bucket to its capacity, never beyond.
    clock.now += 3600
    hits = [await limiter.acquire([(RPM, "k1")]) for _ in range(3)]
    assert [h[0].remaining for h in hits] == [2, 1, 0]
    with pytest.raises(RateLimited):
        await limiter.acquire([(RPM, "k1")])


async def test_a_clock_jump_changes_nothing() -> None:
    """Buckets run on `time.monotonic`: a wall-clock jump (NTP, an operator) neither refills
    nor empties them."""
    limiter = Limiter(local=LocalBuckets())
    spec = LimitSpec("jump", "requests", 2, 3600.0)
    await limiter.acquire([(spec, "v")])
    await limiter.acquire([(spec, "v")])
    real_time = time.time
    try:
        time.time = lambda: real_time() + 86400  # type: ignore[assignment]
        with pytest.raises(RateLimited):
            await limiter.acquire([(spec, "v")])
    finally:
        time.time = real_time  # type: ignore[assignment]


async def test_all_or_nothing() -> None:
    limiter, _ = _limiter()
    tight = LimitSpec("team rpm", "requests", 1, 60.0)
    await limiter.acquire([(tight, "t")])
    with pytest.raises(RateLimited, match="team rpm"):
        await limiter.acquire([(RPM, "k"), (tight, "t"), (TPM, "k")], tokens=500)
    # The refused request took nothing from the limits that had room.
    (a, b) = await limiter.acquire([(RPM, "k"), (TPM, "k")], tokens=1000)
    assert a.remaining == 2 and b.remaining == 0
    # The refusal names the limit that frees up last.
    slow = LimitSpec("daily", "requests", 1, 86400.0)
    await limiter.acquire([(slow, "k")])
    with pytest.raises(RateLimited) as info:
        await limiter.acquire([(slow, "k"), (tight, "t")])
    assert "daily" in info.value.message
    assert info.value.headers["retry-after"] == "86400"


async def test_tokens_reserve_then_settle() -> None:
    limiter, clock = _limiter()
    (hit,) = await limiter.acquire([(TPM, "k")], tokens=600)
    assert hit.amount == 600 and hit.remaining == 400
    # A second call that would need more than what is left waits.
    with pytest.raises(RateLimited) as info:
        await limiter.acquire([(TPM, "k")], tokens=500)
    assert info.value.headers["x-ratelimit-remaining-tokens"] == "400"
    assert info.value.headers["retry-after"] == "6"  # 100 tokens at 1000/60 per second
    # The call used 100 (input + output): 500 come back.
    await limiter.settle([hit], {"input_tokens": 60, "output_tokens": 40})
    (second,) = await limiter.acquire([(TPM, "k")], tokens=500)
    assert second.remaining == 400
    # A failed call releases its whole reservation.
    await limiter.settle([second], None)
    (third,) = await limiter.acquire([(TPM, "k")], tokens=900)
    assert third.remaining == 0
    # It used more than reserved: the bucket goes into debt, and even a call without an
    # estimate (reserving 1 token) waits for the debt to be repaid.
    await limiter.settle([third], {"input_tokens": 1200, "output_tokens": 200})
    with pytest.raises(RateLimited) as info:
        await limiter.acquire([(TPM, "k")])
    assert int(info.value.headers["retry-after"]) == 31  # 500 + 1 tokens at 1000/60 per second
    clock.now += 31
    assert (await limiter.acquire([(TPM, "k")]))[0].amount == 1


async def test_token_kinds_and_oversized_estimates() -> None:
    limiter, _ = _limiter()
    out = LimitSpec("out", "tokens", 100, 60.0, token_kind="output")
    inp = LimitSpec("in", "tokens", 100, 60.0, token_kind="input")
    # An estimate larger than the whole limit still runs on an untouched limit (reserving it
    # all), instead of being refused forever.
    hits = await limiter.acquire([(out, "k"), (inp, "k")], tokens=10_000)
    assert [h.amount for h in hits] == [100, 100]
    await limiter.settle(hits, {"input_tokens": 30, "output_tokens": 10})
    a, b = await limiter.acquire([(out, "k"), (inp, "k")], tokens=50)
    assert (a.remaining, b.remaining) == (40, 20)


async def test_settle_never_raises() -> None:
    limiter, _ = _limiter()
    broken = Hit(TPM, "k", 5, 0, 0.0, key=("not", "a bucket"))
    await limiter.settle([broken], {"input_tokens": "x"})  # type: ignore[dict-item]
    await limiter.settle([broken], None)


async def test_memory_is_bounded_under_many_values() -> None:
    limiter, clock = _limiter(max_buckets=100)
    spec = LimitSpec("ip", "requests", 5, 1.0)
    for i in range(5000):
        await limiter.acquire([(spec, f"10.0.{i // 256}.{i % 256}")])
        clock.now += 0.0001
    assert len(limiter.local) <= 100
    # Active buckets are kept while there is room: a value at its limit stays limited.
    limiter, clock = _limiter(max_buckets=100)
    for _ in range(5):
        await limiter.acquire([(spec, "hot")])
    for i in range(50):
        await limiter.acquire([(spec, f"cold{i}")])
    with pytest.raises(RateLimited):
        await limiter.acquire([(spec, "hot")])
    # Idle buckets are dropped once full again, even below the bound.
    clock.now += 60
    await limiter.acquire([(spec, "fresh")])
    assert len(limiter.local) == 1
    # Huge values (a client-chosen model name) do not grow a bucket's key.
    await limiter.acquire([(spec, "m" * 100_000)])
    assert max(len(value) for _, value in limiter.local._buckets) < 100


async def test_headers_show_the_tightest_limit_of_each_measure() -> None:
    limiter, _ = _limiter()
    loose = LimitSpec("route rpm", "requests", 100, 60.0)
    hits = await limiter.acquire([(loose, "r"), (RPM, "k"), (TPM, "k")], tokens=250)
    headers = dict(limiter.headers(hits))
    assert headers == {
        b"x-ratelimit-limit-requests": b"3",
        b"x-ratelimit-remaining-requests": b"2",
        b"x-ratelimit-reset-requests": b"20s",
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"750",
        b"x-ratelimit-reset-tokens": b"15s",
    }
    # On a request: set once, replaced (not repeated) by a later parsed run.
    ctx = RequestContext("r", "b", "1", "/")
    ctx.response_headers = [(b"x-request-id", b"1")]
    limiter.show(ctx, hits)
    limiter.show(ctx, await limiter.acquire([(RPM, "k")]))
    names = [name for name, _ in ctx.response_headers]
    assert names.count(b"x-ratelimit-remaining-requests") == 1
    assert dict(ctx.response_headers)[b"x-ratelimit-remaining-requests"] == b"1"
    assert b"x-request-id" in names


def test_duration_format() -> None:
    assert duration(0.02) == "20ms"
    assert duration(1.5) == "1.5s"
    assert duration(360) == "6m0s"
    assert duration(3723) == "1h2m3s"


def test_one_limiter_per_store_and_failure_mode() -> None:
    accounting = AccountingConfig()
    a = limiter_for(accounting)
    assert limiter_for(AccountingConfig()) is a
    assert limiter_for(accounting, on_store_error="deny") is not a
    assert limiter_for(accounting, on_store_error="deny").local is a.local
    assert a.windows is None
    redis = AccountingConfig.model_validate({"store": {"type": "redis", "url": "redis://h:1/0"}})
    shared = limiter_for(redis)
    assert shared.windows is not None and limiter_for(redis, timeout=1).windows is shared.windows


async def test_cost_of_a_local_check() -> None:
    """A route with a local request limit must stay cheap: acquire + settle per request (the
    figure is printed; the bound is loose, the machine is shared)."""
    limiter = Limiter(local=LocalBuckets())
    spec = LimitSpec("key rpm", "requests", 10**9, 60.0)
    tokens = LimitSpec("key tpm", "tokens", 10**9, 60.0)
    usage = {"input_tokens": 10, "output_tokens": 20}
    for label, items in (
        ("requests", [(spec, "k")]),
        ("requests+tokens", [(spec, "k"), (tokens, "k")]),
    ):
        n = 20_000
        started = time.perf_counter()
        for _ in range(n):
            hits = await limiter.acquire(items, 100)
            await limiter.settle(hits, usage)
        per_call = (time.perf_counter() - started) / n * 1e6
        print(f"local {label}: {per_call:.2f} us per acquire+settle")
        assert per_call < 100
