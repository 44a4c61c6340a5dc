"""The data-plane ASGI app: match a route on the current runtime, run its policies, call its
backend, render errors in the backend's format, count everything."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Final

from crossway.config import ConfigError
from crossway.config.serve_env import load_serving_config
from crossway.errors import GatewayError, NotFound
from crossway.proxy import client
from crossway.server import lifecycle
from crossway.server.asgi import ClientDisconnected, client_request_id, send_response
from crossway.server.backend import Backend, ErrorResponse, render_json_error
from crossway.server.context import RequestContext
from crossway.server.forwarded import set_client
from crossway.server.paths import normalize_scope
from crossway.server.runtime import Runtime, build_runtime, retire_runtime
from crossway.telemetry import metrics
from crossway.types import Message, Receive, Scope, Send

log = logging.getLogger("crossway")

CONFIG_ENV: Final = "CROSSWAY_CONFIG"
WATCH_INTERVAL_SECONDS: Final = 1.0


class GatewayApp:
    """The raw ASGI app each worker runs.

    The current `Runtime` is one reference: a reload builds a new runtime off to the side and
    swaps it in; requests keep the runtime they started with.
    """

    def __init__(self, config_path: str | None = None) -> None:
        self.config_path = config_path
        self.runtime: Runtime | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-"
        self._watch_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._mtime: float | None = None
        self._retiring: set[asyncio.Task[Any]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        started = time.perf_counter()
        if runtime is None:
            await _send_error(send, GatewayError("gateway is starting", status=503))
            return
        runtime.enter()
        observers = runtime.observers
        states: list[Any] | None = None
        route_name = "_unmatched"
        status = 500
        response_started = False

        backend = None
        ctx: RequestContext | None = None
        request_id = client_request_id(scope) or self._id_prefix + str(next(self._ids))
        request_id_header = (b"x-request-id", request_id.encode("ascii"))

        async def tracked_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = [*message["headers"], request_id_header]
                if ctx is not None and ctx.response_headers:
                    headers.extend(ctx.response_headers)
                message["headers"] = headers
            await send(message)

        try:
            if observers:
                states = [o.begin(scope) for o in observers]
            normalize_scope(scope)  # one normal, decoded path for routing and backends alike
            found = runtime.routes.match(scope)
            if found is None:
                raise NotFound(
                    f"no route for {scope['method']} {scope['path']}", code="route_not_found"
                )
            route, path = found
            route_name = route.name
            backend = route.backend
            ctx = RequestContext(route.name, route.backend_name, request_id, path)
            ctx.max_body_bytes = route.max_body_bytes
            set_client(scope, ctx, runtime.config.listen.trusted_proxies)
            chain = route.chain
            if chain is not None:
                ctx.chain = chain
                reply = await chain.request(scope, ctx)
                if reply is not None:
                    await send_response(tracked_send, reply[0], reply[2], reply[1])
                    return
                if not backend.parses and chain.parsed_policies:
                    await chain.parsed(ctx)
            await backend(scope, receive, tracked_send, ctx)
        except GatewayError as exc:
            if not response_started:
                code, headers, body = _render(exc, backend, scope, ctx)
                await _send_safely(tracked_send, code, headers, body)
            else:
                log.warning("route %s: error after the response started: %s", route_name, exc)
        except ClientDisconnected:
            status = 499
        except Exception:
            log.exception("route %s: unexpected error", route_name)
            if not response_started:
                code, headers, body = render_json_error(
                    GatewayError("internal error in the gateway", code="internal_error")
                )
                await _send_safely(tracked_send, code, headers, body)
        finally:
            try:
                if ctx is not None and ctx.chain is not None and ctx.chain.finish_policies:
                    await ctx.chain.finish(ctx)  # settle reservations, record spend
            finally:  # even when the task is cancelled during the finish phase
                runtime.exit()
                elapsed = time.perf_counter() - started
                metrics.observe_request(route_name, status, elapsed)
                if states is not None:
                    for observer, state in zip(observers, states, strict=True):
                        observer.end(state, scope, ctx, route_name, status, elapsed)

    # -- lifecycle -----------------------------------------------------------------------------

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        path = self.config_path or os.environ.get(CONFIG_ENV)
        if not path:
            raise RuntimeError(f"no config: pass a path or set {CONFIG_ENV}")
        self.config_path = path
        self._mtime = _mtime(path)
        config = load_serving_config(path)  # the file, then the environment overrides
        self.runtime = await build_runtime(config)
        metrics.WORKERS_READY.inc()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests) or no signals on this platform
        self._watch_task = asyncio.ensure_future(self._watch())

    async def shutdown(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        lifecycle.begin_shutdown()  # end streams that only wait for events
        runtime = self.runtime
        if runtime is not None:
            metrics.WORKERS_READY.dec()
            drain = runtime.config.listen.drain_seconds
            try:
                await asyncio.wait_for(runtime.drained(), drain)
            except TimeoutError:
                log.warning(
                    "shutdown: %d requests still running after %.0fs", runtime.in_flight, drain
                )
            await retire_runtime(runtime, None)
        for task in list(self._retiring):
            task.cancel()
        await client.close_session()

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading %s", self.config_path)
        task = asyncio.ensure_future(self.reload())
        self._retiring.add(task)  # hold a reference until it finishes
        task.add_done_callback(self._retiring.discard)

    async def _watch(self) -> None:
        assert self.config_path is not None
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            if self.runtime is not None:  # sampled here: the request path pays nothing for it
                metrics.REQUESTS_IN_FLIGHT.set(self.runtime.in_flight)
            mtime = _mtime(self.config_path)
            if mtime is not None and mtime != self._mtime:
                self._mtime = mtime
                await self.reload()

    async def reload(self) -> bool:
        """Load the config file again and swap it in; keep the old one if it is invalid."""
        assert self.config_path is not None
        async with self._reload_lock:
            self._mtime = _mtime(self.config_path)
            try:
                config = await asyncio.to_thread(load_serving_config, self.config_path)
            except ConfigError as exc:
                metrics.CONFIG_RELOADS.labels("rejected").inc()
                log.error("config reload rejected, still serving the previous config: %s", exc)
                return False
            old = self.runtime
            if old is not None and config == old.config:
                return True
            try:
                new = await build_runtime(config, old)
            except Exception as exc:
                metrics.CONFIG_RELOADS.labels("failed").inc()
                log.error("config reload failed, still serving the previous config: %s", exc)
                return False
            self.runtime = new
            metrics.CONFIG_RELOADS.labels("applied").inc()
            log.info("config reloaded from %s", self.config_path)
            if old is not None:
                task = asyncio.ensure_future(retire_runtime(old, new))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return True


def _render(
    exc: GatewayError, backend: Backend | None, scope: Scope, ctx: RequestContext | None
) -> ErrorResponse:
    """The error in the route's format; a renderer that fails falls back to the generic JSON
    error, so a refusal is always sent."""
    if backend is not None and ctx is not None:
        try:
            return backend.render_error(exc, scope, ctx)
        except Exception:
            log.exception("route %s: rendering an error failed", ctx.route)
    return render_json_error(exc)


def _mtime(path: str) -> float | None:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return None


async def _send_error(send: Send, exc: GatewayError) -> None:
    code, headers, body = render_json_error(exc)
    await _send_safely(send, code, headers, body)


async def _send_safely(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    try:
        await send_response(send, status, body, headers)
    except Exception:
        pass  # the client is gone; nothing left to tell it


def create_app() -> GatewayApp:
    """Entry point for the server: config path from `CROSSWAY_CONFIG`."""
    return GatewayApp()
