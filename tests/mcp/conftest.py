"""Fixtures for MCP tests: real upstream MCP servers on free loopback ports, and helpers that
write gateway configs for them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, missing_component, wait_for

EVERYTHING_BIN = ROOT / "tests" / "node" / "node_modules" / ".bin" / "mcp-server-everything"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def spawn(args: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: proc.poll() is not None or port_open(port), what=f"{args[0]} on {port}")
    except TimeoutError:
        proc.kill()
        raise
    if proc.poll() is not None:
        raise RuntimeError(f"{args} exited with {proc.returncode}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def notes_server(transport: str, name: str = "notes") -> tuple[subprocess.Popen[bytes], str]:
    """Start the SDK-built notes server; returns (process, url)."""
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "tests.mcp.servers.notes", transport, str(port), "--name", name],
        port,
    )
    path = "/sse" if transport == "sse" else "/mcp"
    return proc, f"http://127.0.0.1:{port}{path}"


@pytest.fixture
def notes_http() -> Iterator[str]:
    proc, url = notes_server("streamable-http")
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture
def notes_sse() -> Iterator[str]:
    proc, url = notes_server("sse")
    try:
        yield url
    finally:
        stop(proc)


def everything_server(mode: str) -> tuple[subprocess.Popen[bytes], str]:
    """server-everything over `sse` or `streamableHttp`; returns (process, url)."""
    if not EVERYTHING_BIN.exists():
        missing_component("tests/node dependencies not installed (make node-deps)")
    port = free_port()
    proc = spawn([str(EVERYTHING_BIN), mode], port, env={"PORT": str(port)})
    path = "/sse" if mode == "sse" else "/mcp"
    return proc, f"http://127.0.0.1:{port}{path}"


def everything_stdio() -> str:
    """A `servers:` entry spawning server-everything over stdio."""
    if not EVERYTHING_BIN.exists():
        missing_component("tests/node dependencies not installed (make node-deps)")
    node = shutil.which("node") or "node"
    return f'{{type: stdio, command: "{node}", args: ["{EVERYTHING_BIN.resolve()}"]}}'


def notes_stdio(name: str = "notes") -> str:
    """A `servers:` entry spawning the notes server over stdio."""
    return (
        f'{{type: stdio, command: "{sys.executable}", '
        f'args: ["-m", "tests.mcp.servers.notes", "stdio", "--name", "{name}"], '
        f'cwd: "{ROOT}"}}'
    )


def mcp_config(servers: dict[str, str], extra: str = "") -> str:
    """A gateway config with one MCP backend (`tools`) serving every path."""
    lines = ["routes:", "  - {name: mcp, backend: tools}", "backends:", "  tools:", "    type: mcp"]
    lines += [f"    {line}" for line in extra.strip().splitlines() if line.strip()]
    lines.append("    servers:")
    lines += [f"      {name}: {entry}" for name, entry in servers.items()]
    return "\n".join(lines) + "\n"


__all__ = [
    "Path",
    "everything_server",
    "everything_stdio",
    "mcp_config",
    "notes_server",
    "notes_stdio",
    "stop",
]
