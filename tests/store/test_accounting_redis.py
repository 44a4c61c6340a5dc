"""`RedisAccounting` against a real `redis-server`: replicas sharing totals, idempotent batches,
Redis going away and coming back, prefix isolation and the layout-version guard.

The behaviour both stores share is in `test_accounting_contract.py`; this file covers what only
a shared, networked store can get wrong."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from crossway.config.accounting import BudgetLimits
from crossway.store import accounting_redis
from crossway.store.accounting import (
    SCHEMA_VERSION,
    Principal,
    SchemaTooNew,
    SpendRecord,
    StoreBroken,
    VirtualKey,
    digest,
    new_id,
    new_secret,
    period_names,
)
from crossway.store.accounting_redis import (
    SPEND_CHUNK,
    SPEND_ID_TTL_SECONDS,
    SPEND_LOG_RETENTION_SECONDS,
    RedisAccounting,
)
from tests.helpers import RedisServer, redis_server

UTC = ZoneInfo("UTC")
FAIL_FAST = 3.0
"""A dead Redis must fail a call within this many seconds."""
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


@pytest.fixture
def url(redis_port: int) -> str:
    return f"redis://127.0.0.1:{redis_port}/0"


@pytest.fixture
def raw(redis_port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_port)
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    return f"test{next(_prefixes)}:"


@pytest.fixture
async def store(url: str, prefix: str) -> AsyncIterator[RedisAccounting]:
    made = RedisAccounting(url, prefix)
    await made.open()
    try:
        yield made
    finally:
        await made.close()


def spend(
    cost: float = 0.125, *, ts: float | None = None, record_id: str | None = None, **who: Any
) -> SpendRecord:
    when = time.time() if ts is None else ts
    who.setdefault("team", "research")
    return SpendRecord(
        id=record_id or new_id("sp"),
        ts=when,
        cost=cost,
        periods=period_names(when, UTC),
        **who,
    )


def make_key(**fields: Any) -> tuple[str, VirtualKey]:
    secret = new_secret()
    now = time.time()
    fields.setdefault("created_at", now)
    key = VirtualKey(id=new_id("key"), digest=digest(secret), display=secret[:10], **fields)
    return secret, key


def month(ts: float | None = None) -> str:
    return period_names(time.time() if ts is None else ts, UTC)[2]


# -- several replicas -------------------------------------------------------------------------


async def test_three_replicas_add_to_the_same_totals_exactly(url: str, prefix: str) -> None:
    replicas = [RedisAccounting(url, prefix) for _ in range(3)]
    for replica in replicas:
        await replica.open()
    batches, per_batch = 10, 100

    async def run(n: int, replica: RedisAccounting) -> int:
        new = 0
        for _ in range(batches):
            new += await replica.record_spend([spend(key_id=f"k{n}") for _ in range(per_batch)])
        return new

    try:
        counts = await asyncio.gather(*(run(n, r) for n, r in enumerate(replicas)))
        assert counts == [batches * per_batch] * 3
        totals = await replicas[0].period_spend(
            [("team:research", month()), ("team:research", "total"), ("key:k1", "total")]
        )
        # 0.125 is exact in binary: any lost or doubled INCRBYFLOAT shows.
        assert totals == [375.0, 375.0, 125.0]
        rows = await replicas[2].spend_report(["key"], None, None, {})
        assert sorted((r["key"], r["requests"]) for r in rows) == [
            ("k0", 1000),
            ("k1", 1000),
            ("k2", 1000),
        ]
    finally:
        for replica in replicas:
            await replica.close()


async def test_the_same_batch_from_two_replicas_counts_once(url: str, prefix: str) -> None:
    first, second = RedisAccounting(url, prefix), RedisAccounting(url, prefix)
    await first.open()
    await second.open()
    try:
        batch = [spend() for _ in range(SPEND_CHUNK + 50)]  # two script calls each
        counts = await asyncio.gather(first.record_spend(batch), second.record_spend(batch))
        assert sum(counts) == len(batch)
        assert await first.record_spend(batch) == 0  # a retry
        assert await first.period_spend([("team:research", "total")]) == [0.125 * len(batch)]
        rows = await second.spend_report([], None, None, {})
        assert rows[0]["requests"] == len(batch)
    finally:
        await first.close()
        await second.close()


async def test_a_record_repeated_inside_a_batch_counts_once(store: RedisAccounting) -> None:
    record = spend(0.5)
    assert await store.record_spend([record, record, spend(0.25)]) == 2
    assert await store.period_spend([("team:research", "total")]) == [0.75]


async def test_a_big_batch_is_one_script_call_per_chunk(
    store: RedisAccounting, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    script = store._record_spend

    async def counted(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await script(**kwargs)

    monkeypatch.setattr(store, "_record_spend", counted)
    assert await store.record_spend([spend(0.25) for _ in range(2 * SPEND_CHUNK + 1)]) == 1001
    assert calls == 3
    assert await store.record_spend([]) == 0
    assert calls == 3


# -- keys and principals ----------------------------------------------------------------------


async def test_keys_round_trip_and_bump_the_version(store: RedisAccounting) -> None:
    assert await store.version() == 0
    secret, key = make_key(
        name="ci",
        user="alice",
        team="research",
        models=("gpt-4o-mini",),
        mcp_tools=("fs_read",),
        agents=("helper",),
        limits=BudgetLimits(max_budget=5, budget_period="daily", rpm=60),
        expires_at=time.time() + 3600,
        metadata={"owner": "ops"},
    )
    await store.put_key(key)
    assert await store.version() == 1
    assert await store.get_key(key.id) == key
    assert await store.key_by_digest(digest(secret)) == key
    assert await store.key_by_digest(digest("sk-cw-unknown")) is None
    assert await store.get_key("key_missing") is None


async def test_a_digest_of_another_key_is_refused(store: RedisAccounting) -> None:
    _, key = make_key()
    await store.put_key(key)
    version = await store.version()
    _, other = make_key()
    with pytest.raises(ValueError, match="another key"):
        await store.put_key(other.with_changes(digest=key.digest))
    assert await store.get_key(other.id) is None
    assert await store.version() == version
    assert await store.key_by_digest(key.digest) == key


async def test_rotate_re_points_the_digest_index(store: RedisAccounting) -> None:
    old_secret, key = make_key()
    await store.put_key(key)
    new_secret_ = new_secret()
    rotated = key.with_changes(digest=digest(new_secret_), display=new_secret_[:10])
    await store.put_key(rotated)
    assert await store.key_by_digest(digest(old_secret)) is None
    assert await store.key_by_digest(digest(new_secret_)) == rotated
    # The old secret is free again (for a key that happens to draw it: never in practice).
    _, other = make_key()
    await store.put_key(other.with_changes(digest=digest(old_secret)))


async def test_list_keys_oldest_first_with_filters(store: RedisAccounting) -> None:
    base = time.time()
    _, a = make_key(user="alice", team="t1", created_at=base + 2)
    _, b = make_key(user="bob", team="t1", created_at=base + 1)
    _, c = make_key(user="alice", created_at=base + 3, revoked_at=base + 4)
    for key in (a, b, c):
        await store.put_key(key)
    assert [k.id for k in await store.list_keys()] == [b.id, a.id]
    assert [k.id for k in await store.list_keys(include_revoked=True)] == [b.id, a.id, c.id]
    assert [k.id for k in await store.list_keys(user="alice", include_revoked=True)] == [
        a.id,
        c.id,
    ]
    assert [k.id for k in await store.list_keys(team="t1", user="bob")] == [b.id]


async def test_principals(store: RedisAccounting) -> None:
    team = Principal("team", "research", BudgetLimits(max_budget=100, budget_period="monthly"))
    await store.put_principal(team)
    await store.put_principal(Principal("team", "ads", metadata={"cost_center": "7"}))
    await store.put_principal(Principal("user", "research"))
    assert await store.version() == 3
    assert await store.get_principal("team", "research") == team
    assert [p.id for p in await store.list_principals("team")] == ["ads", "research"]
    assert [p.id for p in await store.list_principals("user")] == ["research"]
    assert await store.delete_principal("team", "research")
    assert not await store.delete_principal("team", "research")
    assert await store.version() == 4
    assert await store.get_principal("team", "research") is None
    assert [p.id for p in await store.list_principals("team")] == ["ads"]


# -- spend ------------------------------------------------------------------------------------


async def test_totals_expire_by_period_and_total_never(
    store: RedisAccounting, raw: redis.Redis, prefix: str
) -> None:
    record = spend(1.0, user="alice")
    await store.record_spend([record])
    day, week, mon, total = record.periods
    assert await store.period_spend(
        [("team:research", day), ("user:alice", week), ("team:research", mon), ("team:x", mon)]
    ) == [1.0, 1.0, 1.0, 0.0]
    assert await store.period_spend([]) == []
    ttl = {p: raw.ttl(f"{prefix}sp:tot:team:research:{p}") for p in record.periods}
    assert 39 * 86400 < ttl[day] <= 40 * 86400
    assert 59 * 86400 < ttl[week] <= 60 * 86400
    assert 399 * 86400 < ttl[mon] <= 400 * 86400
    assert ttl[total] == -1
    assert SPEND_ID_TTL_SECONDS - 60 < raw.ttl(f"{prefix}sp:id:{record.id}") <= SPEND_ID_TTL_SECONDS


async def test_spend_report_groups_filters_and_ranges(store: RedisAccounting) -> None:
    t = time.time() - 100
    await store.record_spend(
        [
            spend(1.0, ts=t, key_id="k1", model="gpt", input_tokens=10, output_tokens=1),
            spend(2.0, ts=t + 10, key_id="k1", model="claude", input_tokens=20, output_tokens=2),
            spend(4.0, ts=t + 20, key_id="k2", model="gpt", user="bob", input_tokens=40),
        ]
    )
    by_model = await store.spend_report(["model"], None, None, {})
    assert by_model == [
        {"model": "gpt", "requests": 2, "input_tokens": 50, "output_tokens": 1, "cost": 5.0},
        {"model": "claude", "requests": 1, "input_tokens": 20, "output_tokens": 2, "cost": 2.0},
    ]
    rows = await store.spend_report(["key", "model"], t + 5, t + 20, {"team": "research"})
    assert rows == [
        {
            "key": "k1",
            "model": "claude",
            "requests": 1,
            "input_tokens": 20,
            "output_tokens": 2,
            "cost": 2.0,
        }
    ]
    assert (await store.spend_report(["user"], None, None, {"key": "k2"}))[0]["user"] == "bob"
    assert await store.spend_report([], None, None, {"model": "none"}) == []
    with pytest.raises(ValueError, match="secret"):
        await store.spend_report(["secret"], None, None, {})


async def test_spend_report_ties_are_ordered_by_group(store: RedisAccounting) -> None:
    await store.record_spend(
        [spend(1.0, team="b"), spend(1.0, team="a"), spend(1.0, team=None), spend(2.0, team="c")]
    )
    rows = await store.spend_report(["team", "team"], None, None, {})
    assert [(r["team"], r["cost"]) for r in rows] == [
        ("c", 2.0),
        (None, 1.0),
        ("a", 1.0),
        ("b", 1.0),
    ]


async def test_spend_report_reads_the_log_in_pages(
    store: RedisAccounting, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounting_redis, "REPORT_PAGE", 7)
    t = time.time() - 50
    # Many records at one time (more than a page) and some at distinct times.
    records = [spend(0.25, ts=t) for _ in range(30)]
    records += [spend(0.5, ts=t + i) for i in range(1, 21)]
    await store.record_spend(records)
    rows = await store.spend_report([], None, None, {})
    assert rows == [{"requests": 50, "input_tokens": 0, "output_tokens": 0, "cost": 17.5}]
    rows = await store.spend_report([], t + 1, None, {})
    assert rows[0]["requests"] == 20


async def test_the_spend_log_is_trimmed_past_its_retention(store: RedisAccounting) -> None:
    old = time.time() - SPEND_LOG_RETENTION_SECONDS - 86400
    await store.record_spend([spend(1.0, ts=old, key_id="old")])
    await store.record_spend([spend(1.0, key_id="new")])
    assert [r["key"] for r in await store.spend_report(["key"], None, None, {})] == ["new"]


async def test_claim_alert_once_per_scope_and_period(
    store: RedisAccounting, url: str, prefix: str, raw: redis.Redis
) -> None:
    other = RedisAccounting(url, prefix)
    try:
        claims = await asyncio.gather(
            store.claim_alert("team:research", "m2026-12"),
            other.claim_alert("team:research", "m2026-12"),
        )
        assert sorted(claims) == [False, True]
        assert await store.claim_alert("team:research", "m2027-01")
        assert await store.claim_alert("team:research", "total")
        assert not await other.claim_alert("team:research", "total")
        assert raw.ttl(f"{prefix}alert:team:research:m2026-12") > 399 * 86400
        assert raw.ttl(f"{prefix}alert:team:research:total") == -1
    finally:
        await other.close()


# -- isolation and layout ---------------------------------------------------------------------


async def test_prefixes_do_not_see_each_other(url: str) -> None:
    a = RedisAccounting(url, f"iso{next(_prefixes)}:")
    b = RedisAccounting(url, f"iso{next(_prefixes)}:")
    await a.open()
    await b.open()
    try:
        secret, key = make_key(team="research")
        await a.put_key(key)
        await a.put_principal(Principal("team", "research"))
        await a.record_spend([spend(1.0, key_id=key.id)])
        assert await a.claim_alert("team:research", "total")

        assert await b.get_key(key.id) is None
        assert await b.key_by_digest(digest(secret)) is None
        assert await b.list_keys(include_revoked=True) == []
        assert await b.version() == 0
        assert await b.list_principals("team") == []
        assert await b.period_spend([("team:research", "total")]) == [0.0]
        assert await b.spend_report([], None, None, {}) == []
        assert await b.claim_alert("team:research", "total")
        # The same secret may exist under each prefix (two gateways, one Redis).
        await b.put_key(key)
        assert await a.version() == 2 and await b.version() == 1
    finally:
        await a.close()
        await b.close()


async def test_open_writes_the_layout_version(
    store: RedisAccounting, raw: redis.Redis, prefix: str
) -> None:
    assert raw.get(prefix + "schema") == str(SCHEMA_VERSION).encode()
    await store.open()  # idempotent
    assert raw.get(prefix + "schema") == str(SCHEMA_VERSION).encode()


async def test_open_refuses_a_newer_layout(url: str, raw: redis.Redis, prefix: str) -> None:
    raw.set(prefix + "schema", SCHEMA_VERSION + 1)
    made = RedisAccounting(url, prefix)
    try:
        with pytest.raises(SchemaTooNew, match=f"layout version {SCHEMA_VERSION + 1}.*upgrade"):
            await made.open()
        raw.set(prefix + "schema", "not-a-number")
        with pytest.raises(SchemaTooNew, match="not a layout version"):
            await made.open()
    finally:
        await made.close()
    assert raw.get(prefix + "schema") == b"not-a-number"  # refused, never overwritten


# -- Redis going away -------------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A `redis-server` this test can stop, pause and restart on the same port."""
    with RedisServer() as server:
        yield server


