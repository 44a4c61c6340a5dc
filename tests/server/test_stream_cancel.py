"""A client that leaves a stream ends the upstream stream too, every time.

Regression: with the reqwest engine, a cancellation landing just as a chunk arrived was lost
inside pyreqwest's awaitable, and the gateway kept relaying an abandoned stream until the
upstream ended it (1-6 % of streams; unbounded for an endless one). 300 streams through a real
`crossway serve` to a paced upstream (`bench/paced_upstream.py`: a chunk every 50 ms, never
ending), all clients close at once: every upstream stream must be closed within seconds, and
the gateway's in-flight count must drop to zero.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from bench.procs import free_port

from bench import scale

STREAMS: Final = 300
INTERVAL_S: Final = 0.05


@pytest.fixture
def paced(tmp_path: Path) -> Iterator[scale.Upstream]:
    upstream = scale.Upstream(free_port())
    upstream.process = scale.start_paced(upstream.port, INTERVAL_S, tmp_path)
    try:
        yield upstream
    finally:
        scale.stop_process(upstream.process)


async def _in_flight(admin: int) -> float:
    _, raw = await scale.http_get(admin, "/metrics")
    for line in raw.decode().splitlines():
        if line.startswith("crossway_requests_in_flight"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no crossway_requests_in_flight metric")


async def _leave_streams(port: int, admin: int, paced: scale.Upstream) -> tuple[int, float]:
    for _ in range(2):
        streams = await scale.open_streams(port, [scale.chat_request(port, stream=True)] * STREAMS)
        assert await scale.wait_until(
            lambda held=streams: all(s.events >= 3 for s in held), 20, 0.05
        )
        for stream in streams:
            stream.close()
        for _ in range(50):
            if (await paced.stats())["open"] == 0 and await _in_flight(admin) == 0:
                break
            await asyncio.sleep(0.1)
    return (await paced.stats())["open"], await _in_flight(admin)


def test_every_left_stream_closes_its_upstream(paced: scale.Upstream, tmp_path: Path) -> None:
    server, port, admin = scale.start_crossway(
        "cancel",
        "scale-llm",
        workers=1,
        cpus=scale.BOTH_CPUS,
        env={"OPENAI_BASE_URL": f"http://127.0.0.1:{paced.port}/v1"},
        work=tmp_path,
    )
    try:
        still_open, in_flight = asyncio.run(_leave_streams(port, admin, paced))
    finally:
        server.stop()
    assert still_open == 0, f"{still_open} upstream streams outlived their client"
    assert in_flight == 0
