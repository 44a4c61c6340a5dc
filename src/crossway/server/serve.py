"""`crossway serve`: validate the config, start the admin plane and the granian workers."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Final

from crossway.config import Config
from crossway.config.serve_env import LogFormat, LogLevel
from crossway.config.tls import ListenTls, check_files, tls_files
from crossway.telemetry.log_format import logging_config

log = logging.getLogger("crossway")

SHUTDOWN_GRACE_SECONDS: Final = 5.0
"""After the drain time, how long shutdown may still take before the process exits anyway."""
LISTEN_BACKLOG: Final = 2048
MIN_CONNECTIONS_PER_WORKER: Final = 2048


def connections_per_worker() -> int:
    """How many connections one worker serves at once (granian's `backpressure`): the open-file
    limit, raised to its hard limit first, since every connection holds a descriptor.

    granian's default, the backlog over the workers (2048), let 2048 idle streams (SSE, MCP
    GET) stop a worker from answering anyone else; connections past the limit wait unserved.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return max(MIN_CONNECTIONS_PER_WORKER, soft)


def serve(
    config_path: str,
    config: Config,
    workers: int,
    *,
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
) -> None:
    """Run until SIGINT/SIGTERM; SIGHUP reloads the config in every worker.

    `config` is the serving config (`crossway.config.serve_env.load_serving_config`); the
    workers load it again the same way, from `CROSSWAY_CONFIG` and the inherited environment.
    """
    path = str(Path(config_path).resolve())
    os.environ["CROSSWAY_CONFIG"] = path
    logging_options = _granian_logging(log_level, log_format)
    if workers == 1 and os.environ.get("CROSSWAY_SUPERVISOR") != "1":
        _serve_single(path, config, logging_options)
        return
    # Metrics of every worker process land here; the admin plane aggregates them.
    multiproc_dir = tempfile.mkdtemp(prefix="crossway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir

    from granian.constants import Interfaces, Loops
    from granian.server import MPServer

    admin = _start_admin(path, config, multiproc_dir) if config.admin.enabled else None
    tls = config.listen.tls
    tls_stamp = _stamps(tls)

    class CrosswayServer(MPServer):  # type: ignore[misc]
        """granian's server, except SIGHUP reloads config in place instead of respawning —
        unless the listener's certificate files changed: workers read them when they start,
        so then granian's graceful respawn runs (new workers, new certificates and config)."""

        def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
            nonlocal tls_stamp
            if tls is not None and _stamps(tls) != tls_stamp:
                try:
                    check_files(tls)
                except ValueError as exc:
                    log.error(
                        "listener TLS files changed but do not load, keeping the old: %s", exc
                    )
                else:
                    tls_stamp = _stamps(tls)
                    log.info("listener TLS files changed: respawning workers to load them")
                    super().signal_handler_reload(*args, **kwargs)  # type: ignore[no-untyped-call]
                    return
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
        loop=Loops.uvloop,  # "auto" would pick rloop whenever it is importable (measured: slower)
        factory=True,
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=int(config.listen.drain_seconds) + 5,
        backlog=LISTEN_BACKLOG,
        backpressure=connections_per_worker(),
        **logging_options,
        **tls_options(tls),
    )
    log.info(
        "Crossway serving on %s://%s:%d (admin on %s)",
        "https" if tls else "http",
        config.listen.host,
        config.listen.port,
        _admin_url(config) if admin else "off",
    )
    try:
        server.serve()
    finally:
        if admin is not None:
            admin.should_exit = True
        shutil.rmtree(multiproc_dir, ignore_errors=True)


def _serve_single(path: str, config: Config, logging_options: dict[str, Any]) -> None:
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
            backlog=LISTEN_BACKLOG,
            backpressure=connections_per_worker(),
            **logging_options,
            **tls_options(config.listen.tls),
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
            "Crossway serving on %s://%s:%d (admin on %s)",
            "https" if config.listen.tls else "http",
            config.listen.host,
            config.listen.port,
            _admin_url(config) if admin else "off",
        )
        try:
            await server.serve()
        finally:
            if admin is not None and admin_task is not None:
                admin.should_exit = True
                await asyncio.gather(admin_task, return_exceptions=True)

    uvloop.run(main())


