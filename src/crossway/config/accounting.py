"""Config of traffic and money: the accounting store (virtual keys, spend, budgets), the
`virtual_key` and `rate_limit` policies, teams and users with their own budgets and limits.

```yaml
accounting:                       # optional; these are the defaults
  store: {type: sqlite}           # $CROSSWAY_DATA_DIR/accounting.sqlite3
  # store: {type: redis, url: "${REDIS_URL}"}    # several replicas
  flush_interval: 1.0             # spend is written in batches this often (and on shutdown)
  refresh_interval: 1.0           # budget totals are re-read at most this often
  timezone: UTC                   # where daily/weekly/monthly periods begin
  teams:
    research: {max_budget: 100, budget_period: monthly, rpm: 600}

routes:
  - name: llm
    policies:
      - {type: virtual_key}
      - type: rate_limit
        limits:
          - {key: team, requests: 600, window: 60, mode: global}
          - {key: user, tokens: 100000, window: 60}
```
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from crossway.config.base import StrictModel
from crossway.config.common import HttpUrl

BudgetPeriod = Literal["daily", "weekly", "monthly", "total"]
StoreErrorMode = Literal["allow", "deny"]

DEFAULT_FLUSH_INTERVAL: Final = 1.0
DEFAULT_REFRESH_INTERVAL: Final = 1.0
DEFAULT_KEY_POLL_INTERVAL: Final = 0.5
DEFAULT_SPEND_QUEUE: Final = 100_000
DEFAULT_ALERT_FRACTION: Final = 0.8
MAX_BUDGET_USD: Final = 1e9
"""Largest budget accepted (a typo of a few more zeros is refused, not obeyed)."""
MAX_RATE: Final = 1_000_000_000
"""Largest request or token count accepted in a limit."""
MAX_WINDOW_SECONDS: Final = 31 * 86400.0
DEFAULT_STORE_TIMEOUT: Final = 0.25
"""How long a rate-limit check may wait for Redis before `on_store_error` decides."""

_ATTRIBUTE: Final = re.compile(
    r"^(key|user|team|model|route|mcp\.tool|a2a\.agent|source_ip|jwt\.[A-Za-z0-9_.:-]+)$"
)


class BudgetLimits(StrictModel):
    """A budget and rate limits (of a key, a user or a team)."""

    max_budget: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD)
    """USD that may be spent per `budget_period`; unset: no budget."""
    budget_period: BudgetPeriod = "total"
    """`daily`, `weekly` (from Monday), `monthly` or `total`, in `accounting.timezone`."""
    rpm: int | None = Field(default=None, ge=1, le=MAX_RATE)
    """Requests per minute; unset: no limit."""
    tpm: int | None = Field(default=None, ge=1, le=MAX_RATE)
    """LLM tokens (input + output) per minute; unset: no limit."""


class SqliteAccountingStore(StrictModel):
    """One SQLite file (WAL): enough for one machine, shared by its worker processes."""

    type: Literal["sqlite"] = "sqlite"
    """Store kind."""
    path: str | None = None
    """File path. Unset: `$CROSSWAY_DATA_DIR/accounting.sqlite3` (`./.crossway`)."""


class RedisAccountingStore(StrictModel):
    """Redis, shared by every replica that names the same server."""

    type: Literal["redis"]
    """Store kind."""
    url: SecretStr
    """`redis://[:password@]host:port/db` (or `rediss://`); use `${VAR}`."""
    prefix: str = "crossway:"
    """Prefix of every Redis key Crossway writes (several gateways may share one Redis)."""

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        return value


AccountingStoreConfig = Annotated[
    SqliteAccountingStore | RedisAccountingStore, Field(discriminator="type")
]


class AlertConfig(StrictModel):
    """Soft-budget alerts: a log line (always) and a webhook (optional) when a budget's spend
    crosses `fraction` of it, once per budget and period."""

    fraction: float = Field(default=DEFAULT_ALERT_FRACTION, gt=0, le=1)
    """Share of the budget at which the alert fires."""
    webhook: HttpUrl | None = None
    """URL that gets a JSON POST `{"event": "budget_alert", ...}`."""


class AccountingConfig(StrictModel):
    """Where keys, spend and budgets live, and how often they are written and read."""

    store: AccountingStoreConfig = Field(default_factory=SqliteAccountingStore)
    """`sqlite` (embedded, default) or `redis` (several replicas)."""
    flush_interval: float = Field(default=DEFAULT_FLUSH_INTERVAL, gt=0, le=60)
    """Seconds between spend writes; a crash loses at most this much acknowledged spend."""
    refresh_interval: float = Field(default=DEFAULT_REFRESH_INTERVAL, gt=0, le=300)
    """Budget totals are re-read from the store at most this often per budget."""
    key_poll_interval: float = Field(default=DEFAULT_KEY_POLL_INTERVAL, gt=0, le=10)
    """How often each process checks the store for created, changed or revoked keys."""
    spend_queue_size: int = Field(default=DEFAULT_SPEND_QUEUE, ge=100, le=10_000_000)
    """Spend records held before they are written; when it is full (the store is failing),
    new LLM calls get 503 instead of going unrecorded."""
    timezone: str = "UTC"
    """IANA time zone where daily, weekly and monthly budget periods begin."""
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    """Soft-budget alerts."""
    teams: dict[str, BudgetLimits] = Field(default_factory=dict)
    """Team budgets and limits by team name (the admin API can add and override them)."""
    users: dict[str, BudgetLimits] = Field(default_factory=dict)
    """User budgets and limits by user id."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name: UTC, Europe/Paris)"
            ) from None
        return value


