"""Upstream MCP servers spawned as child processes, spoken to over stdin/stdout.

One child per configured server, shared by every downstream session (`Upstream.shared`). A
supervisor task spawns it, runs `initialize`, and when the child dies restarts it with
exponential back-off. Its stderr goes to Crossway's log, line by line. `close()` terminates the
whole process group (npx and friends spawn grandchildren), then kills it if it lingers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import weakref
from typing import Final

import orjson

from crossway.config.mcp import McpTimeouts, StdioServerConfig
from crossway.errors import UpstreamTimeout, UpstreamUnreachable
from crossway.mcp.upstream.base import (
    ClientHello,
    JsonObject,
    RequestOptions,
    Upstream,
    UpstreamEvents,
    UpstreamSession,
)
from crossway.mcp.upstream.rpc import (
    GATEWAY_CLIENT_CAPABILITIES,
    LATEST_HANDSHAKE_VERSION,
    RpcPeer,
    initialize_params,
)

logger = logging.getLogger(__name__)

TERMINATE_GRACE_SECONDS: Final = 3.0
BASE_ENV_KEYS: Final = ("PATH", "HOME", "LANG", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM")
GATEWAY_CLIENT_INFO: Final[JsonObject] = {"name": "crossway", "version": "0.1.0"}


class _ProcessPeer(RpcPeer):
    def __init__(self, upstream: StdioUpstream, process: asyncio.subprocess.Process) -> None:
        super().__init__(upstream.name)
        self._upstream = upstream
        self.process = process
        self._write_lock = asyncio.Lock()

    async def write(self, message: JsonObject) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.is_closing():
            raise UpstreamUnreachable(f"MCP server {self.server!r} is not running")
        async with self._write_lock:
            stdin.write(orjson.dumps(message) + b"\n")
            await stdin.drain()

    async def unrelated_notification(self, message: JsonObject) -> None:
        await self._upstream.broadcast(message)

    async def unrelated_request(self, message: JsonObject) -> JsonObject:
        return await self._upstream.ask_any_client(message)


class _SharedView(UpstreamSession):
    """One downstream session's handle on the shared child."""

    def __init__(self, upstream: StdioUpstream, events: UpstreamEvents) -> None:
        self.server = upstream.name
        self._upstream = upstream
        self.events = events
        self.init_result = upstream.init_result

    async def request(
        self, method: str, params: JsonObject | None, options: RequestOptions
    ) -> JsonObject:
        peer = await self._upstream.ready_peer()
        return await peer.request(method, params, options)

    async def notify(self, method: str, params: JsonObject | None) -> None:
        peer = await self._upstream.ready_peer()
        await peer.notify(method, params)

    async def close(self) -> None:
        self._upstream.views.discard(self)

    @property
    def alive(self) -> bool:
        return not self._upstream.closed


class _OwnChildView(UpstreamSession):
    """A client session's handle on its own child (`isolation: per_client`)."""

    def __init__(self, parent: StdioUpstream, child: StdioUpstream, view: UpstreamSession) -> None:
        self.server = parent.name
        self._parent = parent
        self._child = child
        self._view = view
        self.init_result = view.init_result

    async def request(
        self, method: str, params: JsonObject | None, options: RequestOptions
    ) -> JsonObject:
        return await self._view.request(method, params, options)

    async def notify(self, method: str, params: JsonObject | None) -> None:
        await self._view.notify(method, params)

    async def close(self) -> None:
        self._parent._children.discard(self._child)
        await self._child.close()

    @property
    def alive(self) -> bool:
        return not self._child.closed