def _granian_logging(log_level: LogLevel, log_format: LogFormat) -> dict[str, Any]:
    """granian's logging arguments: its loggers through ours, in every worker process too."""
    from granian.log import LogLevels

    return {
        "log_level": LogLevels(log_level),
        "log_dictconfig": logging_config(log_level, log_format),
    }


def _admin_url(config: Config) -> str:
    scheme = "https" if config.admin.tls is not None else "http"
    return f"{scheme}://{config.admin.host}:{config.admin.port}"


def tls_options(tls: ListenTls | None) -> dict[str, Any]:
    """granian's `ssl_*` arguments for the listener's TLS (none for plain HTTP).

    granian (rustls) takes the CA file and one flag: with a CA and `ssl_client_verify` a
    client certificate is required; with a CA alone one is asked for and verified if sent.
    """
    if tls is None:
        return {}
    from granian.constants import SSLProtocols

    options: dict[str, Any] = {
        "ssl_cert": Path(tls.cert_file),
        "ssl_key": Path(tls.key_file),
        "ssl_protocol_min": SSLProtocols.tls13 if tls.min_version == "1.3" else SSLProtocols.tls12,
    }
    if tls.client_auth != "none" and tls.client_ca_file is not None:
        options["ssl_ca"] = Path(tls.client_ca_file)
        options["ssl_client_verify"] = tls.client_auth == "required"
        options["ssl_crl"] = [Path(p) for p in tls.client_crl_files]
    return options


def _stamps(tls: ListenTls | None) -> tuple[float | None, ...]:
    """Modification times of the listener's TLS files (None for one that is missing)."""
    if tls is None:
        return ()
    stamps: list[float | None] = []
    for name in tls_files(tls):
        try:
            stamps.append(os.stat(name).st_mtime_ns / 1e9)
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def _admin_server(path: str, config: Config, multiproc_dir: str | None) -> Any:
    import uvicorn

    from crossway.server.admin import ConfigView, create_admin_app

    app = create_admin_app(ConfigView(path, config), multiproc_dir)
    uv_config = uvicorn.Config(
        app,
        host=config.admin.host,
        port=config.admin.port,
        log_level="warning",
        log_config=None,  # uvicorn's loggers go through the root handler (log_format)
        access_log=False,
        lifespan="on",  # closes the stores the key routes opened,
    )
    if config.admin.tls is not None:
        _admin_tls(uv_config, config.admin.tls)
    server = uvicorn.Server(uv_config)
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
    return server


def _admin_tls(uv_config: Any, tls: ListenTls) -> None:
    """HTTPS for the admin plane: uvicorn's TLS options, then the minimum version and CRLs
    on the context it builds (loaded here, so `serve()` keeps it)."""
    import ssl

    uv_config.ssl_certfile = tls.cert_file
    uv_config.ssl_keyfile = tls.key_file
    if tls.client_auth != "none" and tls.client_ca_file is not None:
        uv_config.ssl_ca_certs = tls.client_ca_file
        uv_config.ssl_cert_reqs = (
            ssl.CERT_REQUIRED if tls.client_auth == "required" else ssl.CERT_OPTIONAL
        )
    uv_config.load()
    context: ssl.SSLContext = uv_config.ssl
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    if tls.client_auth != "none":
        for crl in tls.client_crl_files:
            context.load_verify_locations(cafile=crl)
        if tls.client_crl_files:
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def _start_admin(path: str, config: Config, multiproc_dir: str) -> Any:
    server = _admin_server(path, config, multiproc_dir)
    thread = threading.Thread(target=server.run, name="crossway-admin", daemon=True)
    thread.start()
    return server
