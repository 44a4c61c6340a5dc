"""`RedisTaskStore`: task ownership and states in Redis, shared by every replica naming the same
server (see `crossway.store.tasks` for the contract)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from crossway.store.revocations import REDIS_TIMEOUT_SECONDS, StoreUnavailable
from crossway.store.tasks import (
    DEFAULT_LIST_LIMIT,
    MAX_HISTORY,
    MAX_TTL_FALLBACK,
    PURGE_INTERVAL_SECONDS,
    REDIS_SCAN_BATCH,
    Records,
    TaskRecord,
    record_matches,
)

_PUT_OWNER: Final = """
-- KEYS: task hash, context key (or ""), index; ARGV: task id, agent, context, created, ttl ms
local owner = ARGV[2]
if KEYS[1] ~= "" then
  if redis.call('HSETNX', KEYS[1], 'agent', ARGV[2]) == 1 then
    redis.call('HSET', KEYS[1], 'created', ARGV[4], 'updated', ARGV[4], 'ttl', ARGV[5])
    if ARGV[3] ~= "" then redis.call('HSET', KEYS[1], 'context', ARGV[3]) end
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  else
    owner = redis.call('HGET', KEYS[1], 'agent')
  end
end
if KEYS[2] ~= "" and owner == ARGV[2] then
  if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[5]) == false then
    if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
  end
end
return owner
"""

_RECORD: Final = """
-- KEYS: task hash, history list, index; ARGV: task id, agent, state, at, default ttl ms,
-- max history, context key prefix
local cur = redis.call('HMGET', KEYS[1], 'agent', 'state', 'created', 'ttl', 'context')
if cur[1] and cur[1] ~= ARGV[2] then return false end
if cur[2] == ARGV[3] then return false end
local created = cur[3]
local ttl = cur[4]
if not cur[1] then
  created = ARGV[4]
  ttl = ARGV[5]
  redis.call('HSET', KEYS[1], 'agent', ARGV[2], 'created', created, 'ttl', ttl)
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'updated', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[3] .. ' ' .. ARGV[4])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
if cur[5] then
  local ctx = ARGV[7] .. cur[5]
  if redis.call('GET', ctx) == ARGV[2] and redis.call('PTTL', ctx) < tonumber(ttl) then
    redis.call('PEXPIRE', ctx, ttl)
  end
end
return created
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisTaskStore:
    """Tasks in Redis, shared by every worker and replica using the same server.

    Keys under `namespace` (`crossway:a2a:<backend>:`): `task:<id>` a hash (agent, context,
    state, created, updated, ttl), `task:<id>:history` a list of "state at", `context:<id>`
    the owning agent, `tasks` a sorted set of task ids by last update (for listing); each
    expires `ttl` after its last write. Writes are Lua scripts (one round trip, atomic). Redis
    errors raise `StoreUnavailable`.
    """

    def __init__(self, url: str, namespace: str) -> None:
        self.namespace = namespace
        self._redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self._put_owner = self._redis.register_script(_PUT_OWNER)
        self._record = self._redis.register_script(_RECORD)
        self._index = namespace + "tasks"
        self._pruned = time.monotonic()

    def _task_key(self, task_id: str) -> str:
        return f"{self.namespace}task:{task_id}"

    def _context_key(self, context_id: str) -> str:
        return f"{self.namespace}context:{context_id}"

    async def put_owner(
        self,
        task_id: str | None,
        context_id: str | None,
        agent: str,
        ttl: float,
        *,
        at: float | None = None,
    ) -> str:
        created = time.time() if at is None else at
        keys = [
            "" if task_id is None else self._task_key(task_id),
            "" if context_id is None else self._context_key(context_id),
            self._index,
        ]
        args: list[str | int] = [
            task_id or "",
            agent,
            context_id or "",
            repr(created),
            max(int(ttl * 1000), 1),
        ]
        try:
            owner = await self._put_owner(keys=keys, args=args)
            if time.monotonic() - self._pruned > PURGE_INTERVAL_SECONDS:
                self._pruned = time.monotonic()
                await self._prune()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc
        return _text(owner)

    async def _prune(self) -> None:
        """Drop the ids of expired tasks from the listing index (the least recently updated
        `REDIS_SCAN_BATCH`; listing drops the others it meets)."""
        oldest = [
            _text(item) for item in await self._redis.zrange(self._index, 0, REDIS_SCAN_BATCH - 1)
        ]
        if not oldest:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in oldest:
                pipe.exists(self._task_key(task_id))
            alive = await pipe.execute()
        gone = [task_id for task_id, live in zip(oldest, alive, strict=True) if not live]
        if gone:
            await self._redis.zrem(self._index, *gone)

    async def owner(self, task_id: str) -> str | None:
        try:
            found = await self._redis.hget(self._task_key(task_id), "agent")  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc
        return None if found is None else _text(found)

    async def context_owner(self, context_id: str) -> str | None:
        try:
            found = await self._redis.get(self._context_key(context_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc
        return None if found is None else _text(found)

    async def record(self, task_id: str, agent: str, state: str, at: float) -> float | None:
        key = self._task_key(task_id)
        keys = [key, key + ":history", self._index]
        args: list[str | int] = [
            task_id,
            agent,
            state,
            repr(at),
            int(MAX_TTL_FALLBACK * 1000),
            MAX_HISTORY,
            self.namespace + "context:",
        ]
        try:
            created = await self._record(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc
        return None if created is None else float(_text(created))

    def _parse(
        self, task_id: str, fields: dict[bytes, bytes], history: Iterable[bytes]
    ) -> TaskRecord | None:
        if b"agent" not in fields:
            return None
        transitions = []
        for item in history:
            entered, _, at = _text(item).rpartition(" ")
            transitions.append((entered, float(at)))
        created = float(fields.get(b"created", b"0"))
        context = fields.get(b"context")
        state = fields.get(b"state")
        return TaskRecord(
            task_id,
            _text(fields[b"agent"]),
            None if context is None else _text(context),
            None if state is None else _text(state),
            created,
            float(fields.get(b"updated", b"0")) or created,
            tuple(transitions),
        )

    async def _fetch(self, task_ids: builtins.list[str]) -> builtins.list[TaskRecord | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                key = self._task_key(task_id)
                pipe.hgetall(key)
                pipe.lrange(key + ":history", 0, -1)
            replies = await pipe.execute()
        return [
            self._parse(task_id, replies[2 * i], replies[2 * i + 1])
            for i, task_id in enumerate(task_ids)
        ]

    async def get(self, task_id: str) -> TaskRecord | None:
        try:
            return (await self._fetch([task_id]))[0]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc

    async def list(
        self,
        *,
        agent: str | None = None,
        state: str | None = None,
        older_than: float | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> Records:
        top: str = "+inf" if older_than is None else f"({older_than!r}"
        found: Records = []
        start = 0
        try:
            while len(found) < limit:
                raw = await self._redis.zrevrangebyscore(
                    self._index, top, "-inf", start=start, num=REDIS_SCAN_BATCH
                )
                if not raw:
                    break
                start += len(raw)
                ids = [_text(item) for item in raw]
                records = await self._fetch(ids)
                gone = [task_id for task_id, rec in zip(ids, records, strict=True) if rec is None]
                if gone:
                    await self._redis.zrem(self._index, *gone)
                    start -= len(gone)
                found += [
                    rec
                    for rec in records
                    if rec is not None and record_matches(rec, agent, state, older_than)
                ]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("the task store is unreachable") from exc
        return found[:limit]

    async def close(self) -> None:
        await self._redis.aclose()


__all__ = ["RedisTaskStore"]
