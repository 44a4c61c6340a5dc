"""An open-loop Poisson load generator for OpenAI-compatible streaming chat endpoints.

Requests are sent at precomputed exponential inter-arrival times (open loop: a slow server does
not slow the sender down, so queues show up as TTFT, as in guidellm's and inference-perf's
`poisson` mode). Each request is streamed (`stream_options.include_usage`) and recorded:

- TTFT: from the moment it was sent to the first chunk with non-empty `delta.content`;
- end time, HTTP status, the `x-gateway-destination-endpoint` header (which server answered);
- prompt, output and cached prompt tokens from the final usage chunk
  (`usage.prompt_tokens_details.cached_tokens`).

Only the chunks that can hold the first token or the usage are decoded, so the client costs
little CPU per chunk (`client_cpu` in `LoadResult` says how much it used). Requests still open
when the drain deadline passes are cancelled and stay `finished=False`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import orjson

ENDPOINT_HEADER: Final = "x-gateway-destination-endpoint"
"""Response header naming the model server that answered (the EPP protocol's name)."""
CONNECT_TIMEOUT_S: Final = 10.0
"""Seconds a connection may take to open."""
START_DELAY_S: Final = 0.05
"""The first arrival is this far after the run starts (time to enter the loop)."""
HEADERS: Final = {"content-type": "application/json", "authorization": "Bearer bench"}


def poisson_arrivals(rate: float, duration_s: float, rng: random.Random) -> list[float]:
    """Send times (seconds from the start) of a Poisson process of `rate` per second over
    `duration_s` seconds."""
    if rate <= 0 or duration_s <= 0:
        return []
    out: list[float] = []
    at = rng.expovariate(rate)
    while at < duration_s:
        out.append(at)
        at += rng.expovariate(rate)
    return out


@dataclass(slots=True)
class Record:
    """One request's outcome. Times are seconds from the start of the run."""

    scheduled: float
    """When the arrival process wanted it sent."""
    sent: float = 0.0
    """When it was sent (lateness = sent - scheduled: the client's own delay)."""
    first_token: float | None = None
    """When the first content token arrived."""
    end: float | None = None
    """When the stream ended (None: cancelled at the drain deadline, or failed)."""
    status: int = 0
    """HTTP status (0: no answer)."""
    finished: bool = False
    """A 200 whose stream ended with `[DONE]` (or the body's end)."""
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    endpoint: str = ""
    """`x-gateway-destination-endpoint` of the answer (else the host:port it was sent to)."""
    error: str = ""
    tag: str = ""
    """What the workload says this request is (e.g. its group or adapter)."""

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.sent


@dataclass
class LoadResult:
    """One open-loop run: its records and what the client itself cost."""

    rate: float
    duration_s: float
    records: list[Record]
    wall_s: float
    client_cpu_s: float
    lateness_p99_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client_cpu_share(self) -> float:
        """Share of one core the load generator used while it ran."""
        return self.client_cpu_s / self.wall_s if self.wall_s else 0.0


def _first_content(payload: bytes) -> bool:
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or choice.get("text"):
            return True
    return False


def _read_usage(payload: bytes, record: Record) -> None:
    try:
        usage = orjson.loads(payload).get("usage")
    except orjson.JSONDecodeError:
        return
    if not isinstance(usage, dict):
        return
    record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    record.output_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    record.cached_tokens = int(details.get("cached_tokens") or 0)


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    record: Record,
    start: float,
    loop: asyncio.AbstractEventLoop,
) -> None:
    record.sent = loop.time() - start
    record.endpoint = urlsplit(url).netloc  # replaced by the gateway's header when it has one
    content_chunks = 0
    try:
        async with session.post(url, data=body, headers=HEADERS) as resp:
            record.status = resp.status
            record.endpoint = resp.headers.get(ENDPOINT_HEADER, record.endpoint)
            if resp.status != 200:
                text = await resp.read()
                record.error = f"HTTP {resp.status}: {text[:200].decode(errors='replace')}"
                record.end = loop.time() - start
                return
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                if b'"prompt_tokens"' in payload:
                    _read_usage(payload, record)
                if b'"content"' in payload or b'"text"' in payload:
                    if record.first_token is None:
                        if _first_content(payload):
                            record.first_token = loop.time() - start
                            content_chunks += 1
                    else:
                        content_chunks += 1
            record.end = loop.time() - start
            record.finished = True
            if record.output_tokens == 0:
                record.output_tokens = content_chunks
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:300]
        record.end = loop.time() - start


async def run_open_loop(
    url: str | Sequence[str],
    bodies: Sequence[bytes],
    arrivals: Sequence[float],
    *,
    rate: float,
    duration_s: float,
    drain_s: float,
    tags: Sequence[str] | None = None,
) -> LoadResult:
    """Send `bodies[i]` at `arrivals[i]` seconds from now to `url` (a chat-completions URL,
    or several taken in turn: client-side round-robin), wait at most `drain_s` seconds after the
    end of the arrivals, then cancel what is left."""
    urls = [url] if isinstance(url, str) else list(url)
    if len(bodies) < len(arrivals):
        raise ValueError("fewer bodies than arrivals")
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0, force_close=False, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
    records = [Record(scheduled=at, tag=tags[i] if tags else "") for i, at in enumerate(arrivals)]
    cpu0, wall0 = time.process_time(), time.monotonic()
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        start = loop.time() + START_DELAY_S
        tasks: list[asyncio.Task[None]] = []
        for i, at in enumerate(arrivals):
            delay = start + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(
                    _one(session, urls[i % len(urls)], bodies[i], records[i], start, loop)
                )
            )
        end_of_arrivals = start + max(duration_s, arrivals[-1] if arrivals else 0.0)
        if tasks:
            _, pending = await asyncio.wait(
                tasks, timeout=max(0.0, end_of_arrivals + drain_s - loop.time())
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    wall = time.monotonic() - wall0
    lateness = sorted(r.sent - r.scheduled for r in records)
    p99 = lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))] if lateness else 0.0
    return LoadResult(
        rate=rate,
        duration_s=duration_s,
        records=records,
        wall_s=wall,
        client_cpu_s=time.process_time() - cpu0,
        lateness_p99_s=p99,
    )


def chat_body(
    model: str, messages: list[dict[str, str]], max_tokens: int, *, stream: bool = True
) -> bytes:
    """An OpenAI chat-completions request body (streamed, with usage)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)
