"""`RedisAccounting`: the accounting store in Redis, shared by every replica that names the same
server and prefix (see `crossway.store.accounting` for the contract).

Layout (every key under `prefix`, default `crossway:`):

    schema                  the layout version (`SCHEMA_VERSION`); a newer one is refused at open
                            (`SchemaTooNew`)
    version                 INCR'd with every key or principal change (replicas poll it)
    vk:{id}                 hash: `digest`, `data` (the key as JSON)
    vkd:{digest}            the id of the key whose secret hashes to `digest`
    vks                     sorted set of key ids by `created_at` (listing, oldest first)
    pr:{kind}:{id}          a user or team as JSON;  prs:{kind}  the set of its ids
    sp:id:{record id}       "1" for `SPEND_ID_TTL_SECONDS`: a record written again is skipped
    sp:log                  sorted set of spend records (compact JSON) by `ts`, for reports;
                            entries older than `SPEND_LOG_RETENTION_SECONDS` are trimmed on write
    sp:tot:{scope}:{period} USD spent (INCRBYFLOAT); daily, weekly and monthly totals expire
                            `PERIOD_TOTAL_TTL_SECONDS` after their last write, `total` never
    alert:{scope}:{period}  "1" once an alert was claimed (same TTLs as the totals)

Every write is one Lua script (atomic, one round trip): a key and its digest index and the
version change together; a spend batch's id markers, log entries and totals are written together
(batches of more than `SPEND_CHUNK` records take one script call per chunk; a chunk that fails
after others succeeded is safe to retry, the ids make it idempotent). Scripts name keys they
derive (a rotated key's old digest), so the store needs one Redis server, not Redis Cluster.

Every Redis failure (unreachable, timed out, refused) raises `StoreBroken` after at most
`REDIS_TIMEOUT_SECONDS` (one immediate reconnect on a dropped connection, none on a timeout).
A store keeps working after Redis comes back, without being reopened.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import fields
from types import TracebackType
from typing import Any, Final, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from crossway.config.accounting import BudgetLimits
from crossway.store.accounting import (
    GROUPS,
    SCHEMA_VERSION,
    Principal,
    PrincipalKind,
    SchemaTooNew,
    SpendRecord,
    StoreBroken,
    VirtualKey,
)
from crossway.store.revocations import REDIS_TIMEOUT_SECONDS

DAY: Final = 86400
SPEND_CHUNK: Final = 500
"""Records written per script call (a big batch is several calls, each atomic)."""
SPEND_ID_TTL_SECONDS: Final = 2 * DAY  # retries come within minutes; ids cost memory
"""How long a written record's id is remembered: a retry within this time counts nothing twice."""
SPEND_LOG_RETENTION_SECONDS: Final = 400 * DAY
"""How long spend records stay queryable by `spend_report` (older ones are trimmed on write)."""
PERIOD_TOTAL_TTL_SECONDS: Final[Mapping[str, int]] = {"d": 40 * DAY, "w": 60 * DAY, "m": 400 * DAY}
"""Expiry of a period's totals after their last write, by the period name's first letter
(`d2026-12-01`, `w2026-11-30`, `m2026-12`); `total` never expires."""
UNKNOWN_PERIOD_TTL_SECONDS: Final = 400 * DAY
REPORT_PAGE: Final = 5000
"""Spend log entries read per round trip by `spend_report`."""
RECONNECT_RETRIES: Final = 1
"""Immediate retries of a command whose connection dropped (a restarted Redis, a stale pooled
connection); a timeout is never retried, so a hung Redis fails within one timeout."""

_GROUP_FIELD: Final[Mapping[str, str]] = {group: group for group in GROUPS} | {"key": "key_id"}
"""The `SpendRecord` field behind each group column."""
_RECORD_FIELDS: Final = tuple(f.name for f in fields(SpendRecord))
_KEY_FIELDS: Final = frozenset(f.name for f in fields(VirtualKey))

_PUT_KEY: Final = """
-- KEYS: key hash, digest index, listing zset, version
-- ARGV: id, digest, created_at, data, digest index prefix
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return -1 end
local old = redis.call('HGET', KEYS[1], 'digest')
if old and old ~= ARGV[2] then
  local old_index = ARGV[5] .. old
  if redis.call('GET', old_index) == ARGV[1] then redis.call('DEL', old_index) end
end
redis.call('HSET', KEYS[1], 'digest', ARGV[2], 'data', ARGV[4])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return redis.call('INCR', KEYS[4])
"""

