"""Runtime snapshots: everything a request needs, built once per config and swapped atomically."""

from __future__ import annotations

import asyncio
import logging

from crossway.config.models import Config
from crossway.policy import build_policy
from crossway.server.backend import Backend
from crossway.server.backends import build_backend
from crossway.server.routing import RouteTable, compile_route

log = logging.getLogger("crossway.runtime")


class Runtime:
    """An immutable view of one config: route table and started backends.

    Requests hold the snapshot they started on (`enter`/`exit` count them), so a reload never
    changes the rules under a request in flight.
    """

    def __init__(self, config: Config, backends: dict[str, Backend]) -> None:
        self.config = config
        self.backends = backends
        self.routes = RouteTable(
            [
                compile_route(r, backends[r.backend], tuple(build_policy(p) for p in r.policies))
                for r in config.routes
            ]
        )
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


async def build_runtime(config: Config, previous: Runtime | None = None) -> Runtime:
    """Build and start a runtime; backends whose config is unchanged are carried over from
    `previous` (pools, sessions and child processes survive the reload)."""
    backends: dict[str, Backend] = {}
    started: list[Backend] = []
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
        return Runtime(config, backends)
    except BaseException:
        for backend in started:
            await _close_quietly(backend)
        raise


async def retire_runtime(old: Runtime, new: Runtime | None) -> None:
    """After a swap: wait for the old snapshot's requests, then close backends not carried over."""
    await old.drained()
    keep = {id(b) for b in new.backends.values()} if new else set()
    for backend in old.backends.values():
        if id(backend) not in keep:
            await _close_quietly(backend)


async def _close_quietly(backend: Backend) -> None:
    try:
        await backend.close()
    except Exception:
        log.exception("error while closing backend")
