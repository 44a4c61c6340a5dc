"""The processes of the inference bench: model-server simulators and `crossway serve` with an
inference pool over them, plus what the bench reads from the simulators' `/metrics`."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from bench.procs import free_port

REPO: Final = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
POLL_S: Final = 0.05
METRICS_INTERVAL_S: Final = 0.05
"""The pool's scrape interval in the bench (the smallest allowed): the simulators run faster
than real time, so their state changes faster than a real server's."""

ADAPTER_LOADS: Final = "vllm:lora_loads_total"
"""The simulator's own counter of LoRA adapter loads (vLLM has no such metric)."""
PREFIX_QUERIES: Final = "vllm:prefix_cache_queries_total"
PREFIX_HITS: Final = "vllm:prefix_cache_hits_total"
RUNNING: Final = "vllm:num_requests_running"
WAITING: Final = "vllm:num_requests_waiting"

POLICIES: Final[dict[str, dict[str, Any] | None]] = {
    "round-robin": {"scorers": {}, "picker": "round_robin"},
    "least-queue": {"scorers": {"queue": 1}},
    "prefix-only": {"scorers": {"prefix": 1}},
    "default": None,
}
"""Scheduler config of each compared policy (None: no `scheduler` key, Crossway's default)."""


@dataclass
class Process:
    """A process the bench started (in its own session, so its group can be stopped)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def cpu_s(self) -> float:
        """User + system CPU of the process (its children not counted)."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sim(Process):
    """One model-server simulator."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def endpoint(self) -> str:
        """Its name in `x-gateway-destination-endpoint`."""
        return f"127.0.0.1:{self.port}"


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _wait_http(process: Process, path: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(
                f"{process.name} exited ({process.popen.returncode}):\n{process.log_tail()}"
            )
        try:
            status, _ = _get(process.port, path)
            if status == 200:
                return
            last = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(POLL_S)
    process.stop()
    raise RuntimeError(
        f"{process.name} not ready after {timeout_s:.0f}s ({last})\n{process.log_tail()}"
    )


def _popen(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def sim_argv(port: int, sim_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "crossway.samples.model_server", "--port", str(port), *sim_args]


def start_sims(count: int, sim_args: list[str], work: Path) -> list[Sim]:
    """`count` simulators with `sim_args`, each on a free port, ready."""
    sims: list[Sim] = []
    try:
        for i in range(count):
            port = free_port()
            log = work / "logs" / f"sim-{i}.log"
            sims.append(Sim(f"sim-{i}", _popen(sim_argv(port, sim_args), log), log, port))
        for sim in sims:
            _wait_http(sim, "/health")
    except BaseException:
        for sim in sims:
            sim.stop()
        raise
    return sims


def pool_config(
    sims: list[Sim], policy: str, port: int, admin: int, *, interval: float = METRICS_INTERVAL_S
) -> dict[str, Any]:
    """A Crossway config: one route `/v1` to an LLM backend whose only provider is an inference
    pool over `sims`, scheduled by `policy` (a key of POLICIES). No model list: any model name
    (base or adapter) goes to the pool unchanged."""
    pool: dict[str, Any] = {
        "endpoints": [sim.base_url for sim in sims],
        "metrics": {"interval": interval},
    }
    scheduler = POLICIES[policy]
    if scheduler is not None:
        pool["scheduler"] = scheduler
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"port": admin},
        "routes": [{"name": "llm", "match": {"path": {"prefix": "/v1"}}, "backend": "models"}],
        "backends": {
            "models": {
                "type": "llm",
                "providers": {"sims": {"type": "inference_pool", "pool": pool}},
            }
        },
    }


def start_gateway(sims: list[Sim], policy: str, work: Path) -> Process:
    """`crossway serve` (one worker) with an inference pool over `sims` under `policy`."""
    port, admin = free_port(), free_port()
    config = work / f"crossway-{policy}.yaml"
    config.write_text(json.dumps(pool_config(sims, policy, port, admin), indent=2))  # JSON is YAML
    log = work / "logs" / f"crossway-{policy}.log"
    argv = [sys.executable, "-m", "crossway", "serve", "--config", str(config), "--workers", "1"]
    process = Process(
        f"crossway-{policy}", _popen(argv, log, {"CROSSWAY_LOG_LEVEL": "warning"}), log, port
    )
    gateway_admin = Process(process.name, process.popen, log, admin)
    _wait_http(gateway_admin, "/readyz")
    return process


def scrape(sim: Sim) -> dict[str, float]:
    """The simulator's counters and gauges the bench reads (summed over label sets)."""
    out = dict.fromkeys((ADAPTER_LOADS, PREFIX_QUERIES, PREFIX_HITS, RUNNING, WAITING), 0.0)
    try:
        status, body = _get(sim.port, "/metrics")
    except (OSError, http.client.HTTPException):
        return out
    if status != 200:
        return out
    for family in text_string_to_metric_families(body.decode(errors="replace")):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name] += sample.value
    return out


def wait_idle(sims: list[Sim], timeout_s: float) -> bool:
    """Wait until no simulator has a request running or waiting (False: timed out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pages = [scrape(s) for s in sims]
        if all(page[RUNNING] + page[WAITING] == 0 for page in pages):
            return True
        time.sleep(POLL_S * 2)
    return False