_KEY_BY_DIGEST: Final = """
-- KEYS: digest index; ARGV: key hash prefix
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('HGET', ARGV[1] .. id, 'data')
"""

_PUT_PRINCIPAL: Final = """
-- KEYS: principal, set of its kind, version; ARGV: id, data
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call('INCR', KEYS[3])
"""

_DELETE_PRINCIPAL: Final = """
-- KEYS: principal, set of its kind, version; ARGV: id
local gone = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if gone == 1 then redis.call('INCR', KEYS[3]) end
return gone
"""

_RECORD_SPEND: Final = """
-- KEYS: spend log, then per record: its id marker, then its totals
-- ARGV: log cutoff, id ttl, record count,
--       then per record: ts, cost, json, total count, then one ttl per total (0: none)
local log = KEYS[1]
local k = 2
local a = 4
local new = 0
for _ = 1, tonumber(ARGV[3]) do
  local marker = KEYS[k]
  local ts, cost, entry, totals = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  k = k + 1
  a = a + 4
  if redis.call('SET', marker, '1', 'NX', 'EX', ARGV[2]) then
    new = new + 1
    redis.call('ZADD', log, ts, entry)
    for t = 0, totals - 1 do
      redis.call('INCRBYFLOAT', KEYS[k + t], cost)
      local ttl = tonumber(ARGV[a + t])
      if ttl > 0 then redis.call('EXPIRE', KEYS[k + t], ttl) end
    end
  end
  k = k + totals
  a = a + totals
end
redis.call('ZREMRANGEBYSCORE', log, '-inf', '(' .. ARGV[1])
return new
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _period_ttl(period: str) -> int:
    """Seconds a total (or an alert claim) of `period` lives after its last write; 0: forever."""
    if period == "total":
        return 0
    return PERIOD_TOTAL_TTL_SECONDS.get(period[:1], UNKNOWN_PERIOD_TTL_SECONDS)


def _key_json(key: VirtualKey) -> bytes:
    data = {name: getattr(key, name) for name in _KEY_FIELDS}
    data["limits"] = key.limits.model_dump()
    data["metadata"] = dict(key.metadata)
    return orjson.dumps(data)


def _key_from_json(raw: bytes | str) -> VirtualKey:
    data = {k: v for k, v in orjson.loads(raw).items() if k in _KEY_FIELDS}
    data["limits"] = BudgetLimits.model_validate(data.get("limits") or {})
    for name in ("models", "mcp_tools", "agents"):
        data[name] = tuple(data.get(name) or ())
    return VirtualKey(**data)


def _principal_json(principal: Principal) -> bytes:
    return orjson.dumps(
        {
            "kind": principal.kind,
            "id": principal.id,
            "limits": principal.limits.model_dump(),
            "metadata": dict(principal.metadata),
            "updated_at": principal.updated_at,
        }
    )


def _principal_from_json(raw: bytes | str) -> Principal:
    data = orjson.loads(raw)
    return Principal(
        kind=data["kind"],
        id=data["id"],
        limits=BudgetLimits.model_validate(data.get("limits") or {}),
        metadata=data.get("metadata") or {},
        updated_at=data.get("updated_at", 0.0),
    )


def _record_json(record: SpendRecord) -> bytes:
    """The record without its empty fields (the log holds many of them)."""
    data = {name: getattr(record, name) for name in _RECORD_FIELDS if name != "periods"}
    return orjson.dumps({k: v for k, v in data.items() if v or k in ("id", "ts", "cost")})


class _Guard:
    """Turns every Redis or socket failure inside `with` into `StoreBroken`."""

    __slots__ = ("doing", "where")

    def __init__(self, where: str, doing: str) -> None:
        self.where = where
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # TimeoutError (asyncio's too) is an OSError.
        if exc is not None and isinstance(exc, RedisError | OSError):
            raise StoreBroken(
                f"the Redis accounting store at {self.where} could not {self.doing}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


class RedisAccounting:
    """Keys, principals and spend in one Redis server, shared by every replica using the same
    `url` and `prefix` (see the module docstring for the layout)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self._redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), RECONNECT_RETRIES, supported_errors=(RedisConnectionError,)),
        )
        pool = self._redis.connection_pool.connection_kwargs
        # Only where it is, never the URL (it may hold a password).
        self._where = (
            str(pool["path"]) if "path" in pool else f"{pool.get('host')}:{pool.get('port')}"
        )
        self._put_key = self._redis.register_script(_PUT_KEY)
        self._key_by_digest = self._redis.register_script(_KEY_BY_DIGEST)
        self._put_principal = self._redis.register_script(_PUT_PRINCIPAL)
        self._delete_principal = self._redis.register_script(_DELETE_PRINCIPAL)
        self._record_spend = self._redis.register_script(_RECORD_SPEND)
        self._version_key = prefix + "version"
        self._keys_index = prefix + "vks"
        self._log = prefix + "sp:log"

    def _guard(self, doing: str) -> _Guard:
        return _Guard(self._where, doing)

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Check Redis answers and the layout is one this code knows (writing it if new); an
        unknown or newer layout raises `SchemaTooNew`."""
        key = self.prefix + "schema"
        with self._guard("open"):
            await self._redis.ping()  # type: ignore[misc]
            await self._redis.set(key, SCHEMA_VERSION, nx=True)
            stored = await self._redis.get(key)
        try:
            found = int(_text(stored or b""))
        except ValueError:
            raise SchemaTooNew(
                f"the Redis accounting store at {self._where}: {key!r} holds {stored!r}, "
                "not a layout version (is another program using this prefix?)"
            ) from None
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the Redis accounting store at {self._where} has layout version {found} "
                f"under prefix {self.prefix!r}, newer than this Crossway's ({SCHEMA_VERSION}): "
                "upgrade Crossway, or use another prefix"
            )
        # Older layouts would be migrated here, one version at a time; version 1 is the first.

    async def close(self) -> None:
        await self._redis.aclose()

    # -- keys ------------------------------------------------------------------------------------

    async def put_key(self, key: VirtualKey) -> None:
        keys = [
            f"{self.prefix}vk:{key.id}",
            f"{self.prefix}vkd:{key.digest}",
            self._keys_index,
            self._version_key,
        ]
        args: list[str | bytes] = [
            key.id,
            key.digest,
            repr(key.created_at),
            _key_json(key),
            self.prefix + "vkd:",
        ]
        with self._guard("write a key"):
            done = await self._put_key(keys=keys, args=args)
        if int(done) < 0:
            raise ValueError(f"another key already has this secret (digest {key.digest[:12]}…)")

    async def get_key(self, key_id: str) -> VirtualKey | None:
        with self._guard("read a key"):
            raw = await self._redis.hget(f"{self.prefix}vk:{key_id}", "data")  # type: ignore[misc]
        return None if raw is None else _key_from_json(raw)

    async def key_by_digest(self, key_digest: str) -> VirtualKey | None:
        with self._guard("look up a key"):
            raw = await self._key_by_digest(
                keys=[f"{self.prefix}vkd:{key_digest}"], args=[self.prefix + "vk:"]
            )
        if raw is None:
            return None
        key = _key_from_json(raw)
        return key if key.digest == key_digest else None

    async def list_keys(
        self, *, user: str | None = None, team: str | None = None, include_revoked: bool = False
    ) -> list[VirtualKey]:
        with self._guard("list keys"):
            ids = cast(list[bytes], await self._redis.zrange(self._keys_index, 0, -1))
            if not ids:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_id in ids:
                    pipe.hget(f"{self.prefix}vk:{_text(key_id)}", "data")
                raws = await pipe.execute()
        found = []
        for raw in raws:
            if raw is None:
                continue
            key = _key_from_json(raw)
            if user is not None and key.user != user:
                continue
            if team is not None and key.team != team:
                continue
            if key.revoked_at is not None and not include_revoked:
                continue
            found.append(key)
        return found

    async def version(self) -> int:
        with self._guard("read the version"):
            raw = await self._redis.get(self._version_key)
        return 0 if raw is None else int(raw)

    # -- principals ------------------------------------------------------------------------------

    def _principal_keys(self, kind: PrincipalKind, principal_id: str) -> list[str]:
        return [
            f"{self.prefix}pr:{kind}:{principal_id}",
            f"{self.prefix}prs:{kind}",
            self._version_key,
        ]

    async def put_principal(self, principal: Principal) -> None:
        keys = self._principal_keys(principal.kind, principal.id)
        with self._guard(f"write a {principal.kind}"):
            await self._put_principal(keys=keys, args=[principal.id, _principal_json(principal)])

    async def get_principal(self, kind: PrincipalKind, principal_id: str) -> Principal | None:
        with self._guard(f"read a {kind}"):
            raw = await self._redis.get(f"{self.prefix}pr:{kind}:{principal_id}")
        return None if raw is None else _principal_from_json(raw)

    async def list_principals(self, kind: PrincipalKind) -> list[Principal]:
        with self._guard(f"list {kind}s"):
            ids = sorted(_text(i) for i in await self._redis.smembers(f"{self.prefix}prs:{kind}"))  # type: ignore[misc]
            if not ids:
                return []
            raws = await self._redis.mget([f"{self.prefix}pr:{kind}:{i}" for i in ids])
        return [_principal_from_json(raw) for raw in raws if raw is not None]

    async def delete_principal(self, kind: PrincipalKind, principal_id: str) -> bool:
        keys = self._principal_keys(kind, principal_id)
        with self._guard(f"delete a {kind}"):
            gone = await self._delete_principal(keys=keys, args=[principal_id])
        return bool(int(gone))

    # -- spend -----------------------------------------------------------------------------------

    def _total_key(self, scope: str, period: str) -> str:
        return f"{self.prefix}sp:tot:{scope}:{period}"

    async def record_spend(self, records: Sequence[SpendRecord]) -> int:
        new = 0
        for start in range(0, len(records), SPEND_CHUNK):
            chunk = records[start : start + SPEND_CHUNK]
            keys: list[str] = [self._log]
            args: list[str | bytes | int] = [
                repr(time.time() - SPEND_LOG_RETENTION_SECONDS),
                SPEND_ID_TTL_SECONDS,
                len(chunk),
            ]
            for record in chunk:
                totals = [(s, p) for s in record.scopes() for p in record.periods]
                keys.append(f"{self.prefix}sp:id:{record.id}")
                keys += [self._total_key(s, p) for s, p in totals]
                args += [repr(record.ts), repr(record.cost), _record_json(record), len(totals)]
                args += [_period_ttl(p) for _, p in totals]
            with self._guard("record spend"):
                new += int(await self._record_spend(keys=keys, args=args))
        return new

    async def period_spend(self, scopes: Sequence[tuple[str, str]]) -> list[float]:
        if not scopes:
            return []
        with self._guard("read spend totals"):
            raws = await self._redis.mget([self._total_key(s, p) for s, p in scopes])
        return [0.0 if raw is None else float(raw) for raw in raws]

    async def spend_report(
        self,
        group_by: Sequence[str],
        start: float | None,
        end: float | None,
        filters: Mapping[str, str],
    ) -> list[dict[str, Any]]:
        unknown = [g for g in [*group_by, *filters] if g not in _GROUP_FIELD]
        if unknown:
            raise ValueError(f"cannot group or filter spend by {unknown[0]!r} (use {GROUPS})")
        wanted = [(_GROUP_FIELD[g], v) for g, v in filters.items()]
        columns = [(g, _GROUP_FIELD[g]) for g in dict.fromkeys(group_by)]
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        async for entry in self._log_entries(start, end):
            if any(entry.get(name) != value for name, value in wanted):
                continue
            group = tuple(entry.get(name) for _, name in columns)
            row = rows.get(group)
            if row is None:
                row = rows[group] = {g: v for (g, _), v in zip(columns, group, strict=True)}
                row |= {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0}
            row["requests"] += 1
            row["input_tokens"] += entry.get("input_tokens", 0)
            row["output_tokens"] += entry.get("output_tokens", 0)
            row["cost"] += entry.get("cost", 0.0)
        # As SQLite orders them: cost first, then the groups (missing values first).
        return [
            rows[group]
            for group in sorted(
                rows, key=lambda g: (-rows[g]["cost"], [(v is not None, v or "") for v in g])
            )
        ]

    async def _log_entries(
        self, start: float | None, end: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        """The log's records with `start <= ts < end`, oldest first, read a page at a time.

        Pages are taken by score, not offset (records are inserted at their own, earlier, times
        while a report runs); members already read at the page's first score are skipped."""
        low = "-inf" if start is None else repr(start)
        high = "+inf" if end is None else f"({end!r}"
        seen: set[bytes] = set()
        while True:
            with self._guard("read spend records"):
                page = cast(
                    list[tuple[bytes, float]],
                    await self._redis.zrangebyscore(
                        self._log, low, high, start=len(seen), num=REPORT_PAGE, withscores=True
                    ),
                )
            for member, _ in page:
                if member not in seen:
                    yield orjson.loads(member)
            if len(page) < REPORT_PAGE:
                return
            last = page[-1][1]
            at_last = {member for member, score in page if score == last}
            seen = seen | at_last if repr(last) == low else at_last
            low = repr(last)

    async def claim_alert(self, scope: str, period: str) -> bool:
        ttl = _period_ttl(period)
        with self._guard("claim an alert"):
            claimed = await self._redis.set(
                f"{self.prefix}alert:{scope}:{period}", 1, nx=True, ex=ttl or None
            )
        return bool(claimed)


__all__ = ["RedisAccounting"]
