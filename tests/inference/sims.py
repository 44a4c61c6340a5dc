"""Simulated model servers (`python -m crossway.samples.model_server`) as subprocesses, for tests
of inference pools through a real `crossway serve`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import ROOT, free_port, http_status, wait_for


class Sim:
    """One simulator process on a fixed loopback port (so it can be restarted in place)."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of its OpenAI-compatible API."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def name(self) -> str:
        """How the EPP protocol (and `x-gateway-destination-endpoint`) names it."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> Sim:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crossway.samples.model_server",
                "--port",
                str(self.port),
                *self.args,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: http_status(f"http://127.0.0.1:{self.port}/health") == 200,
            what=f"simulator on :{self.port}",
        )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def fault(self, **faults: str) -> None:
        """Set the simulator's faults (`chat`, `metrics`, `gpu_metrics`)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/sim/fault",
            data=json.dumps(faults).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200

    def stats(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/sim/stats", timeout=5) as resp:
            data: dict[str, object] = json.loads(resp.read())
            return data


@contextmanager
def sims(count: int, *args: str) -> Iterator[list[Sim]]:
    """`count` simulators started with the same arguments."""
    started: list[Sim] = []
    try:
        for _ in range(count):
            started.append(Sim(*args).start())
        yield started
    finally:
        for sim in started:
            sim.stop()
