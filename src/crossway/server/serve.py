"""`crossway serve`: validate the config, start the admin plane and the granian workers."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Final

from crossway.config import Config

log = logging.getLogger("crossway")

SHUTDOWN_GRACE_SECONDS: Final = 5.0
"""After the drain time, how long shutdown may still take before the process exits anyway."""


def serve(config_path: str, config: Config, workers: int) -> None:
    """Run until SIGINT/SIGTERM; SIGHUP reloads the config in every worker."""
    path = str(Path(config_path).resolve())
    os.environ["CROSSWAY_CONFIG"] = path
    if workers == 1 and os.environ.get("CROSSWAY_SUPERVISOR") != "1":
        _serve_single(path, config)
        return
    # Metrics of every worker process land here; the admin plane aggregates them.
    multiproc_dir = tempfile.mkdtemp(prefix="crossway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir

    from granian.constants import Interfaces, Loops
    from granian.server import MPServer

    admin = _start_admin(path, config, multiproc_dir) if config.admin.enabled else None

    class CrosswayServer(MPServer):  # type: ignore[misc]
        """granian's server, except SIGHUP reloads config in place instead of respawning."""

        def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
            for worker in list(self.wrks):
                pid = worker._id()  # type: ignore[no-untyped-call]
                if pid:
                    try:
                        os.kill(pid, signal.SIGHUP)
                    except ProcessLookupError:
                        pass

    server = CrosswayServer(
        "crossway.server.app:create_app",
        address=config.listen.host,
        port=config.listen.port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.auto,
        factory=True,
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=int(config.listen.drain_seconds) + 5,
        backlog=2048,
    )
    log.info(
        "Crossway serving on http://%s:%d (admin on %s)",
        config.listen.host,
        config.listen.port,
        f"http://{config.admin.host}:{config.admin.port}" if admin else "off",
    )
    try:
        server.serve()
    finally:
        if admin is not None:
            admin.should_exit = True
        shutil.rmtree(multiproc_dir, ignore_errors=True)


def _serve_single(path: str, config: Config) -> None:
    """One process: granian's embedded server and the admin plane share this process's loop.

    Saves the supervisor process (about 50 MB) and the cross-process metric files.
    """
    import asyncio

    import uvloop

    async def main() -> None:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        from crossway.server import lifecycle
        from crossway.server.app import GatewayApp

        app = GatewayApp(path)
        server = Server(
            app,
            address=config.listen.host,
            port=config.listen.port,
            interface=Interfaces.ASGI,
            log_access=False,
            backlog=2048,
        )
        loop = asyncio.get_running_loop()

        def stop() -> None:
            lifecycle.begin_shutdown()  # end event-only streams now: granian drains the rest
            server.stop()  # type: ignore[no-untyped-call]
            # granian's embedded server waits for every open connection; a request that never
            # ends must not hold the process past the drain time.
            loop.call_later(config.listen.drain_seconds + SHUTDOWN_GRACE_SECONDS, force_exit)

        def force_exit() -> None:
            log.warning(
                "shutdown: requests still open after %.0fs of draining; exiting",
                config.listen.drain_seconds,
            )
            logging.shutdown()
            os._exit(0)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        admin = _admin_server(path, config, None) if config.admin.enabled else None
        admin_task = asyncio.ensure_future(admin.serve()) if admin is not None else None
        log.info(
            "Crossway serving on http://%s:%d (admin on %s)",
            config.listen.host,
            config.listen.port,
            f"http://{config.admin.host}:{config.admin.port}" if admin else "off",
        )
        try:
            await server.serve()
        finally:
            if admin is not None and admin_task is not None:
                admin.should_exit = True
                await asyncio.gather(admin_task, return_exceptions=True)

    logging.getLogger("granian").setLevel(logging.ERROR)  # silence "embedded is experimental"
    uvloop.run(main())


def _admin_server(path: str, config: Config, multiproc_dir: str | None) -> Any:
    import uvicorn

    from crossway.server.admin import ConfigView, create_admin_app

    app = create_admin_app(ConfigView(path, config), multiproc_dir)
    uv_config = uvicorn.Config(
        app,
        host=config.admin.host,
        port=config.admin.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(uv_config)
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
    return server


def _start_admin(path: str, config: Config, multiproc_dir: str) -> Any:
    server = _admin_server(path, config, multiproc_dir)
    thread = threading.Thread(target=server.run, name="crossway-admin", daemon=True)
    thread.start()
    return server
