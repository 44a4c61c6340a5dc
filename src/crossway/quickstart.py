"""`make run`: start the local sample upstreams, then Crossway with examples/quickstart.yaml.

The sample model server listens on 127.0.0.1:9101, the sample MCP server on 127.0.0.1:9102,
two simulated model servers (an inference pool, `sim-model`) on 127.0.0.1:9103 and :9104, and
the sample A2A agents `writer` and `vision` on 127.0.0.1:9201 and :9202 (override with
SAMPLE_LLM_PORT / SAMPLE_MCP_PORT / SAMPLE_POOL_PORTS (comma-separated) /
SAMPLE_A2A_WRITER_PORT / SAMPLE_A2A_VISION_PORT); Crossway on
CROSSWAY_PORT (8080) with its admin plane on CROSSWAY_ADMIN_PORT (15000). Ctrl-C stops
everything.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
READY_SECONDS = 60.0


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"quickstart: {what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"quickstart: {what} did not start on port {port}")


def main() -> int:
    llm_port = int(os.environ.get("SAMPLE_LLM_PORT", "9101"))
    mcp_port = int(os.environ.get("SAMPLE_MCP_PORT", "9102"))
    pool_ports = [
        int(p) for p in os.environ.get("SAMPLE_POOL_PORTS", "9103,9104").split(",") if p.strip()
    ]
    a2a_ports = {
        "writer": int(os.environ.get("SAMPLE_A2A_WRITER_PORT", "9201")),
        "vision": int(os.environ.get("SAMPLE_A2A_VISION_PORT", "9202")),
    }
    env = {
        **os.environ,
        "SAMPLE_LLM_URL": f"http://127.0.0.1:{llm_port}/v1",
        "SAMPLE_MCP_URL": f"http://127.0.0.1:{mcp_port}/mcp",
        "SAMPLE_POOL_ENDPOINTS": ",".join(f"http://127.0.0.1:{p}/v1" for p in pool_ports),
        **{f"A2A_{n.upper()}_URL": f"http://127.0.0.1:{p}" for n, p in a2a_ports.items()},
    }
    config = os.environ.get("CROSSWAY_QUICKSTART_CONFIG", str(CONFIG))
    children: list[subprocess.Popen[bytes]] = []
    try:
        llm = subprocess.Popen(
            [sys.executable, "-m", "crossway.samples.openai_server", "--port", str(llm_port)]
        )
        children.append(llm)
        mcp = subprocess.Popen(
            [sys.executable, "-m", "crossway.samples.mcp_server", "--port", str(mcp_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        children.append(mcp)
        sims = []
        for port in pool_ports:
            command = ["-m", "crossway.samples.model_server", "--port", str(port)]
            sims.append(
                subprocess.Popen(
                    [sys.executable, *command, "--time-factor", "0.2"],
                    stdout=subprocess.DEVNULL,
                )
            )
            children.append(sims[-1])
        agents: dict[str, subprocess.Popen[bytes]] = {}
        for name, port in a2a_ports.items():
            command = ["-m", "crossway.samples.a2a_agents", "--agent", name, "--port", str(port)]
            agents[name] = subprocess.Popen([sys.executable, *command])
            children.append(agents[name])
        _wait_port(llm_port, llm, "sample model server")
        _wait_port(mcp_port, mcp, "sample MCP server")
        for port, sim in zip(pool_ports, sims, strict=True):
            _wait_port(port, sim, "simulated model server")
        for name, port in a2a_ports.items():
            _wait_port(port, agents[name], f"sample A2A agent {name}")
        a2a = ", ".join(f"{n} on :{p}" for n, p in a2a_ports.items())
        print(
            f"quickstart: sample model on :{llm_port}, sample MCP server on :{mcp_port}, "
            f"simulated model servers (pool) on {', '.join(f':{p}' for p in pool_ports)}, "
            f"sample A2A agents {a2a}",
            flush=True,
        )
        gateway = subprocess.Popen(
            [sys.executable, "-m", "crossway", "serve", "--config", config], env=env
        )
        admin_port = os.environ.get("CROSSWAY_ADMIN_PORT", "15000")
        print(f"quickstart: console at http://127.0.0.1:{admin_port}/ui", flush=True)
        children.append(gateway)
        return gateway.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