class VirtualKeyConfig(StrictModel):
    """Authenticate with a virtual key (`crossway keys create`): `Authorization: Bearer` or
    `x-api-key`. Enforces the key's scopes (models, MCP tools, A2A agents), the budgets and
    limits of the key, its user and its team, and records every LLM call's spend."""

    type: Literal["virtual_key"]
    """Policy kind."""
    mode: Literal["strict", "optional", "permissive"] = "strict"
    """`strict`: a valid key is required; `optional`: none is fine, an invalid one is refused;
    `permissive`: an invalid key is ignored."""
    record_spend: bool = True
    """Record spend of every LLM call on this route (also of calls without a key)."""
    on_store_error: StoreErrorMode = "allow"
    """When Redis cannot be reached for a key's, user's or team's `rpm`/`tpm`: `allow` the
    request (fail open) or `deny` it with 503 (fail closed). Budgets are checked against the
    totals last read either way; a budget never read yet fails closed (503)."""


class LimitConfig(StrictModel):
    """One rate limit: `requests` or `tokens` per `window` seconds, counted per value of
    `key`."""

    name: str | None = None
    """Name in errors and metrics; default `{key}:{requests|tokens}`."""
    key: str = "key"
    """What is counted separately: `key`, `user`, `team`, `model`, `route`, `mcp.tool`,
    `a2a.agent`, `source_ip` or `jwt.<claim>`. A request without the attribute is not
    limited by this limit."""
    requests: int | None = Field(default=None, ge=1, le=MAX_RATE)
    """Requests allowed per window."""
    tokens: int | None = Field(default=None, ge=1, le=MAX_RATE)
    """LLM tokens allowed per window (reserved before the call, settled after)."""
    token_kind: Literal["total", "input", "output"] = "total"
    """Which tokens `tokens` counts."""
    window: float = Field(default=60.0, ge=1, le=MAX_WINDOW_SECONDS)
    """Window length in seconds."""
    mode: Literal["local", "global"] = "local"
    """`local`: a token bucket in this process; `global`: a counter in
    `accounting.store` (Redis) shared by every replica."""

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not _ATTRIBUTE.match(value):
            raise ValueError(
                f"unknown limit key {value!r}: use key, user, team, model, route, mcp.tool, "
                "a2a.agent, source_ip or jwt.<claim>"
            )
        return value

    @model_validator(mode="after")
    def _one_measure(self) -> LimitConfig:
        if (self.requests is None) == (self.tokens is None):
            raise ValueError("a limit counts either `requests` or `tokens` (exactly one)")
        return self


class RateLimitConfig(StrictModel):
    """Rate limits by requests and LLM tokens, several per route."""

    type: Literal["rate_limit"]
    """Policy kind."""
    limits: list[LimitConfig] = Field(min_length=1)
    """The limits; a request must pass every one."""
    on_store_error: StoreErrorMode = "allow"
    """When the shared store (Redis) cannot be reached for a `global` limit: `allow` the
    request (fail open) or `deny` it with 503 (fail closed)."""
    store_timeout: float = Field(default=DEFAULT_STORE_TIMEOUT, gt=0, le=5)
    """Seconds a global check may wait for the store."""
