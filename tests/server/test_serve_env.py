"""`crossway serve` environment overrides (issue 14): PORT / CROSSWAY_* variables, their
precedence (flag > environment > file), bad values, and the JSON or text log lines on stderr.

Most tests start the real `crossway serve` as a subprocess on free loopback ports.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import pty
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from crossway.config.serve_env import ServeEnvError, load_serving_config, read_serve_env
from crossway.server.app import GatewayApp
from crossway.telemetry.log_format import JsonFormatter
from tests.helpers import ROOT, free_port, http_status, wait_for

SERVE_VARIABLES = (
    "PORT",
    "CROSSWAY_PORT",
    "CROSSWAY_HOST",
    "CROSSWAY_ADMIN_HOST",
    "CROSSWAY_ADMIN_PORT",
    "CROSSWAY_WORKERS",
    "CROSSWAY_CONFIG",
    "CROSSWAY_LOG_LEVEL",
    "CROSSWAY_LOG_FORMAT",
    "CROSSWAY_SUPERVISOR",
)
STOP_SECONDS = 20


HTTP_BACKEND = """\
  web:
    type: http
    url: http://127.0.0.1:9
"""
MCP_BACKEND = """\
  web:
    type: mcp
    servers:
      one:
        type: streamable_http
        url: http://127.0.0.1:9/mcp
"""


def config_text(*, port: str | int, admin_port: str | int, backend: str = HTTP_BACKEND) -> str:
    return f"""\
listen:
  port: {port}
  drain_seconds: 2
admin:
  port: {admin_port}
routes:
  - name: web
    match:
      path:
        prefix: /
    backend: web
backends:
{backend}"""


def clean_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """This process's environment without any serve variable, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if k not in SERVE_VARIABLES}
    env["CROSSWAY_DATA_DIR"] = str(tmp_path / "data")
    env.update(overrides)
    return env


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    admin_port: int
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def ready_workers(self) -> int:
        return int(httpx.get(f"http://127.0.0.1:{self.admin_port}/readyz").json()["workers_ready"])


