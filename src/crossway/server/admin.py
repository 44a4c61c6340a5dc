"""The admin plane (off the hot path, Starlette): health, readiness, metrics, effective config.

It runs in the supervising process, next to the workers; metrics come from every worker through
prometheus-client's multiprocess files.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crossway import __version__
from crossway.config import Config, ConfigError
from crossway.config.secrets import redacted_dump
from crossway.config.serve_env import load_serving_config
from crossway.server.admin_a2a import a2a_task_routes
from crossway.server.admin_agents import agent_paths, agent_routes
from crossway.server.admin_jwt import AdminAuth
from crossway.server.admin_keys import KeyStores, key_routes
from crossway.server.admin_logs import log_paths, log_routes
from crossway.server.admin_mcp import mcp_paths, mcp_routes
from crossway.server.admin_models import model_paths, model_routes
from crossway.server.admin_openapi import build_document, openapi_route
from crossway.server.admin_pins import pin_routes
from crossway.server.admin_plane import AdminPlane
from crossway.server.admin_probe import ProbeCollector, UpstreamProbe
from crossway.server.admin_stats import stats_route
from crossway.server.admin_summary import summary_paths, summary_routes
from crossway.server.admin_validate import validate_paths, validate_routes


class ConfigView:
    """The last valid config read from the file, for display; re-read when asked."""

    def __init__(self, path: str, config: Config) -> None:
        self.path = path
        self.config = config
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None

    def current(self) -> Config:
        """The config the file holds now (re-read only when the file changed since the last
        read; a file that no longer loads leaves the last valid config, with `error` set)."""
        with self._lock:
            try:
                info = os.stat(self.path)
                stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            except OSError:
                stamp = None
            if stamp is not None and stamp == self._stamp:
                return self.config
            try:
                self.config = load_serving_config(self.path)
                self.error = None
            except ConfigError as exc:
                self.error = str(exc)
            self._stamp = stamp
            return self.config


def redacted(config: Config) -> dict[str, Any]:
    """The config as JSON with every secret replaced by `**********`: secret-typed fields,
    header and env maps, URL passwords and credential query parameters, credential-looking
    arguments and private JWK members (see `crossway.config.secrets`)."""
    return redacted_dump(config)


def workers_ready(registry: CollectorRegistry) -> float:
    for family in registry.collect():
        if family.name == "crossway_workers_ready":
            return sum(s.value for s in family.samples)
    return 0.0


def store_health(registry: CollectorRegistry) -> dict[str, dict[str, Any]]:
    """Shared stores by name: whether they work, and (in this process) the last error."""
    from crossway.policy.ledger import ledgers

    out: dict[str, dict[str, Any]] = {}
    for family in registry.collect():
        if family.name == "crossway_store_up":
            for sample in family.samples:
                name = sample.labels.get("store", "")
                ok = sample.value >= 1 and out.get(name, {}).get("ok", True)
                out[name] = {"ok": ok, "error": None if ok else "failing in a worker"}
    for ledger in ledgers():
        health = ledger.health()
        entry = out.setdefault("accounting", {"ok": True, "error": None})
        if not health["ok"]:
            entry.update(ok=False, error=health["error"])
        entry["queued_spend"] = entry.get("queued_spend", 0) + health["queued_spend"]
    return out


def create_admin_app(view: ConfigView, multiproc_dir: str | None) -> AdminPlane:
    """The admin plane: the API (Starlette) and the console at `/ui`; metrics from `multiproc_dir` (several workers) or this process."""

    started = time.time()
    probe = UpstreamProbe(view)
    probe_registry = CollectorRegistry(auto_describe=False)
    probe_registry.register(ProbeCollector(probe))

    def registry() -> CollectorRegistry:
        if multiproc_dir is None:
            return REGISTRY
        reg = CollectorRegistry()
        MultiProcessCollector(reg, path=multiproc_dir)  # type: ignore[no-untyped-call]
        return reg

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(request: Request) -> Response:
        probe.start()  # no-op once running (the lifespan starts it; an app without one here)
        reg = registry()
        ready = workers_ready(reg)
        status = 200 if ready >= 1 else 503
        body: dict[str, Any] = {"ready": ready >= 1, "workers_ready": int(ready)}
        config: dict[str, Any] = {"loaded": ready >= 1, "path": view.path}
        if view.error:
            config["rejected_reload"] = view.error
        body["config"] = config
        # Cached probe results: a readiness call never waits on an upstream.
        backends = probe.report()
        body["backends"] = backends
        degraded = any(b["reachable"] is False for b in backends.values())
        stores = store_health(reg)
        if stores:
            body["stores"] = stores
            degraded = degraded or any(not s["ok"] for s in stores.values())
        # A failing store or upstream degrades the gateway but does not stop it: it keeps serving.
        body["degraded"] = degraded
        return JSONResponse(body, status_code=status)

    async def metrics(request: Request) -> Response:
        text = generate_latest(registry()) + generate_latest(probe_registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def config(request: Request) -> Response:
        cfg = view.current()
        body: dict[str, Any] = {"path": view.path, "config": redacted(cfg)}
        if view.error:
            body["rejected_reload"] = view.error
        return Response(
            orjson.dumps(body, option=orjson.OPT_INDENT_2), media_type="application/json"
        )

    key_stores = KeyStores()
    closers: list[Callable[[], Awaitable[None]]] = []
    auth = AdminAuth()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        probe.start()
        try:
            async with key_stores.lifespan(app):
                yield
        finally:
            await probe.aclose()
            await auth.aclose()
            for close in closers:
                await close()

    workers_mode = "single" if multiproc_dir is None else "multiprocess"
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/config", config, methods=["GET"]),
        stats_route(registry, started, workers_mode),
        *pin_routes(view),
        *a2a_task_routes(view),
        *key_routes(view, key_stores),
        *log_routes(view),
        *summary_routes(view, probe),
        *model_routes(view, probe, registry),
        *mcp_routes(view, probe),
        *agent_routes(view, probe, closers),
        *validate_routes(view, probe),
    ]
    extra = {
        **log_paths(),
        **summary_paths(),
        **model_paths(),
        **mcp_paths(),
        **agent_paths(),
        **validate_paths(),
    }
    routes.append(openapi_route(build_document(extra)))
    api = Starlette(lifespan=lifespan, routes=routes)

    def console() -> Any:
        """The console's app, built at its first request: a gateway whose console nobody
        opens never imports it (Jinja2, the pages)."""
        from crossway.ui import Console, create_console
        from crossway.ui.access import ConsoleAccess

        state = Console(
            view=view,
            access=ConsoleAccess(auth),
            probe=probe,
            registry=registry,
            started=started,
            workers_mode=workers_mode,
        )
        state.api.bind(plane, auth.console_headers())
        closers.append(state.api.aclose)
        return create_console(state)

    plane = AdminPlane(api, console, view, auth)
    return plane
