"""The ledger: one per process and accounting store — the keys this process accepts, the
budgets it checks and the spend it writes.

Nothing here touches the store on the request path except the first budget read of a scope:

- **Keys** are held in memory, by digest. A poller asks the store for its `version` every
  `key_poll_interval` and reloads keys and principals when it changed, so a key created,
  changed or revoked anywhere (another replica, the CLI) takes effect here within that time.
- **Budgets** are checked against the spend total last read from the store plus this process's
  spend not yet written. A total older than `refresh_interval` is re-read in the background
  while requests go on with the cached one.
- **Spend** records go to a bounded queue written every `flush_interval` (and at shutdown) in
  one batch; a failed write keeps the batch and retries it. Record ids make a retried write
  count nothing twice. When the queue is full (the store has been failing for a while), LLM
  calls are refused with 503: a call whose spend cannot be kept is not made.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from crossway.config.accounting import AccountingConfig, BudgetLimits, BudgetPeriod
from crossway.errors import BudgetExceeded, ServiceUnavailable
from crossway.store.accounting import (
    PERIODS,
    AccountingStore,
    Principal,
    SchemaTooNew,
    SpendRecord,
    StoreBroken,
    VirtualKey,
    open_store,
    period_end,
    period_name,
)
from crossway.telemetry import metrics

log = logging.getLogger("crossway.accounting")

MAX_BATCH: Final = 2000
"""Most records written in one store call."""
SHUTDOWN_FLUSH_SECONDS: Final = 10.0
"""How long closing the ledger may spend writing what is still queued."""
RETRY_AFTER_STORE_ERROR: Final = 1.0


@dataclass(slots=True)
class Budget:
    """One budget to check: whose (`key:ID`, `user:ID`, `team:ID`), how much, per what."""

    scope: str
    limits: BudgetLimits


class Ledger:
    """Keys, budgets and spend of one accounting store, for this process."""

    def __init__(self, config: AccountingConfig, store: AccountingStore | None = None) -> None:
        self.config = config
        self.store = store if store is not None else open_store(config.store)
        self.zone = ZoneInfo(config.timezone)
        self.users = dict(config.users)
        self.teams = dict(config.teams)
        self._keys: dict[str, VirtualKey] = {}
        self._principals: dict[tuple[str, str], Principal] = {}
        self._version: int | None = None
        self.loaded = False
        """Whether keys were read from the store at least once (before: keys get 503)."""
        self.generation = 0
        """Bumped whenever keys or principals were reloaded (what callers cache is stale)."""
        self._totals: dict[tuple[str, str], float] = {}
        self._read_at: dict[tuple[str, str], float] = {}
        self._unflushed: dict[tuple[str, str], float] = collections.defaultdict(float)
        self._refreshing: set[tuple[str, str]] = set()
        self._queue: collections.deque[SpendRecord] = collections.deque()
        self._alerted: set[tuple[str, str]] = set()
        self._periods: dict[str, tuple[str, float, float]] = {}
        self._id_prefix = os.urandom(8).hex() + "-"
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._users = 0
        self._opened = False
        self.error: str | None = None
        """The store's last write or read error, None while it works (`/readyz` shows it)."""

    # -- life -----------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """A policy starts using the ledger (the first one opens it)."""
        self._users += 1
        if self._users == 1:
            await self._open()

    async def release(self) -> None:
        """A policy stops using it (the last one flushes and closes it)."""
        self._users -= 1
        if self._users == 0:
            await self.close()

    async def _open(self) -> None:
        try:
            await self.store.open()
            self._opened = True
            await self.reload()
            metrics.set_store_up("accounting", True)
        except SchemaTooNew:
            raise  # written by a newer Crossway: starting would misread it
        except (StoreBroken, OSError) as exc:
            self._failed("open", exc)  # the poller keeps trying; keys answer 503 until then
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll()), loop.create_task(self._flusher())]

    async def close(self) -> None:
        """Write what is queued (within `SHUTDOWN_FLUSH_SECONDS`), stop, close the store."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        deadline = time.monotonic() + SHUTDOWN_FLUSH_SECONDS
        while self._queue and time.monotonic() < deadline:
            if not await self.flush():
                await asyncio.sleep(0.2)
        if self._queue:
            log.error("accounting: %d spend records could not be written", len(self._queue))
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.store.close()
        _LEDGERS.pop(_ledger_key(self.config), None)

    # -- keys -----------------------------------------------------------------------------------

    def key(self, key_digest: str) -> VirtualKey | None:
        """The key with this digest as last loaded (revoked and expired ones included)."""
        return self._keys.get(key_digest)

    def principal_limits(self, kind: str, principal_id: str) -> BudgetLimits | None:
        """A user's or team's limits: the store's, else the config's."""
        stored = self._principals.get((kind, principal_id))
        if stored is not None:
            return stored.limits
        return (self.users if kind == "user" else self.teams).get(principal_id)

    async def reload(self) -> None:
        """Read every key and principal (when the store's version changed)."""
        version = await self.store.version()
        if version == self._version and self.loaded:
            return
        keys = await self.store.list_keys(include_revoked=True)
        principals = [
            *await self.store.list_principals("user"),
            *await self.store.list_principals("team"),
        ]
        self._keys = {k.digest: k for k in keys}
        self._principals = {(p.kind, p.id): p for p in principals}
        self._version = version
        self.generation += 1
        self.loaded = True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.key_poll_interval)
            try:
                if not self._opened:
                    await self.store.open()
                    self._opened = True
                await self.reload()
                if self.error is not None and self.error.startswith(("open", "read")):
                    self._recovered()
            except (StoreBroken, OSError) as exc:
                self._failed("read", exc)
            except Exception:
                log.exception("accounting: reloading keys failed")

    # -- budgets --------------------------------------------------------------------------------

    def periods(self, when: float) -> tuple[str, ...]:
        """The names of the periods of every kind `when` falls in (`SpendRecord.periods`)."""
        return tuple(self.period(p, when) for p in PERIODS)

    def period(self, period: BudgetPeriod, when: float) -> str:
        """The name of the period `when` falls in (computed once per period: formatting a
        date in a time zone costs microseconds, a lookup does not)."""
        cached = self._periods.get(period)
        if cached is not None and cached[1] <= when < cached[2]:
            return cached[0]
        name = period_name(period, when, self.zone)
        end = period_end(period, when, self.zone)
        start = when if cached is None or cached[0] != name else cached[1]
        self._periods[period] = (name, start, end if end is not None else math.inf)
        return name

    async def check_budgets(self, budgets: Iterable[Budget]) -> None:
        """Raise `BudgetExceeded` for the first budget already spent in its current period."""
        now = time.time()
        for budget in budgets:
            limits = budget.limits
            if limits.max_budget is None:
                continue
            period = self.period(limits.budget_period, now)
            spent = self._cached_spend((budget.scope, period))
            if spent is None:  # this scope's first read: the only one that waits
                spent = await self.spent(budget.scope, period)
            if spent >= limits.max_budget:
                metrics.observe_budget_refusal(budget.scope.partition(":")[0])
                raise _exceeded(
                    budget.scope,
                    limits,
                    spent,
                    period_end(limits.budget_period, now, self.zone),
                    now,
                )

    def _cached_spend(self, key: tuple[str, str]) -> float | None:
        """`spent` without awaiting: None when the total was never read."""
        total = self._totals.get(key)
        if total is None:
            return None
        if time.monotonic() - self._read_at.get(key, 0.0) > self.config.refresh_interval:
            self._spawn_refresh(key)
        return total + self._unflushed.get(key, 0.0)

    async def spent(self, scope: str, period: str) -> float:
        """USD spent by `scope` in `period`: the store's total as last read plus this process's
        spend not yet written. Only a scope's first read waits for the store."""
        key = (scope, period)
        total = self._totals.get(key)
        if total is None:
            try:
                await self._refresh(key)
            except (StoreBroken, OSError) as exc:
                self._failed("read", exc)
                raise ServiceUnavailable(
                    "the accounting store cannot be read, so budgets cannot be checked",
                    code="accounting_store_unavailable",
                    headers={"retry-after": "1"},
                ) from None
            total = self._totals.get(key, 0.0)
        elif time.monotonic() - self._read_at.get(key, 0.0) > self.config.refresh_interval:
            self._spawn_refresh(key)
        return total + self._unflushed.get(key, 0.0)

    def _spawn_refresh(self, key: tuple[str, str]) -> None:
        if key in self._refreshing:
            return
        self._refreshing.add(key)
        task = asyncio.get_running_loop().create_task(self._refresh_quietly(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh_quietly(self, key: tuple[str, str]) -> None:
        try:
            await self._refresh(key)
        except (StoreBroken, OSError) as exc:
            self._failed("read", exc)
        finally:
            self._refreshing.discard(key)

    async def _refresh(self, key: tuple[str, str]) -> None:
        # Under the lock: a flush that lands between the read and its use would count twice
        # (in the total read and in what the flush moves out of `_unflushed`) or not at all.
        async with self._lock:
            (total,) = await self.store.period_spend([key])
            self._totals[key] = total
            self._read_at[key] = time.monotonic()
        if len(self._totals) > 100_000:  # old periods and forgotten scopes
            self._totals.clear()
            self._read_at.clear()

    # -- spend ----------------------------------------------------------------------------------

    def record_id(self) -> str:
        """A new spend record id: this process's random prefix and a counter (unique without
        a syscall per call; a restart draws a new prefix)."""
        return f"{self._id_prefix}{next(self._ids):x}"

    def accepting(self) -> bool:
        """Whether a new LLM call's spend can still be queued."""
        return len(self._queue) < self.config.spend_queue_size

    def record(self, record: SpendRecord, budgets: Iterable[Budget] = ()) -> None:
        """Queue one call's spend; it counts against budgets here at once, in the store at the
        next flush."""
        if not record.periods:
            record = replace(record, periods=self.periods(record.ts))
        self._queue.append(record)
        for scope in record.scopes():
            for period in record.periods:
                self._unflushed[(scope, period)] += record.cost
        metrics.observe_spend(record.route, record.model, record.team, record.user, record.cost)
        for budget in budgets:
            self._maybe_alert(budget, record.ts)

    async def flush(self) -> bool:
        """Write queued records (one batch at most); whether the write succeeded."""
        if not self._queue:
            return True
        batch = [self._queue[i] for i in range(min(MAX_BATCH, len(self._queue)))]
        async with self._lock:
            try:
                await self.store.record_spend(batch)
            except (StoreBroken, OSError) as exc:
                self._failed("write", exc)
                return False
            for _ in batch:
                self._queue.popleft()
            for record in batch:
                for scope in record.scopes():
                    for period in record.periods:
                        key = (scope, period)
                        left = self._unflushed[key] - record.cost
                        if left <= 1e-12:
                            del self._unflushed[key]
                        else:
                            self._unflushed[key] = left
                        if key in self._totals:
                            self._totals[key] += record.cost
        if self.error is not None and self.error.startswith("write"):
            self._recovered()
        return True

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            while self._queue:
                if not await self.flush():
                    break
                if len(self._queue) < MAX_BATCH:
                    break

    # -- alerts ---------------------------------------------------------------------------------

    def _maybe_alert(self, budget: Budget, when: float) -> None:
        limits = budget.limits
        if not limits.max_budget:
            return
        period = self.period(limits.budget_period, when)
        key = (budget.scope, period)
        if key in self._alerted:
            return
        spent = self._totals.get(key, 0.0) + self._unflushed.get(key, 0.0)
        if spent < self.config.alerts.fraction * limits.max_budget:
            return
        self._alerted.add(key)
        task = asyncio.get_running_loop().create_task(self._alert(budget, period, spent))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _alert(self, budget: Budget, period: str, spent: float) -> None:
        try:
            if not await self.store.claim_alert(budget.scope, period):
                return  # another process (replica) alerted already
        except (StoreBroken, OSError):
            pass  # alert anyway: twice is better than never
        limits = budget.limits
        event = {
            "event": "budget_alert",
            "scope": budget.scope,
            "period": period,
            "budget_period": limits.budget_period,
            "max_budget": limits.max_budget,
            "spent": round(spent, 6),
            "fraction": self.config.alerts.fraction,
        }
        log.warning(
            "budget alert: %s spent $%.4f of $%.4f (%s, %s)",
            budget.scope,
            spent,
            limits.max_budget or 0.0,
            limits.budget_period,
            period,
        )
        url = self.config.alerts.webhook
        if url is None:
            return
        from crossway.proxy.outbound import OutboundClient

        client = OutboundClient()
        try:
            async with client.post(
                str(url), data=orjson.dumps(event), headers={"content-type": "application/json"}
            ) as response:
                if response.status >= 300:
                    log.warning("budget alert webhook answered %d", response.status)
        except Exception as exc:
            log.warning("budget alert webhook failed: %s", exc)
        finally:
            await client.close()

    # -- health ---------------------------------------------------------------------------------

    def _failed(self, what: str, exc: BaseException) -> None:
        message = f"{what}: {exc}"
        if self.error != message:
            log.error("accounting store failing (%s); still serving, spend is kept queued", message)
        self.error = message
        metrics.set_store_up("accounting", False)

    def _recovered(self) -> None:
        log.warning("accounting store works again (was: %s)", self.error)
        self.error = None
        metrics.set_store_up("accounting", True)

    def health(self) -> dict[str, Any]:
        """For `/readyz`: whether the store works and how much spend waits to be written."""
        return {"ok": self.error is None, "error": self.error, "queued_spend": len(self._queue)}


def _exceeded(
    scope: str, limits: BudgetLimits, spent: float, ends: float | None, now: float
) -> BudgetExceeded:
    kind, _, who = scope.partition(":")
    budget = limits.max_budget or 0.0
    remaining = max(budget - spent, 0.0)
    per = "in total" if limits.budget_period == "total" else f"per {limits.budget_period[:-2]}"
    if limits.budget_period == "daily":
        per = "per day"
    headers: dict[str, str] = {}
    resets = ""
    if ends is not None:
        headers["retry-after"] = str(max(int(ends - now) + 1, 1))
        resets = time.strftime(" It resets at %Y-%m-%dT%H:%M:%SZ.", time.gmtime(ends))
    return BudgetExceeded(
        f"budget_exceeded: the {kind} {who!r} has spent ${spent:.6f} of its ${budget:.6f} "
        f"budget {per}; remaining budget ${remaining:.6f}.{resets}",
        code="budget_exceeded",
        headers=headers,
        detail={
            "scope": kind,
            "max_budget": budget,
            "spent": round(spent, 6),
            "remaining": round(remaining, 6),
            "budget_period": limits.budget_period,
            "resets_at": ends,
        },
    )


_LEDGERS: dict[str, Ledger] = {}


def _ledger_key(config: AccountingConfig) -> str:
    url = getattr(config.store, "url", None)  # a secret: the JSON dump masks it
    secret = url.get_secret_value() if url is not None else ""
    return orjson.dumps(config.model_dump(mode="json")).decode() + secret


def ledger_for(config: AccountingConfig) -> Ledger:
    """This process's ledger for `config` (one per distinct accounting config)."""
    key = _ledger_key(config)
    ledger = _LEDGERS.get(key)
    if ledger is None:
        ledger = _LEDGERS[key] = Ledger(config)
    return ledger


def ledgers() -> list[Ledger]:
    """The ledgers open in this process (for `/readyz`)."""
    return list(_LEDGERS.values())
