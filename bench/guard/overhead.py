"""What the guardrails cost: per 1 KB request and per streamed KB, all built-in detectors on.

Two measures, both in process (CPU time, best of rounds; no network, so the figures are the
guard's own work and not the machine's noise):

- `content`: `guard_content` over the slots of a 1 KB chat request (the policy alone);
- `gateway`: the whole gateway (examples/openai.yaml's app, driven with ASGI messages like
  bench/passthrough_micro, the upstream client faked) without a guard and with a guard on the
  route: a 1 KB JSON request, and a stream of `--stream-kb` KB of answer text in token-sized
  events (one event per network chunk, as model servers send them). The stream figure is CPU
  per streamed KB and the throughput ratio (guarded / plain requests per CPU-second).

    .venv/bin/python -m bench.guard.overhead [--rounds 5] [--requests 2000] [--json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import orjson
import uvloop

from bench import passthrough_micro as micro
from crossway.config import load_config
from crossway.config.guardrails import GuardrailsConfig
from crossway.guard.content import string_slots
from crossway.policy.base import PolicyChain
from crossway.policy.guardrails import GuardrailPolicy, guard_content
from crossway.proxy import client
from crossway.server.app import GatewayApp
from crossway.server.context import RequestContext
from crossway.server.runtime import build_runtime

REPO: Final = Path(__file__).resolve().parents[2]
ALL_DETECTORS: Final[list[dict[str, Any]]] = [
    {"type": "pii", "action": "mask"},  # every PII entity
    {"type": "secrets", "action": "mask"},
    {"type": "injection", "action": "log"},
    {"type": "regex", "name": "ticket", "pattern": r"TICKET-[0-9]{4,8}", "action": "mask"},
    {
        "type": "words",
        "name": "codenames",
        "words": ["bluebird", "red falcon", "nightjar"],
        "action": "mask",
    },
]
PROSE: Final = (
    "The quarterly report covers revenue, churn and the roadmap for the next two releases. "
    "Customers asked for better exports, faster search and clearer invoices; support tickets "
    "fell by a fifth after the onboarding change. Version 2.4.1 ships on 2026-03-14 at 09:30. "
)


def prose(n: int) -> str:
    """`n` characters of plain business prose (nothing a detector should find)."""
    return (PROSE * (n // len(PROSE) + 1))[:n]


def request_1kb(stream: bool) -> bytes:
    """A chat request of about 1 KB: a system prompt and one user turn."""
    return orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "stream": stream,
            "messages": [
                {"role": "system", "content": "You are a concise assistant for analysts."},
                {"role": "user", "content": prose(900)},
            ],
        }
    )


def stream_body(kb: int) -> list[bytes]:
    """An OpenAI chat stream of `kb` KB of answer text, one ~4-character token per event."""
    text = prose(kb * 1024)
    events = [micro.fixtures._openai_chunk({"role": "assistant", "content": ""}, None)]
    events += [
        micro.fixtures._openai_chunk({"content": text[i : i + 4]}, None)
        for i in range(0, len(text), 4)
    ]
    events.append(micro.fixtures._openai_chunk({}, "stop"))
    events.append(
        micro.fixtures._openai_chunk(
            {}, None, usage={"prompt_tokens": 250, "completion_tokens": kb * 256, "total_tokens": 1}
        )
    )
    events.append(b"data: [DONE]\n\n")
    return events


def config_text(guarded: bool) -> str:
    base = (REPO / "examples" / "openai.yaml").read_text()
    if not guarded:
        return base
    policy = orjson.dumps(
        [{"type": "guardrails", "name": "all", "detectors": ALL_DETECTORS}]
    ).decode()
    return base.replace(
        "    backend: openai\n", f"    backend: openai\n    policies: {policy}\n", 1
    )


async def measure_content(rounds: int, requests: int) -> float:
    """CPU µs of `guard_content` on one 1 KB request's slots."""
    policy = GuardrailPolicy(
        GuardrailsConfig(type="guardrails", name="all", detectors=ALL_DETECTORS)
    )
    ctx = RequestContext("r", "b", "id", "/v1/chat/completions", chain=PolicyChain([policy]))
    body = orjson.loads(request_1kb(False))
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(requests):
            slots = string_slots(body["messages"], "message", [], frozenset({"role"}))
            await guard_content(ctx, slots, "request")
        best = min(best, (time.process_time() - start) / requests * 1e6)
    return best


async def measure_gateway(guarded: bool, rounds: int, requests: int, kb: int) -> dict[str, float]:
    """CPU µs per JSON request and per streamed request through the whole gateway."""
    events = stream_body(kb)
    micro.install_fake_client()

    async def iter_body(resp: Any, *args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        if resp.body is micro.STREAM:
            for event in events:
                yield event
        else:
            yield resp.body

    client.iter_body = iter_body  # type: ignore[assignment]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config_text(guarded))
    try:
        app = GatewayApp(f.name)
        app.runtime = await build_runtime(load_config(f.name))
    finally:
        os.unlink(f.name)
    out: dict[str, float] = {}
    for name, body, n in (
        ("json", request_1kb(False), requests),
        ("sse", request_1kb(True), max(1, requests // (kb * 8))),
    ):
        for _ in range(max(5, n // 10)):
            await micro.one(app, body)
        best = float("inf")
        for _ in range(rounds):
            start = time.process_time()
            for _ in range(n):
                await micro.one(app, body)
            best = min(best, (time.process_time() - start) / n * 1e6)
        out[name] = best
    return out


async def run(rounds: int, requests: int, kb: int) -> dict[str, Any]:
    os.environ.setdefault("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    content = await measure_content(rounds, requests)
    plain = await measure_gateway(False, rounds, requests, kb)
    guarded = await measure_gateway(True, rounds, requests, kb)
    return {
        "content_us_per_1kb_request": round(content, 1),
        "json_us": {"plain": round(plain["json"], 1), "guarded": round(guarded["json"], 1)},
        "json_added_us": round(guarded["json"] - plain["json"], 1),
        "stream_kb": kb,
        "sse_us_per_kb": {
            "plain": round(plain["sse"] / kb, 1),
            "guarded": round(guarded["sse"] / kb, 1),
        },
        "sse_throughput_ratio": round(plain["sse"] / guarded["sse"], 3),
    }


def report(r: dict[str, Any]) -> str:
    lines = [
        "| measure | no guard | all detectors | added | goal |",
        "|---|---|---|---|---|",
        f"| `guard_content` on a 1 KB request | - | {r['content_us_per_1kb_request']} µs | "
        f"{r['content_us_per_1kb_request']} µs | ≤ 100 µs |",
        f"| gateway, 1 KB JSON request | {r['json_us']['plain']} µs | {r['json_us']['guarded']} µs"
        f" | {r['json_added_us']} µs | ≤ 100 µs |",
        f"| gateway, streamed answer per KB ({r['stream_kb']} KB, 4-char events) | "
        f"{r['sse_us_per_kb']['plain']} µs | {r['sse_us_per_kb']['guarded']} µs | "
        f"throughput x{r['sse_throughput_ratio']} | ≥ x0.95 |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--stream-kb", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = uvloop.run(run(args.rounds, args.requests, args.stream_kb))
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(report(result))


if __name__ == "__main__":
    main()
