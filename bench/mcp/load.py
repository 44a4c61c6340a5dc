"""A light MCP load generator: N concurrent sessions, each calling one tool in a loop.

Speaks raw Streamable HTTP with aiohttp (initialize, notifications/initialized, then
`tools/call` or `tools/list` back to back), so every target is driven by the same client and
the client's own cost stays small and equal. Reads JSON or SSE answers.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

PROTOCOL = "2025-11-25"


@dataclass
class Result:
    sessions: int
    calls: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    errors: int = 0
    proxy_cpu_s: float | None = None
    """CPU seconds the proxy process used during the measured window (None: not measured)."""

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, round(p / 100 * (len(data) - 1)))]

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "calls": self.calls,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "calls_per_s": round(self.calls_per_s, 1),
            "p50_ms": round(self.pct(50), 3),
            "p99_ms": round(self.pct(99), 3),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 3) if self.latencies_ms else None,
            "proxy_cpu_us_per_call": round(self.proxy_cpu_s / self.calls * 1e6, 1)
            if self.proxy_cpu_s is not None and self.calls
            else None,
        }


class McpSession:
    """One client session over raw HTTP."""

    def __init__(
        self, http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
    ):
        self.http = http
        self.url = url
        self.headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            **(headers or {}),
        }
        self.ids = 0

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.ids += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.ids, "method": method}
        if params is not None:
            body["params"] = params
        async with self.http.post(self.url, data=orjson.dumps(body), headers=self.headers) as resp:
            raw = await resp.read()
            if method == "initialize":
                sid = resp.headers.get("mcp-session-id")
                if sid:
                    self.headers["mcp-session-id"] = sid
            if resp.status != 200:
                raise RuntimeError(f"{method}: HTTP {resp.status}: {raw[:200]!r}")
            if resp.content_type == "text/event-stream":
                for line in raw.splitlines():
                    if line.startswith(b"data:"):
                        message = orjson.loads(line[5:])
                        if message.get("id") == self.ids:
                            return _result(method, message)
                raise RuntimeError(f"{method}: no response in the stream")
            return _result(method, orjson.loads(raw))

    async def notify(self, method: str) -> None:
        body = orjson.dumps({"jsonrpc": "2.0", "method": method})
        async with self.http.post(self.url, data=body, headers=self.headers) as resp:
            await resp.read()

    async def open(self) -> None:
        await self.rpc(
            "initialize",
            {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "crossway-bench", "version": "1"},
            },
        )
        self.headers["mcp-protocol-version"] = PROTOCOL
        await self.notify("notifications/initialized")

    async def close(self) -> None:
        if "mcp-session-id" in self.headers:
            try:
                async with self.http.delete(self.url, headers=self.headers) as resp:
                    await resp.read()
            except aiohttp.ClientError:
                pass


def _result(method: str, message: dict[str, Any]) -> dict[str, Any]:
    if "error" in message:
        raise RuntimeError(f"{method}: {message['error']}")
    result = message["result"]
    if isinstance(result, dict) and result.get("isError"):
        raise RuntimeError(f"{method}: tool error {result}")
    return result  # type: ignore[no-any-return]


async def run(
    url: str,
    *,
    sessions: int,
    seconds: float,
    warmup: float,
    method: str = "tools/call",
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    cpu: Callable[[], float] | None = None,
) -> Result:
    """Open `sessions` sessions, warm up, then call `method` back to back for `seconds`."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as http:
        clients = [McpSession(http, url, headers) for _ in range(sessions)]
        await asyncio.gather(*(c.open() for c in clients))
        latencies: list[float] = []
        errors = 0
        calls = 0
        phase = {"measure": False, "stop": False}

        async def worker(client: McpSession) -> None:
            nonlocal errors, calls
            while not phase["stop"]:
                started = time.perf_counter()
                try:
                    await client.rpc(method, params)
                except Exception:
                    errors += 1 if phase["measure"] else 0
                    continue
                if phase["measure"]:
                    latencies.append((time.perf_counter() - started) * 1000)
                    calls += 1

        tasks = [asyncio.create_task(worker(c)) for c in clients]
        await asyncio.sleep(warmup)
        phase["measure"] = True
        cpu_before = cpu() if cpu else 0.0
        began = time.perf_counter()
        await asyncio.sleep(seconds)
        phase["stop"] = True
        elapsed = time.perf_counter() - began
        cpu_used = cpu() - cpu_before if cpu else None
        phase["measure"] = False
        await asyncio.gather(*tasks)
        await asyncio.gather(*(c.close() for c in clients))
        return Result(sessions, calls, elapsed, latencies, errors, cpu_used)
