"""The accounting store: virtual keys, team and user budgets, spend records and the per-period
spend totals budgets are checked against.

Two implementations with one contract, picked by `accounting.store`:

    SqliteAccounting   one file (WAL), one machine; blocking calls run on one thread
    RedisAccounting    shared by every replica (atomic Lua scripts)

Keys are stored hashed (`digest` = SHA-256 of the secret); the secret itself is shown once, when
it is created or rotated, and never stored. Every change to a key or a principal bumps the store's
`version`, which every process polls to drop its cached keys (a revoked key stops working
everywhere within the poll interval).

Spend records carry a random `id`: writing a batch again (a retry after a failed write, a flush
at shutdown racing one on the timer) never counts a record twice, and a batch's records and the
totals they add to are written in one transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, Protocol
from zoneinfo import ZoneInfo

from crossway.config.accounting import BudgetLimits, BudgetPeriod

KEY_PREFIX: Final = "sk-cw-"
"""Every virtual key starts with this (so secret scanners and people recognise one)."""
KEY_SECRET_BYTES: Final = 24
"""Random bytes in a key (192 bits)."""
DISPLAY_CHARS: Final = 10
"""Characters of a key kept in clear for lists (`sk-cw-AbCd…`)."""
DATA_DIR_ENV: Final = "CROSSWAY_DATA_DIR"
DEFAULT_DATA_DIR: Final = ".crossway"
DEFAULT_ACCOUNTING_DB: Final = "accounting.sqlite3"
SCHEMA_VERSION: Final = 1
"""The store layout this code writes; older layouts are migrated at open, newer refused."""
PERIODS: Final[tuple[BudgetPeriod, ...]] = ("daily", "weekly", "monthly", "total")
GROUPS: Final = ("key", "user", "team", "model", "provider", "route")
"""What spend can be grouped by."""

PrincipalKind = Literal["user", "team"]


def new_secret() -> str:
    """A fresh key: `sk-cw-` and 32 URL-safe random characters."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_SECRET_BYTES)


def new_id(prefix: str) -> str:
    """A random public id: `key_3f9a...` (never derived from the secret)."""
    return f"{prefix}_{secrets.token_hex(8)}"


def digest(secret: str) -> str:
    """How a key is stored and looked up: SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def accounting_path(configured: str | None) -> Path:
    """`configured`, or `$CROSSWAY_DATA_DIR/accounting.sqlite3` (data dir `./.crossway`)."""
    if configured:
        return Path(configured)
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR) / DEFAULT_ACCOUNTING_DB


@dataclass(slots=True, frozen=True)
class VirtualKey:
    """A virtual key as stored (without its secret)."""

    id: str
    """Public id (`key_...`): what the admin API and the CLI name a key by."""
    digest: str
    """SHA-256 hex of the secret."""
    display: str
    """The key's first characters, for lists (`sk-cw-AbCd`)."""
    name: str | None = None
    user: str | None = None
    team: str | None = None
    models: tuple[str, ...] = ()
    """Models the key may call (empty: all)."""
    mcp_tools: tuple[str, ...] = ()
    """MCP tools (federated names) the key may call (empty: all)."""
    agents: tuple[str, ...] = ()
    """A2A agents the key may call (empty: all)."""
    limits: BudgetLimits = field(default_factory=BudgetLimits)
    expires_at: float | None = None
    """Unix time after which the key is refused; None: never."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    revoked_at: float | None = None

    def public(self) -> dict[str, Any]:
        """The key as the admin API shows it (never the digest)."""
        return {
            "id": self.id,
            "key_display": self.display + "…",
            "name": self.name,
            "user": self.user,
            "team": self.team,
            "models": list(self.models),
            "mcp_tools": list(self.mcp_tools),
            "agents": list(self.agents),
            **self.limits.model_dump(),
            "expires_at": self.expires_at,
            "metadata": dict(self.metadata),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "revoked_at": self.revoked_at,
            "status": self.status(),
        }

    def status(self, now: float | None = None) -> str:
        """`active`, `expired` or `revoked`."""
        import time

        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at:
            return "expired"
        return "active"

    def with_changes(self, **changes: Any) -> VirtualKey:
        return replace(self, **changes)


@dataclass(slots=True, frozen=True)
class Principal:
    """A user or a team with its own budget and limits."""

    kind: PrincipalKind
    id: str
    limits: BudgetLimits = field(default_factory=BudgetLimits)
    metadata: Mapping[str, str] = field(default_factory=dict)
    updated_at: float = 0.0

    def public(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            **self.limits.model_dump(),
            "metadata": dict(self.metadata),
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)  # not frozen: built once per LLM call, frozen init costs 2x
class SpendRecord:
    """What one LLM call cost, and who and what it is counted against."""

    id: str
    """Random record id: the write is idempotent on it."""
    ts: float
    """Unix time of the call's end."""
    cost: float
    """USD."""
    request_id: str = ""
    trace_id: str = ""
    key_id: str | None = None
    user: str | None = None
    team: str | None = None
    model: str | None = None
    provider: str | None = None
    route: str | None = None
    api: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    periods: tuple[str, ...] = ()
    """The period names this record adds to (`period_names(ts, tz)`; the ledger's cached
    `Ledger.periods`), in the configured time zone."""

    def scopes(self) -> list[str]:
        """The budget scopes it is counted against: `key:ID`, `user:ID`, `team:ID`."""
        out = []
        if self.key_id:
            out.append(f"key:{self.key_id}")
        if self.user:
            out.append(f"user:{self.user}")
        if self.team:
            out.append(f"team:{self.team}")
        return out


