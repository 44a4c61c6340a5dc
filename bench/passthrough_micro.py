"""In-process cost of Crossway's own layers on the OpenAI passthrough, without the network.

The gateway app (examples/openai.yaml) is driven directly with ASGI messages like granian's, and
`crossway.proxy.client` is replaced by a fake whose `send` answers at once: what is left is
everything between the server and the upstream client (routing, decoding, policies, usage,
metrics, the ASGI messages). Reports CPU microseconds per request (process time, best of
rounds), JSON and SSE.

    .venv/bin/python -m bench.passthrough_micro [--requests 20000] [--rounds 5] [--profile json]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import uvloop

from bench import fixtures
from crossway.config import load_config
from crossway.proxy import client
from crossway.server.app import GatewayApp
from crossway.server.runtime import build_runtime

REPO: Final = Path(__file__).resolve().parent.parent
CONFIG: Final = REPO / "examples" / "openai.yaml"
REQUEST: Final = fixtures.request_body(stream=False)
STREAM_REQUEST: Final = fixtures.request_body(stream=True)
ANSWER: Final = fixtures.openai_completion()
STREAM: Final = fixtures.openai_stream()
EVENTS: Final = [STREAM]
"""The stream as nginx serves the benchmark's fixture file: one read holds all of it."""


class FakeHeaders(dict[str, str]):
    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


class FakeResponse:
    def __init__(self, body: bytes, stream: bool) -> None:
        self.status = 200
        self.content_length = None if stream else len(body)
        kind = b"text/event-stream" if stream else b"application/json"
        self.headers = FakeHeaders({"content-type": kind.decode()})
        self.raw_headers = [(b"content-type", kind)]
        self.body = body

    def close(self) -> None:
        pass

    def release(self) -> None:
        pass


async def fake_send(
    method: str, url: str, headers: Any, body: bytes, *args: Any, **kwargs: Any
) -> FakeResponse:
    stream = b'"stream":true' in body
    return FakeResponse(STREAM if stream else ANSWER, stream)


async def fake_read_body(resp: FakeResponse, *args: Any, **kwargs: Any) -> bytes:
    return resp.body


async def fake_iter_body(resp: FakeResponse, *args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
    for event in EVENTS:
        yield event


def install_fake_client() -> None:
    client.send = fake_send  # type: ignore[assignment]
    client.read_body = fake_read_body  # type: ignore[assignment]
    client.iter_body = fake_iter_body  # type: ignore[assignment]


def scope_for(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"user-agent", b"wrk"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer sk-test"),
            (b"content-length", str(len(body)).encode()),
        ],
        "state": {},
    }


async def one(app: GatewayApp, body: bytes) -> int:
    sent = 0
    request = {"type": "http.request", "body": body, "more_body": False}

    messages = iter((request,))

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        nonlocal sent
        sent += 1

    await app(scope_for(body), receive, send)
    if sent < 2:
        raise RuntimeError("the gateway did not answer (has the client interface changed?)")
    return sent


async def run(requests: int, rounds: int, profile: str | None) -> dict[str, float]:
    os.environ.setdefault("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    install_fake_client()
    app = GatewayApp(str(CONFIG))
    app.runtime = await build_runtime(load_config(str(CONFIG)))
    results: dict[str, float] = {}
    for name, body in (("json", REQUEST), ("sse", STREAM_REQUEST)):
        for _ in range(500):
            await one(app, body)
        if profile == name:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(requests):
                await one(app, body)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        best = float("inf")
        for _ in range(rounds):
            start = time.process_time()
            for _ in range(requests):
                await one(app, body)
            best = min(best, (time.process_time() - start) / requests * 1e6)
        results[name] = best
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=("json", "sse"))
    args = parser.parse_args()
    results = uvloop.run(run(args.requests, args.rounds, args.profile))  # as granian's loop
    for name, us in results.items():
        print(f"{name}: {us:.1f} us/request (CPU, best of {args.rounds})")


if __name__ == "__main__":
    main()
