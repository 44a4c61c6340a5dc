"""Runtime snapshots: everything a request needs, built once per config and swapped atomically."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from crossway.config.models import Config, Route
from crossway.policy import PolicyChain, build_chain
from crossway.policy.protected_resource import WELL_KNOWN, MetadataBackend, ProtectedResource
from crossway.server.backend import Backend
from crossway.server.backends import build_backend
from crossway.server.routing import CompiledRoute, RouteTable, compile_route
from crossway.telemetry.observers import RequestObserver, build_observers

log = logging.getLogger("crossway.runtime")


class Runtime:
    """An immutable view of one config: route table and started backends.

    Requests hold the snapshot they started on (`enter`/`exit` count them), so a reload never
    changes the rules under a request in flight.
    """

    def __init__(
        self,
        config: Config,
        backends: dict[str, Backend],
        chains: dict[str, PolicyChain | None] | None = None,
    ) -> None:
        self.config = config
        self.backends = backends
        self.chains = chains if chains is not None else build_chains(config)
        compiled = [
            compile_route(r, backends[r.backend], self.chains.get(r.name)) for r in config.routes
        ]
        public = build_chain(p for p in config.listen.policies if p.type in ("cors", "ip"))
        self.routes = RouteTable(metadata_routes(compiled, public) + compiled)
        self.observers: tuple[RequestObserver, ...] = build_observers(config)
        """Tracing and access logs: see every request begin and end (empty: nothing to do)."""
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def exit(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drained(self) -> None:
        """Wait until no request started on this snapshot is still running."""
        await self._idle.wait()


def route_policies(config: Config, route: Route) -> list[object]:
    """A route's policies: the listener's, then its backend's, then its own."""
    backend = config.backends[route.backend]
    return [*config.listen.policies, *getattr(backend, "policies", ()), *route.policies]


def build_chains(config: Config) -> dict[str, PolicyChain | None]:
    """One policy chain per route (None for a route without policies)."""
    return {
        r.name: build_chain(route_policies(config, r), config.accounting) for r in config.routes
    }


def metadata_routes(
    routes: list[CompiledRoute], chain: PolicyChain | None = None
) -> list[CompiledRoute]:
    """RFC 9728 metadata routes for every route behind a protected-resource JWT policy: the
    path-suffixed well-known path (matched on the resource's host too when two resources share
    that path), and the bare one when a single resource is configured. `chain` (the listener's
    CORS and IP policies) guards them; authentication never does: metadata is public."""
    resources: dict[str, ProtectedResource] = {}
    for route in routes:
        for policy in route.chain.policies if route.chain is not None else ():
            resource = getattr(policy, "resource", None)  # a JWT policy's RFC 9728 mode
            if isinstance(resource, ProtectedResource):
                resources.setdefault(resource.config.resource, resource)
    by_path: dict[str, list[ProtectedResource]] = {}
    for resource in resources.values():
        by_path.setdefault(resource.metadata_path, []).append(resource)
    out: list[CompiledRoute] = []
    for path, claimants in by_path.items():
        shared = len(claimants) > 1
        for resource in claimants:
            host = urlsplit(resource.config.resource).hostname if shared else None
            out.append(_exact_route(path, MetadataBackend(resource), host, chain))
    if len(resources) == 1 and WELL_KNOWN not in by_path:
        only = next(iter(resources.values()))
        out.append(_exact_route(WELL_KNOWN, MetadataBackend(only), None, chain))
    return out


def _exact_route(
    path: str, backend: Backend, host: str | None, chain: PolicyChain | None
) -> CompiledRoute:
    match: dict[str, object] = {"path": {"exact": path}}
    if host:
        match["host"] = host
    route = Route.model_validate({"name": "_metadata", "backend": "_metadata", "match": match})
    return compile_route(route, backend, chain)


async def build_runtime(config: Config, previous: Runtime | None = None) -> Runtime:
    """Build and start a runtime; backends whose config is unchanged are carried over from
    `previous` (pools, sessions and child processes survive the reload)."""
    backends: dict[str, Backend] = {}
    started: list[Backend] = []
    opened: list[PolicyChain] = []
    try:
        for name, backend_config in config.backends.items():
            old = previous.backends.get(name) if previous else None
            if (
                old is not None
                and previous is not None
                and previous.config.backends.get(name) == backend_config
                and previous.config.listen.max_body_bytes == config.listen.max_body_bytes
            ):
                backends[name] = old
                continue
            backend = build_backend(name, backend_config, config)
            await backend.start()
            started.append(backend)
            backends[name] = backend
        chains = build_chains(config)
        for chain in chains.values():
            if chain is not None:
                opened.append(chain)
                await chain.start()
        return Runtime(config, backends, chains)
    except BaseException:
        for backend in started:
            await _close_quietly(backend)
        for chain in opened:
            await chain.close()
        raise


async def retire_runtime(old: Runtime, new: Runtime | None) -> None:
    """After a swap: wait for the old snapshot's requests, then close backends not carried over."""
    await old.drained()
    keep = {id(b) for b in new.backends.values()} if new else set()
    for backend in old.backends.values():
        if id(backend) not in keep:
            await _close_quietly(backend)
    for chain in old.chains.values():
        if chain is not None:
            await chain.close()
    for observer in old.observers:
        try:
            await observer.close()
        except Exception:
            log.exception("error while closing a request observer")


async def _close_quietly(backend: Backend) -> None:
    try:
        await backend.close()
    except Exception:
        log.exception("error while closing backend")