@contextlib.contextmanager
def serving(
    tmp_path: Path, args: list[str], env: dict[str, str], admin_port: int, *, workers: int = 1
) -> Iterator[Served]:
    """`crossway serve ARGS` with stderr to a file (not a terminal), until `workers` are ready."""
    stderr_path = tmp_path / f"stderr-{admin_port}.log"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "crossway", "serve", *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd=ROOT,
        )
    served = Served(proc, admin_port, stderr_path)
    url = f"http://127.0.0.1:{admin_port}/readyz"
    try:
        wait_for(
            lambda: (
                proc.poll() is not None
                or (http_status(url) == 200 and served.ready_workers() >= workers)
            ),
            what="crossway serve readiness",
        )
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{served.stderr()}"
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_serve(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`crossway serve` expected to refuse at once."""
    return subprocess.run(
        [sys.executable, "-m", "crossway", "serve", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


# -- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("CROSSWAY_PORT", "-1"),
        ("CROSSWAY_ADMIN_PORT", "8080x"),
        ("CROSSWAY_HOST", "not a host"),
        ("CROSSWAY_ADMIN_HOST", "bad_name!"),
        ("CROSSWAY_WORKERS", "0"),
        ("CROSSWAY_WORKERS", "two"),
        ("CROSSWAY_LOG_LEVEL", "verbose"),
        ("CROSSWAY_LOG_FORMAT", "xml"),
    ],
)
def test_a_bad_value_exits_2_with_one_line_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=free_port(), admin_port=free_port()))
    done = run_serve(tmp_path, ["--config", str(path)], clean_env(tmp_path, **{variable: value}))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"crossway: {variable}: {value!r}"), lines[0]
    assert "Traceback" not in done.stderr


def test_no_config_anywhere_is_a_clear_error(tmp_path: Path) -> None:
    done = run_serve(tmp_path, [], clean_env(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "crossway: CROSSWAY_CONFIG: not set and no --config given: say which config to serve"
    )
    missing = run_serve(tmp_path, [], clean_env(tmp_path, CROSSWAY_CONFIG=str(tmp_path / "no")))
    assert missing.returncode == 2
    assert missing.stderr.startswith("crossway: CROSSWAY_CONFIG: ") and "is not a file" in (
        missing.stderr
    )


def test_a_host_from_the_environment_meets_the_rules_of_the_file(tmp_path: Path) -> None:
    """Off loopback an MCP backend needs a strong session key, whichever way the host was set;
    the refusal comes before anything binds."""
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=free_port(), admin_port=free_port(), backend=MCP_BACKEND))
    ok = subprocess.run(
        [sys.executable, "-m", "crossway", "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        cwd=ROOT,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr  # on loopback a per-process key is used
    done = run_serve(
        tmp_path, ["--config", str(path)], clean_env(tmp_path, CROSSWAY_HOST="0.0.0.0")
    )
    assert done.returncode == 2, done.stderr
    assert "backends.web.session_key" in done.stderr
    assert "listen.host from CROSSWAY_HOST" in done.stderr
    assert "Traceback" not in done.stderr


def test_validate_checks_the_file_without_the_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=free_port(), admin_port=free_port()))
    done = subprocess.run(
        [sys.executable, "-m", "crossway", "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path, PORT="abc", CROSSWAY_LOG_FORMAT="xml"),
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ok (1 routes, 1 backends)" in done.stdout


# -- ports, config path and workers -------------------------------------------------------------


def test_port_overrides_the_file_and_its_default(tmp_path: Path) -> None:
    """PORT beats `${CROSSWAY_PORT:-N}` in the file; CROSSWAY_ADMIN_PORT beats a literal."""
    file_port, port, file_admin, admin = free_port(), free_port(), free_port(), free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=f"${{CROSSWAY_PORT:-{file_port}}}", admin_port=file_admin))
    env = clean_env(tmp_path, PORT=str(port), CROSSWAY_ADMIN_PORT=str(admin))
    with serving(tmp_path, ["--config", str(path)], env, admin):
        assert httpx.get(f"http://127.0.0.1:{port}/x").status_code == 502  # ours, upstream down
        assert refused(file_port) and refused(file_admin)


def test_crossway_port_wins_over_port(tmp_path: Path) -> None:
    port, platform_port, admin = free_port(), free_port(), free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=free_port(), admin_port=admin))
    env = clean_env(tmp_path, PORT=str(platform_port), CROSSWAY_PORT=str(port))
    with serving(tmp_path, ["--config", str(path)], env, admin):
        assert httpx.get(f"http://127.0.0.1:{port}/x").status_code == 502
        assert refused(platform_port)


def test_crossway_config_is_used_without_the_flag_and_the_flag_wins(tmp_path: Path) -> None:
    from_env, from_flag = tmp_path / "env.yaml", tmp_path / "flag.yaml"
    env_admin, flag_admin = free_port(), free_port()
    from_env.write_text(config_text(port=free_port(), admin_port=env_admin))
    from_flag.write_text(config_text(port=free_port(), admin_port=flag_admin))
    env = clean_env(tmp_path, CROSSWAY_CONFIG=str(from_env))
    with serving(tmp_path, [], env, env_admin):
        pass
    with serving(tmp_path, ["--config", str(from_flag)], env, flag_admin):
        assert refused(env_admin)


def test_crossway_workers_is_the_default_and_the_flag_wins(tmp_path: Path) -> None:
    admin = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=free_port(), admin_port=admin))
    env = clean_env(tmp_path, CROSSWAY_WORKERS="2")
    with serving(tmp_path, ["--config", str(path)], env, admin, workers=2) as served:
        assert served.ready_workers() == 2
    # Each worker process logs through the same JSON handler (granian applies it there too).
    started = [line["message"] for line in _json_lines(served.stderr())]
    assert "Started worker-1" in started and "Started worker-2" in started
    with serving(tmp_path, ["--config", str(path), "--workers", "1"], env, admin) as served:
        assert served.ready_workers() == 1
        assert "Spawning worker-1 with id" in served.stderr()  # the single-process server
    assert served.proc.returncode == 0


def test_the_admin_plane_shows_the_effective_listener(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=free_port(), admin_port=free_port()))
    env = clean_env(tmp_path, PORT=str(port), CROSSWAY_ADMIN_PORT=str(admin))
    with serving(tmp_path, ["--config", str(path)], env, admin):
        shown = httpx.get(f"http://127.0.0.1:{admin}/config").json()["config"]
    assert (shown["listen"]["port"], shown["admin"]["port"]) == (port, admin)


# -- the worker runtime: start and reload -------------------------------------------------------


async def test_the_worker_runtime_applies_the_overrides_at_start_and_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SERVE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    port, admin = free_port(), free_port()
    monkeypatch.setenv("PORT", str(port))
    monkeypatch.setenv("CROSSWAY_ADMIN_PORT", str(admin))
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=1111, admin_port=2222))
    app = GatewayApp(str(path))
    await app.startup()
    try:
        assert app.runtime is not None
        assert (app.runtime.config.listen.port, app.runtime.config.admin.port) == (port, admin)
        path.write_text(
            config_text(port=1111, admin_port=2222).replace("drain_seconds: 2", "drain_seconds: 3")
        )
        assert await app.reload()
        assert app.runtime.config.listen.drain_seconds == 3
        assert (app.runtime.config.listen.port, app.runtime.config.admin.port) == (port, admin)
        # The environment is read again at reload: a bad value now is a rejected reload.
        monkeypatch.setenv("PORT", "abc")
        path.write_text(config_text(port=1111, admin_port=2222))
        before = app.runtime
        assert not await app.reload()
        assert app.runtime is before
    finally:
        await app.shutdown()


def test_load_serving_config_reads_the_environment_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port="${CROSSWAY_PORT:-1234}", admin_port=2222))
    assert load_serving_config(path, {}).listen.port == 1234
    assert load_serving_config(path, {"CROSSWAY_PORT": ""}).listen.port == 1234  # empty: unset
    assert load_serving_config(path, {"CROSSWAY_PORT": "4321"}).listen.port == 4321
    assert load_serving_config(path, {"PORT": "5000"}).listen.port == 5000
    both = {"PORT": "5000", "CROSSWAY_PORT": "4321"}
    assert load_serving_config(path, both).listen.port == 4321
    # With CROSSWAY_PORT set, PORT is not read at all (it may mean another process's port).
    assert load_serving_config(path, {"PORT": "abc", "CROSSWAY_PORT": "4321"}).listen.port == 4321
    hosts = {"CROSSWAY_HOST": "::1", "CROSSWAY_ADMIN_HOST": "localhost"}
    config = load_serving_config(path, hosts)
    assert (config.listen.host, config.admin.host) == ("::1", "localhost")
    with pytest.raises(ServeEnvError) as info:
        read_serve_env({"CROSSWAY_ADMIN_PORT": "9" * 5000})
    assert str(info.value) == (
        "CROSSWAY_ADMIN_PORT: '" + "9" * 40 + "...' is not a port number (0-65535)"
    )
    assert read_serve_env({"CROSSWAY_LOG_LEVEL": "WARNING"}).log_level == "warning"


# -- log lines ----------------------------------------------------------------------------------


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        assert set(line) >= {"time", "level", "logger", "message"}, line
        stamp = str(line["time"])
        assert stamp.endswith("Z"), stamp
        parsed = datetime.datetime.fromisoformat(stamp)
        assert parsed.utcoffset() == datetime.timedelta(0)
    return lines


def test_logs_are_json_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    admin = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=free_port(), admin_port=admin))
    with serving(tmp_path, ["--config", str(path)], clean_env(tmp_path), admin) as served:
        with socket.create_connection(("127.0.0.1", admin)) as sock:  # uvicorn logs a warning
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            sock.recv(1024)
        wait_for(lambda: "Invalid HTTP request" in served.stderr(), what="uvicorn's warning")
    lines = _json_lines(served.stderr())
    by_logger = {str(line["logger"]): line for line in lines}
    assert by_logger["crossway"]["level"] == "info"
    assert str(by_logger["crossway"]["message"]).startswith("Crossway serving on http://")
    assert "_granian" in by_logger  # granian's own lines, through the same handler
    assert by_logger["uvicorn.error"]["level"] == "warning"
    assert not any("experimental" in str(line["message"]) for line in lines)


@pytest.mark.parametrize(
    ("env_format", "args", "expected"),
    [("text", [], "text"), ("text", ["--log-format", "json"], "json")],
)
def test_log_format_from_the_environment_and_the_flag(
    tmp_path: Path, env_format: str, args: list[str], expected: str
) -> None:
    admin = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=free_port(), admin_port=admin))
    env = clean_env(tmp_path, CROSSWAY_LOG_FORMAT=env_format)
    with serving(tmp_path, ["--config", str(path), *args], env, admin) as served:
        pass
    text = served.stderr()
    if expected == "json":
        assert _json_lines(text)
    else:
        assert " INFO crossway: Crossway serving on http://" in text
        assert " INFO _granian: Listening at: http://127.0.0.1:" in text
        assert not text.lstrip().startswith("{")


def test_logs_are_text_on_a_terminal(tmp_path: Path) -> None:
    admin = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=free_port(), admin_port=admin))
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossway", "serve", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=clean_env(tmp_path),
        cwd=ROOT,
    )
    os.close(follower)
    try:
        wait_for(
            lambda: (
                proc.poll() is not None or http_status(f"http://127.0.0.1:{admin}/readyz") == 200
            ),
            what="crossway serve readiness",
        )
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_SECONDS) == 0
    chunks = []
    with contextlib.suppress(OSError):  # EIO once the child's end is closed and read empty
        while chunk := os.read(leader, 65536):
            chunks.append(chunk)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert " INFO crossway: Crossway serving on http://" in text, text
    assert '"level"' not in text


@pytest.mark.parametrize(("args", "info_shown"), [([], False), (["--log-level", "info"], True)])
def test_log_level_from_the_environment_and_the_flag(
    tmp_path: Path, args: list[str], info_shown: bool
) -> None:
    admin = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config_text(port=free_port(), admin_port=admin))
    env = clean_env(tmp_path, CROSSWAY_LOG_LEVEL="warning")
    with serving(tmp_path, ["--config", str(path), *args], env, admin) as served:
        pass  # ready: "Crossway serving on" has been logged, if its level is shown
    lines = _json_lines(served.stderr())
    assert any(line["level"] == "info" for line in lines) == info_shown, lines
    assert ("Crossway serving on" in served.stderr()) == info_shown


def test_a_json_line_carries_the_exception_as_a_string() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord(
            "crossway", logging.ERROR, __file__, 1, "failed: %s", ("x",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "error" and data["logger"] == "crossway"
    assert data["message"] == "failed: x"
    assert isinstance(data["exc_info"], str)
    assert data["exc_info"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom\nsecond line" in data["exc_info"]
    odd = logging.LogRecord("crossway", logging.INFO, __file__, 1, "bytes \udcff", (), None)
    assert json.loads(JsonFormatter().format(odd))["message"] == "bytes \udcff"