def period_name(period: BudgetPeriod, when: float, zone: ZoneInfo) -> str:
    """The period `when` falls in: `d2026-12-01`, `w2026-11-30` (its Monday), `m2026-12`,
    `total`."""
    if period == "total":
        return "total"
    local = dt.datetime.fromtimestamp(when, zone)
    if period == "daily":
        return "d" + local.strftime("%Y-%m-%d")
    if period == "weekly":
        monday = local.date() - dt.timedelta(days=local.weekday())
        return "w" + monday.isoformat()
    return "m" + local.strftime("%Y-%m")


def period_names(when: float, zone: ZoneInfo) -> tuple[str, ...]:
    """`when`'s period in each kind of period."""
    return tuple(period_name(p, when, zone) for p in PERIODS)


def period_end(period: BudgetPeriod, when: float, zone: ZoneInfo) -> float | None:
    """Unix time the period containing `when` ends (None for `total`)."""
    if period == "total":
        return None
    local = dt.datetime.fromtimestamp(when, zone)
    day = dt.datetime(local.year, local.month, local.day, tzinfo=zone)
    if period == "daily":
        end = day + dt.timedelta(days=1)
    elif period == "weekly":
        end = day + dt.timedelta(days=7 - local.weekday())
    elif local.month == 12:
        end = dt.datetime(local.year + 1, 1, 1, tzinfo=zone)
    else:
        end = dt.datetime(local.year, local.month + 1, 1, tzinfo=zone)
    # Normalise across a DST change (the zone's offset at the boundary, not at `when`).
    return dt.datetime(end.year, end.month, end.day, tzinfo=zone).timestamp()


class StoreBroken(Exception):
    """The store cannot be written or read (a full disk, Redis gone); callers decide."""


class SchemaTooNew(StoreBroken):
    """The store was written by a newer Crossway than this one (its layout is unknown here):
    refused at start, never worked around."""


class AccountingStore(Protocol):
    """Keys, principals and spend (see the module docstring for the contract)."""

    async def open(self) -> None:
        """Create or migrate the layout (idempotent)."""

    async def close(self) -> None:
        """Release connections and threads."""

    # -- keys -----------------------------------------------------------------------------------

    async def put_key(self, key: VirtualKey) -> None:
        """Create or replace a key (by `id`); a digest already used by another key raises
        `ValueError`. Bumps the version."""

    async def get_key(self, key_id: str) -> VirtualKey | None:
        """The key with this id, revoked and expired ones included."""

    async def key_by_digest(self, key_digest: str) -> VirtualKey | None:
        """The key whose secret hashes to `key_digest`."""

    async def list_keys(
        self, *, user: str | None = None, team: str | None = None, include_revoked: bool = False
    ) -> list[VirtualKey]:
        """Keys, oldest first, optionally of one user or team."""

    async def version(self) -> int:
        """A number that changes whenever a key or a principal changes."""

    # -- principals -----------------------------------------------------------------------------

    async def put_principal(self, principal: Principal) -> None:
        """Create or replace a user or team (bumps the version)."""

    async def get_principal(self, kind: PrincipalKind, principal_id: str) -> Principal | None:
        """A stored user or team."""

    async def list_principals(self, kind: PrincipalKind) -> list[Principal]:
        """Stored users or teams."""

    async def delete_principal(self, kind: PrincipalKind, principal_id: str) -> bool:
        """Forget a stored user or team; whether there was one."""

    # -- spend ----------------------------------------------------------------------------------

    async def record_spend(self, records: Sequence[SpendRecord]) -> int:
        """Write records and add each to the totals of its scopes and periods, atomically; a
        record whose id was written before is skipped. Returns how many were new. Raises
        `StoreBroken` when not all of it could be written: the caller keeps the whole batch
        and writes it again later (the ids make that safe)."""

    async def period_spend(self, scopes: Sequence[tuple[str, str]]) -> list[float]:
        """USD spent per `(scope, period_name)`, e.g. `("team:research", "m2026-12")`."""

    async def spend_report(
        self,
        group_by: Sequence[str],
        start: float | None,
        end: float | None,
        filters: Mapping[str, str],
    ) -> list[dict[str, Any]]:
        """Spend between `start` and `end` (Unix times; None: unbounded) grouped by columns of
        `GROUPS`, each row `{<group>: value..., "requests", "input_tokens", "output_tokens",
        "cost"}`; `filters` keep only records whose group column equals the value."""

    async def claim_alert(self, scope: str, period: str) -> bool:
        """Whether this caller is the first to alert for this scope and period."""


def open_store(config: Any) -> AccountingStore:
    """The store `accounting.store` names (not yet opened)."""
    if config.type == "redis":
        from crossway.store.accounting_redis import RedisAccounting

        return RedisAccounting(config.url.get_secret_value(), config.prefix)
    from crossway.store.accounting_sqlite import SqliteAccounting

    return SqliteAccounting(accounting_path(config.path))