class StdioUpstream(Upstream):
    """A supervised child process speaking MCP over stdio."""

    shared = True

    def __init__(self, name: str, cfg: StdioServerConfig, timeouts: McpTimeouts, max_bytes: int):
        self.name = name
        self.cfg = cfg
        self.shared = cfg.isolation == "shared"
        self._children: set[StdioUpstream] = set()
        self.timeouts = timeouts
        self.max_bytes = max_bytes
        self.views: weakref.WeakSet[_SharedView] = weakref.WeakSet()
        self.init_result: JsonObject = {}
        self.closed = False
        self.restarts = 0
        self._peer: _ProcessPeer | None = None
        self._ready = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.shared and self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def close(self) -> None:
        self.closed = True
        children = list(self._children)
        self._children.clear()
        await asyncio.gather(*(child.close() for child in children), return_exceptions=True)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
            self._supervisor = None
        if self._peer is not None:
            await _terminate(self._peer.process)
            self._peer.fail_all(UpstreamUnreachable(f"MCP server {self.name!r} was stopped"))

    async def open_session(
        self, hello: ClientHello, events: UpstreamEvents, *, resume: str | None = None
    ) -> UpstreamSession:
        if not self.shared:
            return await self._open_own_child(hello, events)
        await self.ready_peer()
        view = _SharedView(self, events)
        self.views.add(view)
        return view

    async def _open_own_child(self, hello: ClientHello, events: UpstreamEvents) -> UpstreamSession:
        """`per_client`: a supervised child of its own, stopped when the session closes."""
        if self.closed:
            raise UpstreamUnreachable(f"MCP server {self.name!r} is stopped")
        child = StdioUpstream(
            self.name,
            self.cfg.model_copy(update={"isolation": "shared"}),
            self.timeouts,
            self.max_bytes,
        )
        self._children.add(child)
        try:
            await child.start()
            view = await child.open_session(hello, events)
        except BaseException:
            self._children.discard(child)
            await child.close()
            raise
        return _OwnChildView(self, child, view)

    async def ready_peer(self) -> _ProcessPeer:
        """The running, initialized child; waits up to the connect timeout for it."""
        if self.closed:
            raise UpstreamUnreachable(f"MCP server {self.name!r} is stopped")
        if self._supervisor is None:
            await self.start()
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), self.timeouts.connect)
            except TimeoutError:
                raise UpstreamTimeout(f"MCP server {self.name!r} is not ready") from None
        assert self._peer is not None
        return self._peer

    async def broadcast(self, message: JsonObject) -> None:
        if str(message.get("method", "")).endswith("list_changed"):
            self.list_generation += 1
        for view in list(self.views):
            try:
                await view.events.on_notification(self.name, message)
            except Exception:
                logger.exception("delivering a notification from %s failed", self.name)

    async def ask_any_client(self, message: JsonObject) -> JsonObject:
        for view in reversed(list(self.views)):
            return await view.events.on_request(self.name, message)
        return {"error": {"code": -32601, "message": "no client connected"}}

    async def _supervise(self) -> None:
        backoff = self.cfg.restart_min_backoff
        while not self.closed:
            started = asyncio.get_running_loop().time()
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("MCP server %s failed: %s", self.name, exc)
            if self.closed:
                return
            if asyncio.get_running_loop().time() - started > 60:
                backoff = self.cfg.restart_min_backoff
            self.restarts += 1
            logger.warning("MCP server %s exited; restarting in %.1fs", self.name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.cfg.restart_max_backoff)

    def _environment(self) -> dict[str, str]:
        if self.cfg.inherit_env:
            env = dict(os.environ)
        else:
            env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
        env.update(self.cfg.env)
        return env

    async def _run_once(self) -> None:
        process = await asyncio.create_subprocess_exec(
            self.cfg.command,
            *self.cfg.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._environment(),
            cwd=self.cfg.cwd,
            start_new_session=True,
            limit=self.max_bytes,
        )
        logger.info("MCP server %s started (pid %d)", self.name, process.pid)
        peer = _ProcessPeer(self, process)
        self._peer = peer
        stderr_task = asyncio.get_running_loop().create_task(self._log_stderr(process))
        reader = asyncio.get_running_loop().create_task(self._read(peer))
        try:
            self.init_result = await peer.request(
                "initialize",
                initialize_params(
                    LATEST_HANDSHAKE_VERSION, GATEWAY_CLIENT_CAPABILITIES, GATEWAY_CLIENT_INFO
                ),
                RequestOptions(timeout=self.timeouts.connect),
            )
            await peer.notify("notifications/initialized", None)
            for view in list(self.views):
                view.init_result = self.init_result
            self._ready.set()
            if self.restarts:
                # Tools may differ after a restart.
                await self.broadcast(
                    {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
                )
            await reader
        finally:
            self._ready.clear()
            reader.cancel()
            peer.fail_all(UpstreamUnreachable(f"MCP server {self.name!r} exited"))
            await _terminate(process)
            stderr_task.cancel()

    async def _read(self, peer: _ProcessPeer) -> None:
        stdout = peer.process.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except ValueError:
                logger.warning("MCP server %s sent a message over the size limit", self.name)
                # The stream is out of sync; restart the child.
                return
            if not line:
                return
            line = line.strip()
            if not line:
                continue
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                logger.warning("MCP server %s wrote non-JSON to stdout: %.200r", self.name, line)
                continue
            peer.dispatch(message)

    async def _log_stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        with contextlib.suppress(Exception):
            while line := await process.stderr.readline():
                logger.info(
                    "MCP server %s: %s", self.name, line.decode("utf-8", "replace").rstrip()
                )


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), TERMINATE_GRACE_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
