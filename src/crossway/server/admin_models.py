"""`GET /models`: every LLM backend's models, targets, providers, prices and live health.

    GET /models      per LLM backend: its providers (type, base URL redacted, the admin
                     plane's reachability probe), its client-facing models with their targets
                     in failover order (priority, then weight) and prices, routing and cache
                     settings, and what the admin plane can observe of the workers' health:
                     upstream attempts and cooldown ejections from the metrics of every worker,
                     and the cooldowns in effect now from the shared cooldown store (Redis,
                     `routing.cooldown.redis_url`) when one is configured

Cooldowns live in each worker's memory; without a shared store the admin plane sees only how
often each deployment was ejected (`crossway_llm_cooldowns_total`), not whether it is ejected
now, and the answer says so in `notes`. Never a secret: provider keys and headers are not
listed, URLs are redacted as in `GET /config`. Same rule as the other sensitive admin routes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crossway.config import Config
from crossway.config.llm import LlmBackendConfig, ModelTarget
from crossway.config.secrets import redact_url, redacted_dump
from crossway.errors import GatewayError
from crossway.llm.pricing import Price, PriceTable
from crossway.server.admin_auth import _check_change_allowed
from crossway.server.admin_pins import _error, _json

Json = dict[str, Any]

ACTION: Final = "read the models and providers"
REDIS_TIMEOUT_SECONDS: Final = 1.0
"""Longest the shared cooldown store may take to answer before it is reported unreachable."""
_METRICS: Final = frozenset(
    {
        "crossway_llm_upstream_attempts",
        "crossway_llm_cooldowns",
        "crossway_llm_cache_entries",
        "crossway_llm_cache_requests",
    }
)

ConfigSource = Any
"""Anything with `current() -> Config` (the admin plane's `ConfigView`)."""
RegistrySource = Callable[[], CollectorRegistry]


def default_registry() -> CollectorRegistry:
    """Every worker's metrics, as the admin plane's `/metrics` reads them."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path or not os.path.isdir(path):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def deployment_key(target: ModelTarget) -> str:
    """`provider/model` as the workers label a deployment (`*`: the client's model name)."""
    return f"{target.provider}/{target.model or '*'}"


def failover_order(targets: list[ModelTarget]) -> list[tuple[int, ModelTarget]]:
    """Targets in the order they are tried: by priority (lower first), then heavier weight
    first; with their index in the config."""
    indexed = list(enumerate(targets))
    return sorted(indexed, key=lambda it: (it[1].priority, -it[1].weight, it[0]))


def read_metrics(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The LLM samples this route shows, by metric family name (without `_total`)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        if family.name not in _METRICS:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out.setdefault(family.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def _price(price: Price | None) -> Json | None:
    if price is None:
        return None
    return {
        "input": price.input,
        "output": price.output,
        "cached_input": price.cached_input,
        "cache_write": price.cache_write,
        "reasoning": price.reasoning,
    }


def _price_source(
    upstream: str | None, backend: LlmBackendConfig, prices: PriceTable, bundled: PriceTable
) -> str | None:
    """`configured` (the backend's `prices` by name), `configured prefix` (a configured price
    of a shorter name), `bundled` (Crossway's table), or None without a price."""
    if not upstream:
        return None
    price = prices.lookup(upstream)
    if price is None:
        return None
    if upstream in backend.prices:
        return "configured"
    return "bundled" if bundled.lookup(upstream) == price else "configured prefix"


async def shared_cooldowns(name: str, backend: LlmBackendConfig) -> Json | None:
    """Cooldowns in effect now in the backend's shared store: `{deployment: until}`, or the
    store's error; None when the backend has no shared store."""
    url = backend.routing.cooldown.redis_url
    if url is None:
        return None
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    keys = sorted({deployment_key(t) for m in backend.models for t in m.targets})
    channel = f"crossway:llm:{name}:cooldown"
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        values = (
            await asyncio.wait_for(
                client.mget([f"{channel}:{key}" for key in keys]), REDIS_TIMEOUT_SECONDS * 2
            )
            if keys
            else []
        )
    except (RedisError, OSError, TimeoutError) as exc:
        return {"ok": False, "error": f"the shared cooldown store is unreachable: {exc}"}
    finally:
        await client.aclose()
    until: Json = {}
    for key, value in zip(keys, values, strict=True):
        try:
            end = float(value) if value is not None else 0.0
        except ValueError:
            continue
        if end > time.time():
            until[key] = end
    return {"ok": True, "error": None, "until": until}


def describe_backend(
    name: str,
    backend: LlmBackendConfig,
    dump: Json,
    report: Json,
    samples: dict[str, list[tuple[dict[str, str], float]]],
    shared: Json | None,
) -> Json:
    """One LLM backend as `GET /models` answers it."""
    health = report.get(name, {"reachable": None, "upstreams": {}})
    providers = []
    for provider_name, provider in backend.providers.items():
        probe = health["upstreams"].get(provider_name, {})
        providers.append(
            {
                "name": provider_name,
                "type": provider.type,
                "preset": getattr(provider, "preset", None),
                "base_url": redact_url(provider.base_url) if provider.base_url else None,
                "pool": provider.pool is not None,
                "reachable": probe.get("reachable"),
                "error": probe.get("error"),
                "checked_at": probe.get("checked_at"),
                "address": probe.get("address", ""),
            }
        )
    attempts: dict[str, dict[str, float]] = {}
    for labels, value in samples.get("crossway_llm_upstream_attempts", []):
        if labels.get("backend") == name:
            per = attempts.setdefault(labels.get("deployment", ""), {})
            result = labels.get("result", "")
            per[result] = per.get(result, 0.0) + value
    ejections: dict[str, float] = {}
    for labels, value in samples.get("crossway_llm_cooldowns", []):
        key = labels.get("deployment", "")
        ejections[key] = ejections.get(key, 0.0) + value
    shared_until = (shared or {}).get("until") or {}
    prices = PriceTable({k: Price(**v.model_dump()) for k, v in backend.prices.items()})
    bundled = PriceTable()
    models = []
    for route in backend.models:
        targets = []
        for rank, (index, target) in enumerate(failover_order(route.targets), start=1):
            key = deployment_key(target)
            upstream = target.model or (route.name if "*" not in route.name else None)
            tried = attempts.get(key, {})
            targets.append(
                {
                    "index": index,
                    "order": rank,
                    "provider": target.provider,
                    "model": target.model,
                    "upstream_model": upstream,
                    "deployment": key,
                    "priority": target.priority,
                    "weight": target.weight,
                    "context_window": target.context_window,
                    "price": _price(prices.lookup(upstream)) if upstream else None,
                    "price_configured": upstream in backend.prices if upstream else False,
                    "price_source": _price_source(upstream, backend, prices, bundled),
                    "attempts": {r: int(tried.get(r, 0)) for r in ("ok", "retry", "error")},
                    "ejections": int(ejections.get(key, 0)),
                    "cooldown_until": shared_until.get(key),
                }
            )
        models.append(
            {
                "name": route.name,
                "strategy": route.strategy or backend.routing.strategy,
                "context_fallbacks": list(route.context_fallbacks),
                "enriched": route.enriches,
                "targets": targets,
            }
        )
    cache_entries = sum(
        v
        for labels, v in samples.get("crossway_llm_cache_entries", [])
        if labels.get("backend") == name
    )
    cache_results: dict[str, float] = {}
    for labels, value in samples.get("crossway_llm_cache_requests", []):
        if labels.get("backend") == name:
            result = labels.get("result", "")
            cache_results[result] = cache_results.get(result, 0.0) + value
    cooldown = backend.routing.cooldown
    return {
        "name": name,
        "reachable": health.get("reachable"),
        "providers": providers,
        "models": models,
        "prices": {k: v.model_dump() for k, v in backend.prices.items()},
        "routing": {
            "strategy": backend.routing.strategy,
            "deadline": backend.routing.deadline,
            "retries": backend.routing.retry.retries,
            "cooldown_failures": cooldown.failures,
            "cooldown_seconds": cooldown.seconds,
            "shared_cooldown": cooldown.redis_url is not None,
        },
        "shared_cooldown": (
            None if shared is None else {"ok": shared["ok"], "error": shared["error"]}
        ),
        "cache": dump.get("cache"),
        "cache_stats": {
            "entries": int(cache_entries),
            "hits": int(cache_results.get("hit", 0)),
            "misses": int(cache_results.get("miss", 0)),
        },
    }


NOTE_LOCAL_COOLDOWN: Final = (
    "cooldowns live in each worker process: without routing.cooldown.redis_url the admin "
    "plane sees how often a deployment was ejected, not whether it is ejected now"
)


async def describe(cfg: Config, probe: Any, registry: RegistrySource) -> Json:
    """The whole `GET /models` answer."""
    llm = {n: b for n, b in cfg.backends.items() if isinstance(b, LlmBackendConfig)}
    report: Json = probe.report() if probe is not None else {}
    samples = await asyncio.to_thread(lambda: read_metrics(registry()))
    dump = redacted_dump(cfg).get("backends", {})
    shared = await asyncio.gather(*(shared_cooldowns(n, b) for n, b in llm.items()))
    backends = [
        describe_backend(n, b, dump.get(n, {}), report, samples, s)
        for (n, b), s in zip(llm.items(), shared, strict=True)
    ]
    notes = []
    if any(not b.routing.cooldown.redis_url for b in llm.values()):
        notes.append(NOTE_LOCAL_COOLDOWN)
    if not llm:
        notes.append("no LLM backend is configured")
    return {"backends": backends, "notes": notes, "checked_at": time.time()}


def model_routes(
    view: ConfigSource, probe: Any, registry: RegistrySource | None = None
) -> list[Route]:
    """`GET /models`; metrics from `registry` (default: every worker's, as `/metrics`)."""
    source = registry or default_registry

    async def models(request: Request) -> Response:
        try:
            cfg: Config = await asyncio.to_thread(view.current)
            _check_change_allowed(request, cfg.admin, ACTION)
            return _json(await describe(cfg, probe, source))
        except GatewayError as exc:
            return _error(exc)

    return [Route("/models", models, methods=["GET"])]


def _obj(props: Json, required: list[str] | None = None) -> Json:
    schema: Json = {"type": "object", "properties": props, "additionalProperties": True}
    if required:
        schema["required"] = required
    return schema


_NUM: Final[Json] = {"type": ["number", "null"]}
_STR: Final[Json] = {"type": ["string", "null"]}
_BOOL: Final[Json] = {"type": ["boolean", "null"]}


def _schema() -> Json:
    price = {"oneOf": [{"type": "null"}, _obj({k: _NUM for k in ("input", "output")})]}
    target = _obj(
        {
            "index": {"type": "integer", "description": "Position in the config's `targets`."},
            "order": {"type": "integer", "description": "Failover order (1 is tried first)."},
            "provider": {"type": "string"},
            "model": _STR,
            "upstream_model": _STR,
            "deployment": {"type": "string", "description": "`provider/model` (metrics label)."},
            "priority": {"type": "integer"},
            "weight": {"type": "number"},
            "context_window": {"type": ["integer", "null"]},
            "price": price,
            "price_configured": {"type": "boolean"},
            "price_source": {
                "enum": ["configured", "configured prefix", "bundled", None],
                "description": "Where the price comes from.",
            },
            "attempts": _obj({k: {"type": "integer"} for k in ("ok", "retry", "error")}),
            "ejections": {"type": "integer", "description": "Cooldowns entered (all workers)."},
            "cooldown_until": {
                **_NUM,
                "description": "Unix end of a cooldown in effect now (shared store only).",
            },
        },
        ["provider", "deployment", "order"],
    )
    provider = _obj(
        {
            "name": {"type": "string"},
            "type": {"type": "string"},
            "preset": _STR,
            "base_url": {**_STR, "description": "Redacted as in `GET /config`."},
            "pool": {"type": "boolean"},
            "reachable": _BOOL,
            "error": _STR,
            "checked_at": _NUM,
            "address": {"type": "string"},
        },
        ["name", "type"],
    )
    model = _obj(
        {
            "name": {"type": "string"},
            "strategy": {"type": "string"},
            "context_fallbacks": {"type": "array", "items": {"type": "string"}},
            "enriched": {"type": "boolean"},
            "targets": {"type": "array", "items": target},
        },
        ["name", "targets"],
    )
    backend = _obj(
        {
            "name": {"type": "string"},
            "reachable": _BOOL,
            "providers": {"type": "array", "items": provider},
            "models": {"type": "array", "items": model},
            "prices": {"type": "object"},
            "routing": {"type": "object"},
            "shared_cooldown": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            "cache": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            "cache_stats": {"type": "object"},
        },
        ["name", "providers", "models"],
    )
    return _obj(
        {
            "backends": {"type": "array", "items": backend},
            "notes": {"type": "array", "items": {"type": "string"}},
            "checked_at": {"type": "number"},
        },
        ["backends", "notes"],
    )


def model_paths() -> Json:
    """`GET /models`'s OpenAPI path item."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    summary = (
        "Every LLM backend's providers (redacted), models with their targets in failover "
        "order, prices, routing and cache settings, and live health (probe, attempts, "
        "cooldowns)."
    )
    return {
        "/models": {
            "get": {
                "operationId": "listModels",
                "tags": ["config"],
                "summary": summary,
                "description": summary + " Needs `admin.token` as a Bearer token when one is "
                "set; without one it is served only on a loopback admin listener and never to a "
                "browser (a request with an `Origin` header).",
                "security": [{}, {"adminToken": []}],
                "responses": {
                    "200": {
                        "description": "OK.",
                        "content": {"application/json": {"schema": _schema()}},
                    },
                    "401": {
                        "description": "`admin.token` is set and the request does not carry it.",
                        **error,
                    },
                    "403": {
                        "description": "Refused: no `admin.token` and a non-loopback listener "
                        "or a browser request.",
                        **error,
                    },
                },
            }
        }
    }


__all__ = ["deployment_key", "failover_order", "model_paths", "model_routes"]
