"""Whether each backend's upstreams are reachable, for `/readyz`: cached results of a background
probe, so a readiness call never waits on the network.

Every `PROBE_INTERVAL_SECONDS` the admin plane opens (and at once closes) a TCP connection to
each upstream the config names — LLM providers, MCP servers over HTTP or OpenAPI, A2A agents,
plain HTTP backends — at most `PROBE_TIMEOUT_SECONDS` each, all concurrently; a stdio MCP server
is "reachable" when its command is found. No request is sent: a probe needs no credentials and
changes nothing upstream. An upstream without a fixed address (an inline A2A card, a provider
whose endpoint the SDK derives) is listed with `reachable: null`.

The probe runs in the admin plane's process, so it sees the network as the workers do; it starts
with the admin app (or at the first `/readyz`) and re-reads the config file when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from crossway.config import Config
from crossway.config.a2a import A2aBackendConfig
from crossway.config.llm import LlmBackendConfig
from crossway.config.mcp import McpBackendConfig, OpenApiServerConfig, StdioServerConfig
from crossway.config.models import HttpBackendConfig

log = logging.getLogger("crossway.admin")

PROBE_INTERVAL_SECONDS: Final = 10.0
"""How often every upstream is probed."""
PROBE_TIMEOUT_SECONDS: Final = 2.0
"""Longest one TCP connect may take before the upstream counts as unreachable."""
DEFAULT_PROVIDER_URLS: Final = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
"""Where a provider type without `base_url` is called (the others derive theirs per request)."""

UPSTREAM_UP_METRIC: Final = "crossway_upstream_up"
"""The gauge `/metrics` shows for each probed upstream (1 reachable, 0 not; absent: unknown)."""

ConfigSource = Any
"""Anything with `config`, `path` and `current() -> Config` (the admin plane's `ConfigView`)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream of a backend, as the probe sees it."""

    name: str
    """The upstream's name in the config (provider, server or agent; `url` for HTTP)."""
    kind: str
    """`tcp` (host and port are connected to), `command` (looked up on PATH) or `none`."""
    address: str
    """`host:port`, the command, or empty."""


@dataclass(slots=True)
class Result:
    """The last probe of one target."""

    reachable: bool | None
    error: str | None
    checked_at: float


def backend_targets(config: Config) -> dict[str, list[Target]]:
    """Each backend's upstreams, by backend name."""
    out: dict[str, list[Target]] = {}
    for name, backend in config.backends.items():
        targets: list[Target] = []
        if isinstance(backend, HttpBackendConfig):
            targets.append(_url_target("url", backend.url))
        elif isinstance(backend, LlmBackendConfig):
            for provider_name, provider in backend.providers.items():
                url = provider.base_url or DEFAULT_PROVIDER_URLS.get(provider.type)
                targets.append(_url_target(provider_name, url))
        elif isinstance(backend, McpBackendConfig):
            for server_name, server in backend.servers.items():
                if isinstance(server, StdioServerConfig):
                    targets.append(Target(server_name, "command", server.command))
                elif isinstance(server, OpenApiServerConfig):
                    targets.append(_url_target(server_name, server.base_url))
                else:
                    targets.append(_url_target(server_name, str(server.url)))
        elif isinstance(backend, A2aBackendConfig):
            for agent_name, agent in backend.agents.items():
                url = str(agent.url) if agent.url is not None else None
                targets.append(_url_target(agent_name, url))
        out[name] = targets
    return out


def _url_target(name: str, url: str | None) -> Target:
    if not url:
        return Target(name, "none", "")
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return Target(name, "none", "")
    host = parts.hostname or ""
    if not host:
        return Target(name, "none", "")
    return Target(name, "tcp", f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")


async def probe(target: Target, connect_seconds: float = PROBE_TIMEOUT_SECONDS) -> Result:
    """Probe one target now."""
    now = time.time()
    if target.kind == "none":
        return Result(None, None, now)
    if target.kind == "command":
        found = await asyncio.to_thread(shutil.which, target.address)
        return Result(found is not None, None if found else "command not found", now)
    host, _, port = target.address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), connect_seconds
        )
    except TimeoutError:
        return Result(False, f"connect timed out after {connect_seconds:g}s", now)
    except OSError as exc:
        return Result(False, exc.strerror or str(exc) or type(exc).__name__, now)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Result(True, None, now)


