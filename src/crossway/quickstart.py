"""`make run`: start the local sample upstreams, then Crossway with examples/quickstart.yaml.

The sample model server listens on 127.0.0.1:9101 and the sample MCP server on 127.0.0.1:9102
(override with SAMPLE_LLM_PORT / SAMPLE_MCP_PORT); Crossway on CROSSWAY_PORT (8080) with its
admin plane on CROSSWAY_ADMIN_PORT (15000). Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
READY_SECONDS = 30.0


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
    env = {
        **os.environ,
        "SAMPLE_LLM_URL": f"http://127.0.0.1:{llm_port}/v1",
        "SAMPLE_MCP_URL": f"http://127.0.0.1:{mcp_port}/mcp",
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
        _wait_port(llm_port, llm, "sample model server")
        _wait_port(mcp_port, mcp, "sample MCP server")
        print(
            f"quickstart: sample model on :{llm_port}, sample MCP server on :{mcp_port}", flush=True
        )
        gateway = subprocess.Popen(
            [sys.executable, "-m", "crossway", "serve", "--config", config], env=env
        )
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
