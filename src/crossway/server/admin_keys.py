"""The admin API for virtual keys, teams, users, budgets and spend.

    POST   /keys                     create a key: 201 {"key": "<secret, shown once>", ...}
    GET    /keys                     keys, oldest first (?user=, ?team=, ?include_revoked=true;
                                     ?with_spend=true adds each key's `budget`)
    GET    /keys/{id}                one key (never its secret or digest)
    PATCH  /keys/{id}                change any settable field (null clears it)
    POST   /keys/{id}/rotate         a new secret for the same key: {"key": "<new secret>", ...}
    POST   /keys/{id}/revoke         revoke for good (DELETE /keys/{id} does the same)
    GET    /teams, /users            stored ones and those of `accounting.teams/users`
                                     (?with_spend=true adds each one's `budget`)
    GET    /teams/{id}, /users/{id}  one (the store's, else the config's)
    PUT    /teams/{id}, /users/{id}  store its budget, limits and metadata (replaces them)
    DELETE /teams/{id}, /users/{id}  forget the stored one
    GET    /spend                    ?group_by=key,model&start=&end=&key=&user=&team=&model=
                                     (&interval=1h: one row per group and time bucket)
    GET    /budgets/{kind}/{id}      the current period's spend against the budget

Keys, budgets and spend are sensitive, so every route (reads too) needs `admin.token` as a
Bearer token when one is set; without one they are served only on a loopback admin listener
and never to a browser (a request with an `Origin` header). Bodies are JSON objects of at most
`MAX_BODY` bytes; an unknown field is refused by name. Errors are `{"error": {"message",
"type", "param", "code"}}` with the matching status.

The routes keep one opened store per `accounting.store` config (reopened when the config names
another store, closed when the admin app shuts down).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, cast
from zoneinfo import ZoneInfo

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crossway.config import Config
from crossway.config.accounting import AccountingStoreConfig, BudgetLimits
from crossway.errors import (
    BadRequest,
    GatewayError,
    InvalidJSON,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from crossway.server.admin_auth import _check_change_allowed
from crossway.server.admin_pins import _error
from crossway.store import key_admin
from crossway.store.accounting import (
    GROUPS,
    AccountingStore,
    Principal,
    PrincipalKind,
    StoreBroken,
    open_store,
    period_end,
    period_name,
)

log = logging.getLogger(__name__)

MAX_BODY: Final = 64 * 1024
"""Largest JSON body a key, team or user route reads."""
DEFAULT_GROUP_BY: Final = ("key",)
MAX_BUCKETS: Final = 400
"""Most time buckets one `GET /spend?interval=` answers."""
DEFAULT_BUCKETS: Final = 24
"""Buckets `GET /spend?interval=` covers when `start` is not given."""
MIN_INTERVAL_SECONDS: Final = 60.0
"""Shortest `GET /spend?interval=` bucket."""
"""What `GET /spend` groups by without `group_by`."""
SPEND_FILTERS: Final = GROUPS
"""Query parameters of `GET /spend` that keep only matching records."""
ROUTE_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
"""Methods the routes accept (and answer 405 in JSON for the ones a path does not serve)."""
ACTION: Final = "manage virtual keys, budgets or spend"
"""Completes the refusal messages: "set admin.token to <ACTION>"."""

_PRINCIPAL_PATHS: Final[tuple[tuple[PrincipalKind, str], ...]] = (
    ("team", "/teams"),
    ("user", "/users"),
)

ConfigSource = Any
"""Anything with `current() -> Config` (the admin plane's `ConfigView`)."""
Handler = Callable[[Request, Config, AccountingStore], Awaitable[Response]]


class KeyStores:
    """The admin plane's opened accounting store, one per `accounting.store` config."""

    def __init__(self) -> None:
        self._config: AccountingStoreConfig | None = None
        self._store: AccountingStore | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self, config: AccountingStoreConfig) -> AccountingStore:
        """The opened store `config` names (the previous one is closed if it named another)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._store is not None and self._config == config:
                return self._store
            await self._close_current()
            store = open_store(config)
            try:
                await store.open()
            except (StoreBroken, OSError) as exc:
                await _quietly_close(store)
                raise ServiceUnavailable(f"the accounting store cannot be opened: {exc}") from None
            self._config, self._store = config, store
            return store

    async def aclose(self) -> None:
        """Close the opened store (at the admin app's shutdown)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self._close_current()

    async def _close_current(self) -> None:
        store, self._store, self._config = self._store, None, None
        if store is not None:
            await _quietly_close(store)

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """A Starlette lifespan that closes the store when the app stops."""
        try:
            yield
        finally:
            await self.aclose()


async def _quietly_close(store: AccountingStore) -> None:
    try:
        await store.close()
    except Exception:  # closing must not hide the reason it was closed
        log.warning("closing the accounting store failed", exc_info=True)


def key_routes(view: ConfigSource, stores: KeyStores | None = None) -> list[Route]:
    """The admin plane's `/keys`, `/teams`, `/users`, `/spend` and `/budgets` routes, reading
    the config from `view.current()`; `stores` holds the opened store (pass the same one to
    the app's lifespan to close it at shutdown)."""
    holder = stores if stores is not None else KeyStores()

    def route(path: str, handlers: Mapping[str, Handler]) -> Route:
        allowed = ", ".join(sorted(handlers))

        async def endpoint(request: Request) -> Response:
            try:
                cfg: Config = await asyncio.to_thread(view.current)
                _check_change_allowed(request, cfg.admin, ACTION)
                method = "GET" if request.method == "HEAD" else request.method
                handler = handlers.get(method)
                if handler is None:
                    raise MethodNotAllowed(
                        f"{request.method} is not allowed here (use {allowed})",
                        headers={"allow": allowed},
                    )
                store = await holder.get(cfg.accounting.store)
                return await handler(request, cfg, store)
            except GatewayError as exc:
                return _error(exc)
            except StoreBroken as exc:
                return _error(ServiceUnavailable(f"the accounting store is failing: {exc}"))
            except Exception:
                log.exception("admin %s %s failed", request.method, request.url.path)
                return _error(GatewayError("internal error (see the gateway's log)"))

        # Every method reaches the endpoint, so a wrong one gets a JSON 405 after the checks.
        return Route(path, endpoint, methods=list(ROUTE_METHODS))

    table: dict[str, dict[str, Handler]] = {
        "/keys": {"POST": _create_key, "GET": _list_keys},
        "/keys/{key_id}": {"GET": _show_key, "PATCH": _update_key, "DELETE": _revoke_key},
        "/keys/{key_id}/rotate": {"POST": _rotate_key},
        "/keys/{key_id}/revoke": {"POST": _revoke_key},
        "/spend": {"GET": _spend},
        "/budgets/{kind}/{principal_id}": {"GET": _budget},
    }
    for kind, plural in _PRINCIPAL_PATHS:
        for path, method, handler in _principal_table(kind, plural):
            table.setdefault(path, {})[method] = handler
    return [route(path, handlers) for path, handlers in table.items()]


# -- keys ---------------------------------------------------------------------------------------

RELOAD_TIMEOUT_SECONDS: Final = 2.0


async def _changed() -> None:
    """A change takes effect in this process's gateway now, not at its next poll (with one
    worker the gateway shares the admin plane's process and loop; other processes and replicas
    notice within `accounting.key_poll_interval`)."""
    from crossway.policy.ledger import ledgers

    for ledger in ledgers():
        try:
            await asyncio.wait_for(ledger.reload(), RELOAD_TIMEOUT_SECONDS)
        except Exception as exc:  # the poller will retry; the change is stored
            log.warning("accounting: reloading keys after an admin change failed: %s", exc)


async def _create_key(request: Request, cfg: Config, store: AccountingStore) -> Response:
    _query(request, ())
    body = await _body(request)
    secret, key = await key_admin.create_key_from(store, body)
    await _changed()
    return _json({"key": secret, **key.public()}, status=201)


async def _list_keys(request: Request, cfg: Config, store: AccountingStore) -> Response:
    query = _query(request, ("user", "team", "include_revoked", "with_spend"))
    keys = await store.list_keys(
        user=query.get("user") or None,
        team=query.get("team") or None,
        include_revoked=_flag(query, "include_revoked"),
    )
    rows = [key.public() for key in keys]
    if _flag(query, "with_spend"):
        budgets = await budget_statuses(store, cfg, [("key", k.id, k.limits) for k in keys])
        for row, budget in zip(rows, budgets, strict=True):
            row["budget"] = budget
    return _json({"keys": rows})


async def _show_key(request: Request, cfg: Config, store: AccountingStore) -> Response:
    _query(request, ())
    key = await key_admin.get_key(store, request.path_params["key_id"])
    return _json(key.public())


async def _update_key(request: Request, cfg: Config, store: AccountingStore) -> Response:
    _query(request, ())
    body = await _body(request)
    key = await key_admin.update_key(store, request.path_params["key_id"], **body)
    await _changed()
    return _json(key.public())


async def _rotate_key(request: Request, cfg: Config, store: AccountingStore) -> Response:
    _query(request, ())
    secret, key = await key_admin.rotate_key(store, request.path_params["key_id"])
    await _changed()
    return _json({"key": secret, **key.public()})


async def _revoke_key(request: Request, cfg: Config, store: AccountingStore) -> Response:
    _query(request, ())
    key = await key_admin.revoke_key(store, request.path_params["key_id"])
    await _changed()
    return _json(key.public())


# -- teams and users ----------------------------------------------------------------------------


def configured(cfg: Config, kind: PrincipalKind) -> Mapping[str, BudgetLimits]:
    """The users or teams `accounting.users/teams` defines."""
    return cfg.accounting.teams if kind == "team" else cfg.accounting.users


async def principal_limits(
    store: AccountingStore, cfg: Config, kind: PrincipalKind, principal_id: str
) -> tuple[Principal | None, str]:
    """A user's or team's record (the store's, else the config's) and where it came from
    (`store`, `config`, or `none` with no record)."""
    stored = await store.get_principal(kind, principal_id)
    if stored is not None:
        return stored, "store"
    limits = configured(cfg, kind).get(principal_id)
    if limits is not None:
        return Principal(kind=kind, id=principal_id, limits=limits), "config"
    return None, "none"


def _principal_table(kind: PrincipalKind, path: str) -> list[tuple[str, str, Handler]]:
    """`(path, method, handler)` of a user's or a team's routes."""
    plural = kind + "s"

    async def list_all(request: Request, cfg: Config, store: AccountingStore) -> Response:
        query = _query(request, ("with_spend",))
        stored = {p.id: p for p in await store.list_principals(kind)}
        principals = [(p, "store") for p in stored.values()]
        for name, limits in configured(cfg, kind).items():
            if name not in stored:
                principals.append((Principal(kind=kind, id=name, limits=limits), "config"))
        rows = [{**p.public(), "source": source} for p, source in principals]
        if _flag(query, "with_spend"):
            wanted = [(kind, p.id, p.limits) for p, _ in principals]
            for row, budget in zip(rows, await budget_statuses(store, cfg, wanted), strict=True):
                row["budget"] = budget
        return _json({plural: rows})

    async def show(request: Request, cfg: Config, store: AccountingStore) -> Response:
        _query(request, ())
        principal_id = request.path_params["principal_id"]
        found, source = await principal_limits(store, cfg, kind, principal_id)
        if found is None:
            raise NotFound(f"no {kind} {principal_id!r}", code=f"{kind}_not_found")
        return _json({**found.public(), "source": source})

    async def put(request: Request, cfg: Config, store: AccountingStore) -> Response:
        _query(request, ())
        body = await _body(request)
        principal_id = request.path_params["principal_id"]
        principal = await key_admin.set_principal(store, kind, principal_id, body)
        await _changed()
        return _json({**principal.public(), "source": "store"})

    async def delete(request: Request, cfg: Config, store: AccountingStore) -> Response:
        _query(request, ())
        principal_id = request.path_params["principal_id"]
        if await store.get_principal(kind, principal_id) is None and principal_id in configured(
            cfg, kind
        ):
            raise NotFound(
                f"{kind} {principal_id!r} is defined in the config (accounting.{plural}), not "
                "in the store: change it there",
                code=f"{kind}_not_found",
            )
        await key_admin.delete_principal(store, kind, principal_id)
        await _changed()
        return _json({"kind": kind, "id": principal_id, "deleted": True})

    return [
        (path, "GET", list_all),
        (path + "/{principal_id}", "GET", show),
        (path + "/{principal_id}", "PUT", put),
        (path + "/{principal_id}", "DELETE", delete),
    ]


# -- spend and budgets --------------------------------------------------------------------------


async def _spend(request: Request, cfg: Config, store: AccountingStore) -> Response:
    query = _query(request, ("group_by", "start", "end", "interval", *SPEND_FILTERS))
    zone = ZoneInfo(cfg.accounting.timezone)
    if "group_by" in query:
        group_by = [g.strip() for g in query["group_by"].split(",") if g.strip()]
    else:
        group_by = list(DEFAULT_GROUP_BY)
    for group in group_by:
        if group not in GROUPS:
            raise BadRequest(
                f"group_by: unknown group {group!r} (use {', '.join(GROUPS)})", param="group_by"
            )
    start = parse_time(query.get("start"), "start", zone)
    end = parse_time(query.get("end"), "end", zone)
    if start is not None and end is not None and end <= start:
        raise BadRequest("end: must be after start", param="end")
    filters = {name: query[name] for name in SPEND_FILTERS if query.get(name)}
    interval = _interval(query.get("interval"))
    if interval is None:
        rows = await store.spend_report(group_by, start, end, filters)
    else:
        end = time.time() if end is None else end
        start = end - DEFAULT_BUCKETS * interval if start is None else start
        if (end - start) / interval > MAX_BUCKETS:
            raise BadRequest(
                f"interval: more than {MAX_BUCKETS} buckets between start and end "
                "(use a longer interval or a shorter range)",
                param="interval",
            )
        rows = await _spend_buckets(store, group_by, start, end, interval, filters)
    return _json(
        {
            "group_by": group_by,
            "start": start,
            "end": end,
            **({"interval": interval} if interval is not None else {}),
            "filters": filters,
            "rows": rows,
            "total_cost": sum(float(row.get("cost", 0.0)) for row in rows),
            "total_requests": sum(int(row.get("requests", 0)) for row in rows),
        }
    )


def _interval(value: str | None) -> float | None:
    """`GET /spend`'s bucket length: a duration (`1h`, `1d`, `15m`) or seconds, at least 60."""
    if value is None or value == "":
        return None
    seconds = key_admin.parse_duration(value, "interval")
    if seconds < MIN_INTERVAL_SECONDS:
        raise BadRequest(f"interval: at least {MIN_INTERVAL_SECONDS:g} seconds", param="interval")
    return seconds


async def _spend_buckets(
    store: AccountingStore,
    group_by: list[str],
    start: float,
    end: float,
    interval: float,
    filters: Mapping[str, str],
) -> list[dict[str, Any]]:
    """Spend per bucket of `interval` seconds from `start` (each row with its bucket's `start`),
    oldest first; empty buckets are left out."""
    rows: list[dict[str, Any]] = []
    at = start
    while at < end:
        upper = min(at + interval, end)
        for row in await store.spend_report(group_by, at, upper, filters):
            rows.append({"start": at, **row})
        at = upper
    return rows


async def _budget(request: Request, cfg: Config, store: AccountingStore) -> Response:
    _query(request, ())
    kind, principal_id = request.path_params["kind"], request.path_params["principal_id"]
    if kind == "key":
        limits = (await key_admin.get_key(store, principal_id)).limits
    elif kind in ("user", "team"):
        found, _ = await principal_limits(store, cfg, cast(PrincipalKind, kind), principal_id)
        limits = found.limits if found is not None else BudgetLimits()
    else:
        raise NotFound(f"no budget kind {kind!r} (use key, user or team)")
    return _json(await budget_status(store, cfg, kind, principal_id, limits))


async def budget_status(
    store: AccountingStore, cfg: Config, kind: str, principal_id: str, limits: BudgetLimits
) -> dict[str, Any]:
    """The current period's spend of `kind:principal_id` against `limits.max_budget`."""
    [status] = await budget_statuses(store, cfg, [(kind, principal_id, limits)])
    return status


async def budget_statuses(
    store: AccountingStore, cfg: Config, wanted: Sequence[tuple[str, str, BudgetLimits]]
) -> list[dict[str, Any]]:
    """`budget_status` of each `(kind, id, limits)`, read from the store in one call."""
    if not wanted:
        return []
    zone = ZoneInfo(cfg.accounting.timezone)
    now = dt.datetime.now(dt.UTC).timestamp()
    periods = [period_name(limits.budget_period, now, zone) for _, _, limits in wanted]
    spent_all = await store.period_spend(
        [(f"{kind}:{pid}", period) for (kind, pid, _), period in zip(wanted, periods, strict=True)]
    )
    out = []
    for (kind, principal_id, limits), period, spent in zip(wanted, periods, spent_all, strict=True):
        remaining = None if limits.max_budget is None else max(0.0, limits.max_budget - spent)
        out.append(
            {
                "kind": kind,
                "id": principal_id,
                "max_budget": limits.max_budget,
                "budget_period": limits.budget_period,
                "spent": spent,
                "remaining": remaining,
                "period": period,
                "resets_at": period_end(limits.budget_period, now, zone),
            }
        )
    return out


def parse_time(value: str | None, field: str, zone: ZoneInfo) -> float | None:
    """Unix seconds from Unix seconds or ISO-8601 (a time without an offset is in `zone`)."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise BadRequest(
                f"{field}: expected ISO-8601 (2026-01-31T00:00:00Z) or Unix seconds",
                param=field,
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=zone)
        return when.timestamp()
    if not math.isfinite(seconds) or seconds < 0:
        raise BadRequest(f"{field}: expected Unix seconds after 1970", param=field)
    return seconds


# -- request helpers ----------------------------------------------------------------------------


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object body (empty: `{}`), at most `MAX_BODY` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise PayloadTooLarge(f"body larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidJSON("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, refusing unknown and repeated ones."""
    out: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            known = f" (known: {', '.join(allowed)})" if allowed else ""
            raise BadRequest(f"unknown query parameter {name!r}{known}", param=name)
        if name in out:
            raise BadRequest(f"query parameter {name!r} given twice", param=name)
        out[name] = value
    return out


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise BadRequest(f"{name}: expected true or false", param=name)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


__all__ = [
    "KeyStores",
    "budget_status",
    "budget_statuses",
    "key_routes",
    "parse_time",
    "principal_limits",
]