class UpstreamProbe:
    """Probes every backend's upstreams in the background; `report()` reads the cache."""

    def __init__(
        self,
        view: ConfigSource,
        interval: float = PROBE_INTERVAL_SECONDS,
        timeout: float = PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self._view = view
        self._interval = interval
        self._timeout = timeout
        self._targets: dict[str, list[Target]] = backend_targets(view.config)
        self._results: dict[Target, Result] = {}
        self._task: asyncio.Task[None] | None = None
        self._mtime = _mtime(getattr(view, "path", None))
        self._rounds = 0

    @property
    def rounds(self) -> int:
        """Probe rounds completed so far."""
        return self._rounds

    def start(self) -> None:
        """Start the background loop (once; in the running event loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        """Stop the background loop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check_now(self) -> None:
        """One probe round of every target (the loop's body)."""
        await self._refresh_targets()
        targets = {t for ts in self._targets.values() for t in ts}
        found = await asyncio.gather(*(probe(t, self._timeout) for t in targets))
        self._results = dict(zip(targets, found, strict=True))
        self._rounds += 1

    async def _refresh_targets(self) -> None:
        path = getattr(self._view, "path", None)
        mtime = _mtime(path)
        if path is not None and mtime != self._mtime:
            self._mtime = mtime
            config = await asyncio.to_thread(self._view.current)
            self._targets = backend_targets(config)

    async def _run(self) -> None:
        while True:
            try:
                await self.check_now()
            except Exception:  # a probe bug must not end readiness reporting
                log.exception("admin: probing upstreams failed")
            await asyncio.sleep(self._interval)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per backend: `reachable` (every probed upstream answered; None before the first
        probe or with nothing to probe) and each upstream's last result."""
        out: dict[str, dict[str, Any]] = {}
        for backend, targets in self._targets.items():
            upstreams: dict[str, dict[str, Any]] = {}
            states: list[bool | None] = []
            for target in targets:
                result = self._results.get(target)
                entry: dict[str, Any] = {"kind": target.kind, "address": target.address}
                if result is None:
                    entry.update(reachable=None, error=None, checked_at=None)
                else:
                    entry.update(
                        reachable=result.reachable,
                        error=result.error,
                        checked_at=result.checked_at,
                    )
                if target.kind != "none":
                    states.append(None if result is None else result.reachable)
                upstreams[target.name] = entry
            reachable: bool | None
            if any(state is False for state in states):
                reachable = False
            elif not states or any(state is None for state in states):
                reachable = None
            else:
                reachable = True
            out[backend] = {"reachable": reachable, "upstreams": upstreams}
        return out


class ProbeCollector(Collector):
    """`crossway_upstream_up{backend, upstream}` from the probe's cache (the admin plane adds
    it to `/metrics`; labels are config names, so they stay bounded)."""

    def __init__(self, probe: UpstreamProbe) -> None:
        self._probe = probe

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            UPSTREAM_UP_METRIC,
            "1 while an upstream answered the admin plane's last probe (TCP connect, or its "
            "stdio command found), 0 while it did not; by backend and upstream name.",
            labels=["backend", "upstream"],
        )
        for backend, entry in self._probe.report().items():
            for name, upstream in entry["upstreams"].items():
                if upstream["reachable"] is not None:
                    family.add_metric([backend, name], 1.0 if upstream["reachable"] else 0.0)
        yield family


def _mtime(path: str | None) -> float | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


__all__ = ["UPSTREAM_UP_METRIC", "ProbeCollector", "UpstreamProbe", "backend_targets", "probe"]
