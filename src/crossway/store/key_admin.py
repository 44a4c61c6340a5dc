"""Managing virtual keys, teams and users: the operations the admin API (`/keys`, `/teams`,
`/users`) and the `crossway keys|teams|users` CLI share, with one set of validation rules.

Every value that arrives from outside (a JSON body, a command-line flag) is checked here, before
anything is written: budgets and limits by the same `BudgetLimits` model the config uses,
durations (`30d`, `12h`, `15m`, `90s`, `2w` or plain seconds; zero or negative refused), names
and metadata by size and character. A problem raises `BadRequest` naming the field; an unknown
key, user or team raises `NotFound`; changing a revoked key raises `UnprocessableEntity`
(revocation is final).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from pydantic import ValidationError

from crossway.config.accounting import BudgetLimits
from crossway.errors import BadRequest, NotFound, UnprocessableEntity
from crossway.store.accounting import (
    DISPLAY_CHARS,
    AccountingStore,
    Principal,
    PrincipalKind,
    VirtualKey,
    digest,
    new_id,
    new_secret,
)

MAX_NAME_CHARS: Final = 256
"""Longest key name, user id, team id, model, tool or agent name."""
MAX_SCOPE_ENTRIES: Final = 1000
"""Most models (or tools, or agents) one key may be scoped to."""
MAX_METADATA_PAIRS: Final = 64
MAX_METADATA_KEY_CHARS: Final = 128
MAX_METADATA_VALUE_CHARS: Final = 1024
MAX_EXPIRY_SECONDS: Final = 100 * 365 * 86400.0
"""Longest `expires_in` accepted (a century; more is a typo)."""
LIMIT_FIELDS: Final = ("max_budget", "budget_period", "rpm", "tpm")
"""The `BudgetLimits` fields a key, a user or a team carries."""
KEY_FIELDS: Final = (
    "name",
    "user",
    "team",
    "models",
    "mcp_tools",
    "agents",
    *LIMIT_FIELDS,
    "expires_in",
    "expires_at",
    "metadata",
)
"""What a key's create or update may set (`expires_in` and `expires_at` are alternatives)."""
PRINCIPAL_FIELDS: Final = (*LIMIT_FIELDS, "metadata")
"""What a user's or a team's `PUT` may set."""

_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
# An id is printed in tables and used in URL paths and metric labels: no whitespace, no control
# characters, no `/`.
_ID: Final = re.compile(r"^[^\s/\x00-\x1f\x7f]+$")


