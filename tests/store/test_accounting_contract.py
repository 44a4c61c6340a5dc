"""The accounting store contract (`crossway.store.accounting.AccountingStore`), run against
every implementation: SQLite on a temporary file and Redis on a real `redis-server`."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crossway.config.accounting import BudgetLimits
from crossway.store.accounting import (
    AccountingStore,
    Principal,
    SpendRecord,
    VirtualKey,
    digest,
    new_id,
    new_secret,
    period_names,
)
from crossway.store.accounting_sqlite import SqliteAccounting
from tests.helpers import redis_server

UTC = ZoneInfo("UTC")
T0 = 1_800_000_000.0
"""2027-01-15 08:00 UTC: a Friday, so the day, week and month differ."""

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AccountingStore]:
    made: AccountingStore
    if request.param == "sqlite":
        made = SqliteAccounting(tmp_path / "accounting.sqlite3")
    else:
        port = request.getfixturevalue("redis_port")
        # Imported here: the SQLite half of the suite runs whatever state the Redis one is in.
        from crossway.store.accounting_redis import RedisAccounting

        made = RedisAccounting(f"redis://127.0.0.1:{port}/0", f"test:{next(_prefixes)}:")
    await made.open()
    try:
        yield made
    finally:
        await made.close()


def make_key(**changes: Any) -> tuple[str, VirtualKey]:
    secret = new_secret()
    key = VirtualKey(
        id=new_id("key"),
        digest=digest(secret),
        display=secret[:10],
        created_at=T0,
        updated_at=T0,
    )
    return secret, key.with_changes(**changes)


def spend(
    record_id: str | None = None, *, ts: float = T0, cost: float = 1.0, **fields: Any
) -> SpendRecord:
    return SpendRecord(
        id=record_id or new_id("sp"), ts=ts, cost=cost, periods=period_names(ts, UTC), **fields
    )


# --- keys ------------------------------------------------------------------------------------


async def test_key_round_trip(store: AccountingStore) -> None:
    _, key = make_key(
        name="ci bot",
        user="alice",
        team="research",
        models=("gpt-4o", "claude-*"),
        mcp_tools=("github_search",),
        agents=("planner",),
        limits=BudgetLimits(max_budget=12.5, budget_period="monthly", rpm=60, tpm=10_000),
        expires_at=T0 + 86400,
        metadata={"owner": "platform", "ticket": "OPS-1"},
    )
    assert await store.get_key(key.id) is None
    await store.put_key(key)
    assert await store.get_key(key.id) == key
    assert await store.get_key("key_missing") is None


async def test_put_key_replaces_by_id(store: AccountingStore) -> None:
    _, key = make_key(user="alice", models=("gpt-4o",))
    await store.put_key(key)
    changed = key.with_changes(
        models=(), limits=BudgetLimits(rpm=5), revoked_at=T0 + 10, updated_at=T0 + 10
    )
    await store.put_key(changed)
    assert await store.get_key(key.id) == changed
    assert await store.key_by_digest(key.digest) == changed
    assert [k.id for k in await store.list_keys(include_revoked=True)] == [key.id]


async def test_key_by_digest(store: AccountingStore) -> None:
    secret, key = make_key()
    await store.put_key(key)
    assert await store.key_by_digest(digest(secret)) == key
    assert await store.key_by_digest(digest(new_secret())) is None


async def test_rotation_moves_the_digest(store: AccountingStore) -> None:
    old_secret, key = make_key()
    await store.put_key(key)
    new = new_secret()
    await store.put_key(key.with_changes(digest=digest(new), display=new[:10]))
    assert await store.key_by_digest(digest(old_secret)) is None
    found = await store.key_by_digest(digest(new))
    assert found is not None and found.id == key.id


async def test_digest_is_unique(store: AccountingStore) -> None:
    _, first = make_key(name="first")
    await store.put_key(first)
    version = await store.version()
    _, other = make_key(name="thief")
    with pytest.raises(ValueError):
        await store.put_key(other.with_changes(digest=first.digest))
    assert await store.get_key(other.id) is None
    assert await store.key_by_digest(first.digest) == first
    assert await store.version() == version
    # the same key written again with its own digest is fine
    await store.put_key(first.with_changes(name="renamed"))
    renamed = await store.key_by_digest(first.digest)
    assert renamed is not None and renamed.name == "renamed"


async def test_list_keys_filters_and_order(store: AccountingStore) -> None:
    _, a = make_key(user="alice", team="research", created_at=T0 + 3)
    _, b = make_key(user="bob", team="research", created_at=T0 + 1)
    _, c = make_key(user="alice", team="ops", created_at=T0 + 2)
    _, d = make_key(user="alice", team="research", created_at=T0, revoked_at=T0 + 5)
    for key in (a, b, c, d):
        await store.put_key(key)

    def ids(keys: list[VirtualKey]) -> list[str]:
        return [k.id for k in keys]

    assert ids(await store.list_keys()) == [b.id, c.id, a.id]
    assert ids(await store.list_keys(include_revoked=True)) == [d.id, b.id, c.id, a.id]
    assert ids(await store.list_keys(user="alice")) == [c.id, a.id]
    assert ids(await store.list_keys(team="research")) == [b.id, a.id]
    assert ids(await store.list_keys(user="alice", team="research")) == [a.id]
    assert ids(await store.list_keys(user="alice", team="research", include_revoked=True)) == [
        d.id,
        a.id,
    ]
    assert await store.list_keys(user="nobody") == []


async def test_expired_keys_are_listed(store: AccountingStore) -> None:
    _, key = make_key(expires_at=1.0)
    await store.put_key(key)
    assert [k.id for k in await store.list_keys()] == [key.id]
    assert key.status() == "expired"


async def test_version_changes_with_every_key_and_principal_change(
    store: AccountingStore,
) -> None:
    seen = [await store.version()]

    async def changed() -> None:
        now = await store.version()
        assert now not in seen
        seen.append(now)

    _, key = make_key()
    await store.put_key(key)
    await changed()
    await store.put_key(key.with_changes(revoked_at=T0 + 1))
    await changed()
    await store.put_principal(Principal("team", "research", BudgetLimits(max_budget=10)))
    await changed()
    await store.put_principal(Principal("team", "research", BudgetLimits(max_budget=20)))
    await changed()
    assert await store.delete_principal("team", "research")
    await changed()
    # reads and spend leave it alone (every process drops its key cache when it moves)
    await store.get_key(key.id)
    await store.list_keys(include_revoked=True)
    await store.list_principals("team")
    await store.record_spend([spend(key_id=key.id)])
    assert await store.version() == seen[-1]


# --- principals ------------------------------------------------------------------------------


async def test_principals_crud(store: AccountingStore) -> None:
    research = Principal(
        "team",
        "research",
        BudgetLimits(max_budget=100, budget_period="weekly", rpm=600, tpm=50_000),
        {"cost_center": "42"},
        T0,
    )
    alice = Principal("user", "alice", BudgetLimits(max_budget=5), {}, T0)
    ops = Principal("team", "ops", updated_at=T0)
    for p in (research, alice, ops):
        await store.put_principal(p)

    assert await store.get_principal("team", "research") == research
    assert await store.get_principal("user", "alice") == alice
    assert await store.get_principal("user", "research") is None  # kinds are separate
    assert sorted(p.id for p in await store.list_principals("team")) == ["ops", "research"]
    assert [p.id for p in await store.list_principals("user")] == ["alice"]

    replaced = Principal("team", "research", BudgetLimits(rpm=1), {}, T0 + 1)
    await store.put_principal(replaced)
    assert await store.get_principal("team", "research") == replaced
    assert len(await store.list_principals("team")) == 2

    assert await store.delete_principal("team", "research")
    assert not await store.delete_principal("team", "research")
    assert not await store.delete_principal("user", "nobody")
    assert await store.get_principal("team", "research") is None
    assert [p.id for p in await store.list_principals("team")] == ["ops"]


# --- spend -----------------------------------------------------------------------------------


async def test_record_spend_adds_to_every_scope_and_period(store: AccountingStore) -> None:
    record = spend(cost=1.5, key_id="key_a", user="alice", team="research")
    assert await store.record_spend([record]) == 1
    assert await store.record_spend([spend(cost=0.25, key_id="key_a", user="alice")]) == 1
    day, week, month, total = period_names(T0, UTC)
    assert day.startswith("d") and week.startswith("w") and month.startswith("m")
    wanted = [
        (scope, period)
        for scope in ("key:key_a", "user:alice", "team:research")
        for period in (day, week, month, total)
    ]
    got = await store.period_spend(wanted)
    assert got[:8] == pytest.approx([1.75] * 8)
    assert got[8:] == pytest.approx([1.5] * 4)
    # a scope or period nothing was spent in is 0
    assert await store.period_spend([("team:ops", month), ("key:key_a", "m1999-01")]) == [0, 0]
    assert await store.period_spend([]) == []


async def test_periods_follow_the_records(store: AccountingStore) -> None:
    next_day = T0 + 86400
    await store.record_spend([spend(cost=1, team="t"), spend(ts=next_day, cost=2, team="t")])
    day0, _, month, total = period_names(T0, UTC)
    day1 = period_names(next_day, UTC)[0]
    assert await store.period_spend(
        [("team:t", day0), ("team:t", day1), ("team:t", month), ("team:t", total)]
    ) == pytest.approx([1, 2, 3, 3])


async def test_record_spend_is_idempotent(store: AccountingStore) -> None:
    batch = [spend(f"r{i}", cost=1.0, key_id="key_a", team="t") for i in range(5)]
    assert await store.record_spend(batch) == 5
    assert await store.record_spend(batch) == 0  # a retried batch counts nothing twice
    overlapping = [*batch[3:], *(spend(f"r{i}", cost=1.0, key_id="key_a") for i in range(5, 8))]
    assert await store.record_spend(overlapping) == 3
    # a record twice in one batch counts once
    assert await store.record_spend([spend("r9", cost=1.0, key_id="key_a")] * 2) == 1
    assert await store.record_spend([]) == 0
    total = "total"
    assert await store.period_spend([("key:key_a", total), ("team:t", total)]) == pytest.approx(
        [9.0, 5.0]
    )
    [row] = await store.spend_report([], None, None, {})
    assert row["requests"] == 9
    assert row["cost"] == pytest.approx(9.0)


async def _report_fixture(store: AccountingStore) -> None:
    await store.record_spend(
        [
            spend(
                ts=T0,
                cost=1.0,
                key_id="key_a",
                user="alice",
                team="research",
                model="gpt-4o",
                provider="openai",
                route="llm",
                input_tokens=100,
                output_tokens=10,
            ),
            spend(
                ts=T0 + 10,
                cost=2.0,
                key_id="key_a",
                user="alice",
                team="research",
                model="claude",
                provider="anthropic",
                route="llm",
                input_tokens=200,
                output_tokens=20,
            ),
            spend(
                ts=T0 + 20,
                cost=4.0,
                key_id="key_b",
                user="bob",
                team="research",
                model="gpt-4o",
                provider="openai",
                route="batch",
                input_tokens=400,
                output_tokens=40,
            ),
            spend(
                ts=T0 + 30,
                cost=0.5,
                key_id="key_c",
                user="carol",
                team="ops",
                model="gpt-4o",
                provider="openai",
                route="llm",
                input_tokens=50,
                output_tokens=5,
            ),
        ]
    )


async def test_spend_report_groups(store: AccountingStore) -> None:
    await _report_fixture(store)
    by_model = await store.spend_report(["model"], None, None, {})
    assert by_model == [
        {"model": "gpt-4o", "requests": 3, "input_tokens": 550, "output_tokens": 55, "cost": 5.5},
        {"model": "claude", "requests": 1, "input_tokens": 200, "output_tokens": 20, "cost": 2.0},
    ]
    by_team_user = await store.spend_report(["team", "user"], None, None, {})
    assert [(r["team"], r["user"], r["cost"]) for r in by_team_user] == [
        ("research", "bob", 4.0),
        ("research", "alice", 3.0),
        ("ops", "carol", 0.5),
    ]
    by_key = await store.spend_report(["key"], None, None, {})
    assert [(r["key"], r["requests"]) for r in by_key] == [
        ("key_b", 1),
        ("key_a", 2),
        ("key_c", 1),
    ]
    by_provider = await store.spend_report(["provider"], None, None, {})
    assert [(r["provider"], r["cost"]) for r in by_provider] == [
        ("openai", 5.5),
        ("anthropic", 2.0),
    ]
    by_route = await store.spend_report(["route"], None, None, {})
    assert [(r["route"], r["cost"]) for r in by_route] == [("batch", 4.0), ("llm", 3.5)]
    everything = await store.spend_report([], None, None, {})
    assert everything == [
        {"requests": 4, "input_tokens": 750, "output_tokens": 75, "cost": 7.5},
    ]


async def test_spend_report_range_and_filters(store: AccountingStore) -> None:
    await _report_fixture(store)
    # start is inclusive, end exclusive
    in_range = await store.spend_report(["user"], T0 + 10, T0 + 30, {})
    assert [(r["user"], r["cost"]) for r in in_range] == [("bob", 4.0), ("alice", 2.0)]
    since = await store.spend_report([], T0 + 20, None, {})
    assert [r["requests"] for r in since] == [2]
    until = await store.spend_report([], None, T0 + 20, {})
    assert [r["cost"] for r in until] == [3.0]
    assert await store.spend_report(["model"], T0 + 1000, None, {}) == []

    research = await store.spend_report(["model"], None, None, {"team": "research"})
    assert [(r["model"], r["cost"]) for r in research] == [("gpt-4o", 5.0), ("claude", 2.0)]
    alice_gpt = await store.spend_report([], None, None, {"user": "alice", "model": "gpt-4o"})
    assert [(r["requests"], r["cost"]) for r in alice_gpt] == [(1, 1.0)]
    by_key = await store.spend_report(["model"], T0, T0 + 25, {"key": "key_a"})
    assert [r["model"] for r in by_key] == ["claude", "gpt-4o"]
    assert await store.spend_report(["model"], None, None, {"team": "nobody"}) == []


async def test_spend_report_missing_group_value_is_none(store: AccountingStore) -> None:
    await store.record_spend([spend(cost=1.0, team="t"), spend(cost=3.0)])
    rows = await store.spend_report(["team"], None, None, {})
    assert [(r["team"], r["cost"]) for r in rows] == [(None, 3.0), ("t", 1.0)]


async def test_claim_alert_once(store: AccountingStore) -> None:
    assert await store.claim_alert("team:research", "m2027-01")
    assert not await store.claim_alert("team:research", "m2027-01")
    assert await store.claim_alert("team:research", "m2027-02")
    assert await store.claim_alert("user:alice", "m2027-01")
    assert not await store.claim_alert("user:alice", "m2027-01")