async def fails_fast(call: Any) -> StoreBroken:
    started = time.monotonic()
    with pytest.raises(StoreBroken) as caught:
        await call
    assert time.monotonic() - started < FAIL_FAST
    return caught.value


async def test_a_stopped_redis_fails_fast_and_a_restarted_one_just_works(
    own_redis: RedisServer,
) -> None:
    made = RedisAccounting(f"redis://127.0.0.1:{own_redis.port}/0", "crossway:")
    await made.open()
    try:
        _, key = make_key()
        await made.put_key(key)
        await made.record_spend([spend(1.0)])
        own_redis.stop()

        broken = await fails_fast(made.record_spend([spend(1.0)]))
        assert f"127.0.0.1:{own_redis.port}" in str(broken)
        await fails_fast(made.key_by_digest(key.digest))
        await fails_fast(made.period_spend([("team:research", "total")]))
        await fails_fast(made.version())
        await fails_fast(made.spend_report([], None, None, {}))

        own_redis.start()  # same port, empty (no persistence)
        assert await made.record_spend([spend(2.0)]) == 1
        assert await made.period_spend([("team:research", "total")]) == [2.0]
        await made.put_key(key)
        assert await made.key_by_digest(key.digest) == key
    finally:
        await made.close()


async def test_a_restart_between_calls_costs_no_failed_call(own_redis: RedisServer) -> None:
    made = RedisAccounting(f"redis://127.0.0.1:{own_redis.port}/0", "crossway:")
    await made.open()
    try:
        assert await made.version() == 0
        own_redis.restart()
        # The pooled connection is dead; the store reconnects once, silently.
        assert await made.version() == 0
        assert await made.record_spend([spend(1.0)]) == 1
    finally:
        await made.close()


async def test_a_hung_redis_fails_within_the_timeout_and_a_retry_counts_once(
    own_redis: RedisServer,
) -> None:
    made = RedisAccounting(f"redis://127.0.0.1:{own_redis.port}/0", "crossway:")
    await made.open()
    try:
        batch = [spend(1.0) for _ in range(3)]
        own_redis.signal(signal.SIGSTOP)
        await fails_fast(made.record_spend(batch))
        own_redis.signal(signal.SIGCONT)
        # The timed-out script may still have run once Redis resumed: the caller's retry of the
        # same batch must not count it again.
        await made.record_spend(batch)
        assert await made.period_spend([("team:research", "total")]) == [3.0]
    finally:
        await made.close()


async def test_errors_never_show_the_password() -> None:
    server = RedisServer("--requirepass", "the-right-one")
    server.start()
    made = RedisAccounting(f"redis://:hunter2secret@127.0.0.1:{server.port}/0", "crossway:")
    try:
        with pytest.raises(StoreBroken) as caught:
            await made.open()
        assert "hunter2secret" not in str(caught.value)
        assert f"127.0.0.1:{server.port}" in str(caught.value)
    finally:
        await made.close()
        server.stop()