def parse_duration(value: Any, field: str = "expires_in") -> float:
    """Seconds from `30d`, `12h`, `15m`, `90s`, `2w` or a plain number of seconds."""
    if isinstance(value, bool):
        raise BadRequest(f"{field}: expected a duration such as 30d, 12h or 3600", param=field)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise BadRequest(
            f"{field}: expected a duration such as 30d, 2w, 12h, 15m, 90s or a number of seconds",
            param=field,
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadRequest(f"{field}: must be longer than zero", param=field)
    if seconds > MAX_EXPIRY_SECONDS:
        raise BadRequest(f"{field}: longer than 100 years", param=field)
    return seconds


def parse_metadata_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """`["k=v", ...]` (the CLI's repeated `--metadata`) as a map."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadRequest(f"metadata: expected key=value, got {pair!r}", param="metadata")
        out[key.strip()] = value
    return check_metadata(out)


def check_metadata(value: Any) -> dict[str, str]:
    """A metadata map: string keys and values, bounded in count and size."""
    if not isinstance(value, Mapping):
        raise BadRequest("metadata: expected an object of strings", param="metadata")
    if len(value) > MAX_METADATA_PAIRS:
        raise BadRequest(f"metadata: more than {MAX_METADATA_PAIRS} entries", param="metadata")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise BadRequest("metadata: keys and values must be strings", param="metadata")
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise BadRequest(
                f"metadata: keys must have 1 to {MAX_METADATA_KEY_CHARS} characters",
                param="metadata",
            )
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise BadRequest(
                f"metadata: value of {key!r} is longer than {MAX_METADATA_VALUE_CHARS} characters",
                param="metadata",
            )
        out[key] = item
    return out


def check_id(value: Any, field: str) -> str:
    """A user, team or key id: 1-256 characters, no whitespace, control characters or `/`."""
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{field}: expected a non-empty string", param=field)
    if len(value) > MAX_NAME_CHARS or not _ID.match(value):
        raise BadRequest(
            f"{field}: at most {MAX_NAME_CHARS} characters, without spaces, control "
            "characters or '/'",
            param=field,
        )
    return value


def check_name(value: Any, field: str = "name") -> str | None:
    """A key's free-form name (None clears it)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise BadRequest(f"{field}: expected a string of at most {MAX_NAME_CHARS} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise BadRequest(f"{field}: control characters are not allowed", param=field)
    return value or None


def check_scope(value: Any, field: str) -> tuple[str, ...]:
    """Models, MCP tools or A2A agents: a list of names or a comma-separated string; None or
    empty: no restriction."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise BadRequest(f"{field}: expected a list of names", param=field)
    if len(items) > MAX_SCOPE_ENTRIES:
        raise BadRequest(f"{field}: more than {MAX_SCOPE_ENTRIES} entries", param=field)
    names = [check_id(item, field) for item in items]
    return tuple(dict.fromkeys(names))


def check_limits(values: Mapping[str, Any], base: BudgetLimits | None = None) -> BudgetLimits:
    """`base` with `values` (a subset of `LIMIT_FIELDS`; None clears one) applied, checked by
    the config's own `BudgetLimits` rules (no negative or absurd budget, known period)."""
    merged = (base or BudgetLimits()).model_dump()
    for field, value in values.items():
        if field not in LIMIT_FIELDS:
            raise BadRequest(f"unknown field {field!r}", param=field)
        if isinstance(value, bool):
            raise BadRequest(f"{field}: expected a number", param=field)
        if value is None:
            value = BudgetLimits.model_fields[field].default
        merged[field] = value
    try:
        return BudgetLimits.model_validate(merged, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "limits"
        raise BadRequest(f"{field}: {_explain(first)}", param=field) from None


def _explain(error: Any) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return (
            f"must be at most {ctx.get('le'):g}"
            if isinstance(ctx.get("le"), float)
            else (f"must be at most {ctx.get('le')}")
        )
    if kind == "literal_error":
        return "must be one of daily, weekly, monthly, total"
    return str(error.get("msg", "invalid"))


def check_fields(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse a field nobody knows (a typo must not be silently ignored)."""
    known = set(allowed)
    for field in body:
        if field not in known:
            raise BadRequest(
                f"unknown field {field!r} (known: {', '.join(sorted(known))})", param=str(field)
            )


def _expiry(changes: Mapping[str, Any], now: float) -> tuple[bool, float | None]:
    """Whether the changes touch the expiry, and the new `expires_at`."""
    if "expires_in" in changes and "expires_at" in changes:
        raise BadRequest("give expires_in or expires_at, not both", param="expires_at")
    if "expires_in" in changes:
        value = changes["expires_in"]
        return True, None if value is None else now + parse_duration(value)
    if "expires_at" in changes:
        value = changes["expires_at"]
        if value is None:
            return True, None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest("expires_at: expected Unix seconds", param="expires_at")
        if not math.isfinite(value) or value <= now:
            raise BadRequest("expires_at: must be in the future", param="expires_at")
        if value > now + MAX_EXPIRY_SECONDS:
            raise BadRequest("expires_at: more than 100 years ahead", param="expires_at")
        return True, float(value)
    return False, None


def key_changes(
    changes: Mapping[str, Any], base: VirtualKey | None = None, now: float | None = None
) -> dict[str, Any]:
    """Checked `VirtualKey` field values from `changes` (keys of `KEY_FIELDS`, None clears a
    field), merged over `base`'s limits; raises `BadRequest` naming the first bad field."""
    now = time.time() if now is None else now
    check_fields(changes, KEY_FIELDS)
    out: dict[str, Any] = {}
    if "name" in changes:
        out["name"] = check_name(changes["name"])
    for field in ("user", "team"):
        if field in changes:
            value = changes[field]
            out[field] = None if value in (None, "") else check_id(value, field)
    for field in ("models", "mcp_tools", "agents"):
        if field in changes:
            out[field] = check_scope(changes[field], field)
    limits = {f: changes[f] for f in LIMIT_FIELDS if f in changes}
    if limits or base is None:
        out["limits"] = check_limits(limits, base.limits if base is not None else None)
    touched, expires_at = _expiry(changes, now)
    if touched:
        out["expires_at"] = expires_at
    if "metadata" in changes:
        value = changes["metadata"]
        out["metadata"] = {} if value is None else check_metadata(value)
    return out


def check_principal(fields: Mapping[str, Any]) -> None:
    """Check a user's or a team's fields (`PRINCIPAL_FIELDS`) as `set_principal` does."""
    check_fields(fields, PRINCIPAL_FIELDS)
    check_limits({f: fields[f] for f in LIMIT_FIELDS if f in fields})
    if fields.get("metadata") is not None:
        check_metadata(fields["metadata"])


async def create_key(
    store: AccountingStore,
    *,
    name: str | None = None,
    user: str | None = None,
    team: str | None = None,
    models: Iterable[str] | str | None = None,
    mcp_tools: Iterable[str] | str | None = None,
    agents: Iterable[str] | str | None = None,
    max_budget: float | None = None,
    budget_period: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    expires_in: float | str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[str, VirtualKey]:
    """A new key: its secret (shown once, never stored) and the stored record (its digest)."""
    fields: dict[str, Any] = {
        "name": name,
        "user": user,
        "team": team,
        "models": _listed(models),
        "mcp_tools": _listed(mcp_tools),
        "agents": _listed(agents),
        "max_budget": max_budget,
        "budget_period": budget_period,
        "rpm": rpm,
        "tpm": tpm,
        "metadata": metadata,
    }
    if expires_in is not None:
        fields["expires_in"] = expires_in
    return await create_key_from(store, fields)


async def create_key_from(
    store: AccountingStore, fields: Mapping[str, Any]
) -> tuple[str, VirtualKey]:
    """`create_key` from a JSON-shaped map (the admin API's body)."""
    now = time.time()
    values = key_changes(fields, None, now)
    secret = new_secret()
    key = VirtualKey(
        id=new_id("key"),
        digest=digest(secret),
        display=secret[:DISPLAY_CHARS],
        created_at=now,
        updated_at=now,
        **values,
    )
    await store.put_key(key)
    return secret, key


def _listed(value: Iterable[str] | str | None) -> list[str] | str | None:
    if value is None or isinstance(value, str):
        return value
    return list(value)


async def get_key(store: AccountingStore, key_id: str) -> VirtualKey:
    """The key with this id (revoked and expired ones too), else `NotFound`."""
    key = await store.get_key(key_id)
    if key is None:
        raise NotFound(f"no virtual key {key_id!r}", code="key_not_found")
    return key


async def _live_key(store: AccountingStore, key_id: str, doing: str) -> VirtualKey:
    key = await get_key(store, key_id)
    if key.revoked_at is not None:
        raise UnprocessableEntity(
            f"virtual key {key_id!r} is revoked and cannot be {doing} (revocation is final: "
            "create a new key)",
            code="key_revoked",
        )
    return key


async def update_key(store: AccountingStore, key_id: str, **changes: Any) -> VirtualKey:
    """Change any settable field (`KEY_FIELDS`; None clears one); the secret stays."""
    key = await _live_key(store, key_id, "updated")
    now = time.time()
    values = key_changes(changes, key, now)
    updated = key.with_changes(**values, updated_at=now)
    await store.put_key(updated)
    return updated


async def rotate_key(store: AccountingStore, key_id: str) -> tuple[str, VirtualKey]:
    """A new secret for the same key (id, settings and spend kept); the old one stops
    working."""
    key = await _live_key(store, key_id, "rotated")
    secret = new_secret()
    rotated = key.with_changes(
        digest=digest(secret), display=secret[:DISPLAY_CHARS], updated_at=time.time()
    )
    await store.put_key(rotated)
    return secret, rotated


async def revoke_key(store: AccountingStore, key_id: str) -> VirtualKey:
    """Revoke a key for good (revoking it again changes nothing)."""
    key = await get_key(store, key_id)
    if key.revoked_at is not None:
        return key
    now = time.time()
    revoked = key.with_changes(revoked_at=now, updated_at=now)
    await store.put_key(revoked)
    return revoked


async def get_principal(
    store: AccountingStore, kind: PrincipalKind, principal_id: str
) -> Principal:
    """A stored user or team, else `NotFound`."""
    found = await store.get_principal(kind, principal_id)
    if found is None:
        raise NotFound(f"no {kind} {principal_id!r} in the store", code=f"{kind}_not_found")
    return found


async def set_principal(
    store: AccountingStore,
    kind: PrincipalKind,
    principal_id: str,
    fields: Mapping[str, Any],
    *,
    merge: bool = False,
) -> Principal:
    """Store a user's or a team's budget, limits and metadata (`PRINCIPAL_FIELDS`). Without
    `merge` the fields replace what was stored (a missing one is unset); with it they change
    only what they name (None clears one)."""
    check_id(principal_id, kind)
    check_fields(fields, PRINCIPAL_FIELDS)
    old = await store.get_principal(kind, principal_id) if merge else None
    limits = check_limits(
        {f: fields[f] for f in LIMIT_FIELDS if f in fields}, old.limits if old else None
    )
    if "metadata" in fields:
        metadata = {} if fields["metadata"] is None else check_metadata(fields["metadata"])
    else:
        metadata = dict(old.metadata) if old else {}
    principal = Principal(
        kind=kind, id=principal_id, limits=limits, metadata=metadata, updated_at=time.time()
    )
    await store.put_principal(principal)
    return principal


async def delete_principal(store: AccountingStore, kind: PrincipalKind, principal_id: str) -> None:
    """Forget a stored user or team (a key naming it keeps only its own limits), else
    `NotFound`."""
    if not await store.delete_principal(kind, principal_id):
        raise NotFound(f"no {kind} {principal_id!r} in the store", code=f"{kind}_not_found")


__all__ = [
    "KEY_FIELDS",
    "PRINCIPAL_FIELDS",
    "check_fields",
    "check_id",
    "check_limits",
    "check_metadata",
    "check_principal",
    "create_key",
    "create_key_from",
    "delete_principal",
    "get_key",
    "get_principal",
    "key_changes",
    "parse_duration",
    "parse_metadata_pairs",
    "revoke_key",
    "rotate_key",
    "set_principal",
    "update_key",
]
