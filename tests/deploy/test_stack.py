"""The compose topology as real processes on loopback (no container engine runs here): nginx with
deploy/nginx.conf in front of two `crossway serve` replicas running deploy/crossway.yaml, one
redis-server, the sample upstream started with compose's own command line, and an OTLP/HTTP
receiver standing in for the collector. Only the listen addresses and ports are changed (to
loopback and free ports). A key made on one replica works on the other, the global rate limit is
counted across both, both replicas serve through the balancer, traces reach the collector, and
deploy/healthcheck.py tells a healthy admin plane from a dead one."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    ROOT,
    Gateway,
    RedisServer,
    free_port,
    http_status,
    missing_component,
    start_gateway,
    wait_for,
)

DEPLOY = ROOT / "deploy"
TOKEN = "stack-test-admin-token-0123456789"
RPM = 6


def request(
    url: str, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, Any]:
    """POST `body` (or GET) as JSON; the status and the decoded answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def chat(base: str, key: str, text: str) -> tuple[int, Any]:
    body = {"model": "sample-model", "messages": [{"role": "user", "content": text}]}
    return request(f"{base}/v1/chat/completions", body, key)


class OtlpReceiver:
    """Counts OTLP/HTTP trace exports (POST /v1/traces) on a loopback port."""

    def __init__(self) -> None:
        self.exports = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path == "/v1/traces":
                    receiver.exports += 1
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def sample_upstream() -> Iterator[int]:
    """The `upstream` service of compose.yaml: its own command, on a loopback port."""
    service = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["upstream"]
    command = list(service["entrypoint"])
    port = free_port()
    command[0] = sys.executable
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: (
                proc.poll() is not None or http_status(f"http://127.0.0.1:{port}/v1/models") == 200
            ),
            what="sample upstream",
        )
        assert proc.poll() is None, f"the upstream's command {command} exited"
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def replica_config(port: int, admin_port: int) -> str:
    """deploy/crossway.yaml with loopback addresses and these ports, and nothing else changed."""
    text = (DEPLOY / "crossway.yaml").read_text()
    for old, new in (
        ("host: 0.0.0.0", "host: 127.0.0.1"),
        ("port: 8080", f"port: {port}"),
        ("port: 15000", f"port: {admin_port}"),
    ):
        assert old in text, f"deploy/crossway.yaml no longer has {old!r}"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def nginx(replica_ports: list[int]) -> Iterator[int]:
    """deploy/nginx.conf in front of the replicas: service names become loopback ports, the
    listen port a free one, /tmp a private directory."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        missing_component("nginx is not installed (.ci/run installs it with apt-get)")
    assert binary is not None
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="crossway-nginx-"))
    workdir.chmod(0o755)  # worker processes run as another user when started as root
    text = (DEPLOY / "nginx.conf").read_text()
    for i, replica_port in enumerate(replica_ports, start=1):
        old = f"server crossway-{i}:8080"
        assert old in text
        text = text.replace(old, f"server 127.0.0.1:{replica_port}")
    assert "listen 8080;" in text
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    text = text.replace(" /tmp/", f" {workdir}/")
    text = text.replace("error_log /dev/stderr", f"error_log {workdir}/error.log")
    (workdir / "nginx.conf").write_text(text)
    log = (workdir / "stderr.log").open("wb")
    command = [binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf")]
    command += ["-g", "daemon off;", "-e", str(workdir / "error.log")]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: (
                proc.poll() is not None or http_status(f"http://127.0.0.1:{port}/lb-health") == 200
            ),
            what="nginx",
        )
        assert proc.poll() is None, (workdir / "stderr.log").read_text()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def stack() -> Iterator[tuple[int, list[Gateway], OtlpReceiver]]:
    """(the balancer's port, the two replicas, the trace receiver)."""
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        upstream = stack.enter_context(sample_upstream())
        otlp = stack.enter_context(OtlpReceiver())
        env = {
            "CROSSWAY_ADMIN_TOKEN": TOKEN,
            "REDIS_URL": redis.url,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export spans within 0.1 s, not 5 s
            "CROSSWAY_RPM": str(RPM),
        }
        replicas = []
        for _ in range(2):
            port, admin_port = free_port(), free_port()
            replicas.append(
                stack.enter_context(
                    start_gateway(
                        replica_config(port, admin_port),
                        env=env,
                        port=port,
                        admin_port=admin_port,
                    )
                )
            )
        lb = stack.enter_context(nginx([gw.port for gw in replicas]))
        yield lb, replicas, otlp


def served_chats(gw: Gateway) -> int:
    """Chat completions this replica's access log (JSON lines on stdout) recorded."""
    count = 0
    for line in gw.log().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and "/v1/chat/completions" in json.dumps(entry):
                count += 1
    return count


@pytest.mark.timeout(240)
def test_two_replicas_behind_nginx_share_keys_and_limits(
    stack: tuple[int, list[Gateway], OtlpReceiver],
) -> None:
    lb_port, (first, second), otlp = stack
    lb = f"http://127.0.0.1:{lb_port}"
    # The admin API wants the token; the probes do not.
    assert request(f"{first.admin_url}/keys")[0] == 401
    assert http_status(f"{first.admin_url}/healthz") == 200
    status, made = request(f"{first.admin_url}/keys", {"name": "stack"}, TOKEN)
    assert status in (200, 201), made
    key = made["key"]

    # Made on the first replica, known to the second within its key poll.
    answers: list[tuple[int, Any]] = []
    wait_for(
        lambda: answers.append(chat(second.url, key, "direct")) or answers[-1][0] == 200,
        what="the key on the second replica",
    )
    assert {s for s, _ in answers} <= {200, 401}
    assert answers[-1][1]["choices"][0]["message"]["content"] == "You said: direct"

    # RPM requests per key per minute across both replicas: one is spent, the rest go through
    # the balancer, and the next one is refused whichever replica takes it.
    for i in range(RPM - 1):
        status, answer = chat(lb, key, f"via the balancer {i}")
        assert status == 200, answer
        assert answer["choices"][0]["message"]["content"] == f"You said: via the balancer {i}"
    status, answer = chat(lb, key, "one too many")
    assert status == 429, answer
    assert answer["error"]["type"]  # an OpenAI-style error, no traceback

    # nginx spread the calls over both replicas.
    wait_for(lambda: served_chats(first) >= 2 and served_chats(second) >= 2, what="access logs")
    # Traces reached the collector.
    wait_for(lambda: otlp.exports > 0, what="an OTLP trace export")


def healthcheck(*args: str, admin_port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CROSSWAY_ADMIN_PORT": str(admin_port)}
    return subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthcheck_script() -> None:
    with start_gateway("routes: []\n") as gw:
        for path in ((), ("/healthz",), ("/readyz",)):
            result = healthcheck(*path, admin_port=gw.admin_port)
            assert result.returncode == 0, result.stderr
        result = healthcheck("/no-such-probe", admin_port=gw.admin_port)
        assert result.returncode == 1
        assert "answered 404" in result.stderr
    result = healthcheck(admin_port=free_port())  # nothing listens there
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy: http://127.0.0.1:")
    assert "Traceback" not in result.stderr
