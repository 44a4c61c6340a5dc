"""Real a2a-sdk agents as upstreams for the A2A tests, each on a free loopback port.

    with run_agent("writer", version="1.0") as agent:
        agent.url        # http://127.0.0.1:PORT  (JSON-RPC at /, REST under /)
        agent.card_url   # .../.well-known/agent-card.json
        agent.calls      # every request that reached it (method, path, headers, JSON-RPC method)

The agents themselves are `crossway.samples.a2a_agents` (writer, vision, streamer, asker,
failer); `version` is "1.0", "0.3" (a v0.3-only agent with a plain v0.3 card) or "both".
Each is served by uvicorn in a thread; `run_agent` returns once it accepts connections.

    python -m tests.a2a.agents --agent writer --port N [--version 0.3]
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from crossway.samples import a2a_agents
from crossway.samples.a2a_agents import AGENTS, CARD_PATHS, Version, build_app
from tests.helpers import wait_for

STOP_SECONDS = 10.0

__all__ = ["AGENTS", "Call", "RunningAgent", "run_agent", "run_agents"]


@dataclass(frozen=True)
class Call:
    """One HTTP request that reached an agent."""

    http_method: str
    path: str
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    rpc_method: str | None
    """The JSON-RPC `method` (for a POST to `/`), else None."""
    body: Any
    """The JSON body (None when empty or not JSON)."""

    @property
    def binding(self) -> str:
        """`CARD`, `JSONRPC` or `HTTP+JSON`."""
        if self.path in CARD_PATHS:
            return "CARD"
        return "JSONRPC" if self.rpc_method is not None else "HTTP+JSON"

    @property
    def version(self) -> str:
        """The `A2A-Version` header sent ("" when absent, which means 0.3)."""
        return self.headers.get("a2a-version", "")


@dataclass
class RunningAgent:
    """A sample agent listening on loopback."""

    name: str
    version: Version
    port: int
    calls: list[Call] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def card_url(self) -> str:
        return self.url + CARD_PATHS[0]

    def rpc_methods(self) -> list[str]:
        """The JSON-RPC methods received, in order."""
        return [c.rpc_method for c in self.calls if c.rpc_method is not None]

    def protocol_calls(self) -> list[Call]:
        """The calls other than card fetches."""
        return [c for c in self.calls if c.binding != "CARD"]


class _Recorder:
    """ASGI wrapper appending a `Call` per HTTP request (the body is read once and replayed)."""

    def __init__(self, app: Any, calls: list[Call]) -> None:
        self.app = app
        self.calls = calls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rpc = None
        if scope["method"] == "POST" and scope["path"] == "/" and isinstance(body, dict):
            rpc = str(body.get("method"))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.calls.append(Call(scope["method"], scope["path"], headers, rpc, body))
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


@contextlib.contextmanager
def run_agent(
    name: str, version: Version = "1.0", *, public_url: str | None = None
) -> Iterator[RunningAgent]:
    """Serve sample agent `name` on a free loopback port until the block ends.

    `public_url` is the base URL its card names (default: its own loopback URL).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    agent = RunningAgent(name, version, int(sock.getsockname()[1]))
    app = _Recorder(build_app(name, public_url or agent.url, version), agent.calls)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"a2a-{name}", daemon=True
    )
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), what=f"A2A agent {name}")
        if not server.started:
            raise RuntimeError(f"A2A agent {name} did not start")
        yield agent
    finally:
        server.should_exit = True
        thread.join(STOP_SECONDS)
        if thread.is_alive():
            server.force_exit = True
            thread.join(STOP_SECONDS)
        sock.close()


@contextlib.contextmanager
def run_agents(names: Sequence[str], version: Version = "1.0") -> Iterator[dict[str, RunningAgent]]:
    """Several sample agents at once, by name."""
    with contextlib.ExitStack() as stack:
        yield {n: stack.enter_context(run_agent(n, version)) for n in names}


if __name__ == "__main__":
    a2a_agents.main()
