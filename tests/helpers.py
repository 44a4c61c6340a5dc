"""Test support: free ports, readiness waits, and a real `crossway serve` process per test.

Usage:
    with start_gateway(config_yaml) as gw:      # or `async with`
        httpx/openai client -> gw.url
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port nobody listens on right now (on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float = READY_TIMEOUT, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` until it is true (short backoff, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


@dataclass
class Gateway:
    """A running `crossway serve` process."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    port: int
    admin_port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def write_config(self, text: str) -> None:
        """Replace the config file atomically (what an operator's deploy does)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(text))
        os.replace(tmp, self.config_path)

    def sighup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


@contextlib.contextmanager
def start_gateway(
    config: str,
    *,
    env: dict[str, str] | None = None,
    workers: int = 1,
    port: int | None = None,
    admin_port: int | None = None,
) -> Iterator[Gateway]:
    """Start `crossway serve` with `config` (YAML text; `{port}` and `{admin_port}` are filled in
    when the text has no `listen:`/`admin:` section) and wait until it is ready."""
    port_given = port is not None
    port = port or free_port()
    admin_port = admin_port or free_port()
    tmpdir = Path(tempfile.mkdtemp(prefix="crossway-test-"))
    text = textwrap.dedent(config)
    if "listen:" not in text:
        text = f"listen:\n  port: {port}\n" + text
    if "admin:" not in text:
        text = f"admin:\n  port: {admin_port}\n" + text
    # Whether `port` is surely the data plane's (this function set it, or the caller said so).
    own_port = "listen:" not in textwrap.dedent(config) or port_given
    config_path = tmpdir / "config.yaml"
    config_path.write_text(text)
    log_path = tmpdir / "crossway.log"
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("CROSSWAY_PORT", str(port))
    full_env.setdefault("CROSSWAY_ADMIN_PORT", str(admin_port))
    full_env.setdefault("CROSSWAY_DATA_DIR", str(tmpdir / "data"))  # never the checkout's
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crossway",
                "serve",
                "--config",
                str(config_path),
                "--workers",
                str(workers),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
        )
    gw = Gateway(proc, config_path, port, admin_port, log_path, full_env)
    try:
        wait_for(
            lambda: proc.poll() is not None or http_status(gw.admin_url + "/readyz") == 200,
            what="gateway readiness",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gw.log()}")
        if own_port:
            # A single-process server can report ready a moment before its socket accepts.
            wait_for(
                lambda: proc.poll() is not None or _accepts(port),
                what="the data plane's listener",
            )
        yield gw
    finally:
        gw.stop()


@contextlib.asynccontextmanager
async def serve_admin(config_path: Path) -> AsyncIterator[str]:
    """The admin plane of `config_path` (`create_admin_app`, single-process metrics) under
    uvicorn on a free loopback port, whatever its `admin.host` says (as a container's 0.0.0.0
    is reached); yields its base URL."""
    import asyncio

    import uvicorn

    from crossway.config import load_config
    from crossway.server.admin import ConfigView, create_admin_app

    path = str(config_path)
    app = create_admin_app(ConfigView(path, load_config(path)), None)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "the admin server stopped before it started"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def missing_component(why: str) -> None:
    """Skip a test whose component (redis-server, node packages...) is not installed — except
    in CI (`CI` set), where a missing component is a failure: a suite must never go green by
    silently skipping what it was meant to test."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must install it: see .ci/run)")
    pytest.skip(why)


class RedisServer:
    """A real `redis-server` on one free loopback port that a test can stop, kill, pause and start
    again on that same port.

    Without `persistent` it keeps nothing (a restart comes back empty); with it, an append-only
    file fsync'ed on every write in the server's own directory, so a kill loses nothing written
    and a restart comes back with its data. `args` are passed on (`"--requirepass", "..."`). A
    missing binary is `missing_component` (a skip, or a failure in CI). Used as a context
    manager it is started on entry and stopped on exit."""

    def __init__(self, *args: str, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing_component("redis-server is not installed (.ci/run installs it with apt-get)")
            raise AssertionError("unreachable")  # missing_component skips or fails
        self.binary = binary
        self.port = free_port()
        self.args = list(args)
        self.persistent = persistent
        self.dir = tempfile.mkdtemp(prefix="crossway-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers (a password prompt counts as an answer)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        persistence = ("yes", "--appendfsync", "always") if self.persistent else ("no",)
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir),
                *("--save", "", "--appendonly", *persistence, *self.args),
            ],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(
            port=self.port,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),  # wait_for polls; the client must not back off too
        )

        def ready() -> bool:
            assert self.running, "redis-server exited"
            try:
                return bool(client.ping())
            except redis.AuthenticationError:
                return True  # up, and wants a password
            except redis.RedisError:
                return False  # not listening yet, or still loading its append-only file

        try:
            wait_for(ready, what="redis-server")
        except BaseException:
            self.kill()  # never leave a half-started server behind
            raise
        finally:
            client.close()

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` (SIGSTOP / SIGCONT: a hung Redis and its recovery)."""
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM (after a SIGCONT, in case it is paused) and wait for the exit."""
        if self.running:
            assert self.proc is not None
            self.signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL (a crash: no shutdown of its own) and wait for the exit."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A real `redis-server` on a free loopback port (no persistence); yields the port."""
    with RedisServer() as server:
        yield server.port
