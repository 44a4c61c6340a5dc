"""Shared fixtures: the sample OpenAI-compatible upstream, started in-process on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from crossway.samples.openai_server import create_app
from tests.helpers import free_port, http_status, wait_for


@pytest.fixture
async def sample_openai() -> AsyncIterator[str]:
    """Base URL (`.../v1`) of a running sample model server (in this test's event loop)."""
    runner = web.AppRunner(create_app())
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def _sample_process() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossway.samples.openai_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: http_status(f"http://127.0.0.1:{port}/v1/models") == 200, what="sample server"
        )
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def sample_openai_process() -> Iterator[str]:
    """Base URL of a sample model server in its own process (for sync tests and load)."""
    with _sample_process() as url:
        yield url


@pytest.fixture(scope="module")
def sample_openai_module() -> Iterator[str]:
    """Like `sample_openai_process`, shared by a test module."""
    with _sample_process() as url:
        yield url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Close the upstream client's pools a test left open while the interpreter is still up:
    the reqwest engine's Tokio thread must not drop connections during interpreter shutdown."""
    from crossway.proxy import client

    asyncio.run(client.close_clients())
