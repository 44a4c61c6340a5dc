"""In-process cost of the translation paths, per request, in CPU microseconds.

What a translated request costs on top of a passthrough, piece by piece, on the benchmark's own
fixtures (bench/fixtures.py): building the upstream request (canonical chat -> Anthropic
Messages or Bedrock Converse, SigV4 signing included), translating the JSON answer, and
relaying the whole upstream stream into the client's `data:` events; plus the AWS event-stream
decoder alone, Crossway's against botocore's (`botocore.eventstream.EventStreamBuffer`).

Timed with the process's own CPU clock (`time.process_time`), best of `--rounds`, so other
work on the machine shows less in the figures; the proxy's HTTP and ASGI costs are not in them.

    .venv/bin/python -m bench.translation_micro [--rounds 5] [--seconds 0.5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.eventstream import EventStreamBuffer

from bench import fixtures
from crossway.config.llm import ProviderConfig
from crossway.llm import answers
from crossway.llm.calls import chat_call
from crossway.llm.providers.anthropic import AnthropicProvider
from crossway.llm.providers.base import Provider, UpstreamRequest
from crossway.llm.providers.bedrock import BedrockProvider
from crossway.llm.providers.eventstream import EventStreamDecoder

CLIENT_MODEL = fixtures.MODEL


def providers() -> dict[str, Provider]:
    anthropic = AnthropicProvider(
        "anthropic",
        ProviderConfig.model_validate(
            {"type": "anthropic", "api_key": "x", "base_url": "http://127.0.0.1:9"}
        ),
    )
    bedrock = BedrockProvider(
        "bedrock",
        ProviderConfig.model_validate(
            {
                "type": "bedrock",
                "region": "us-east-1",
                "aws_access_key_id": "AKIDBENCHEXAMPLE",
                "aws_secret_access_key": "bench-secret-access-key",
                "base_url": "http://127.0.0.1:9",
            }
        ),
    )
    return {"anthropic": anthropic, "bedrock": bedrock}


def _run(coro: Any) -> Any:
    """Drive a coroutine that never waits (chat_request once credentials are resolved)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine waited")


def cases(provs: dict[str, Provider]) -> dict[str, Callable[[], object]]:
    import asyncio

    asyncio.run(provs["bedrock"]._resolve())  # type: ignore[attr-defined]
    raw = {False: fixtures.request_body(stream=False), True: fixtures.request_body(stream=True)}
    answers_json = {
        "anthropic": fixtures.anthropic_message(),
        "bedrock": fixtures.bedrock_converse(),
    }
    streams = {"anthropic": fixtures.anthropic_stream(), "bedrock": fixtures.bedrock_stream()}
    out: dict[str, Callable[[], object]] = {}
    for name, provider in provs.items():

        def request(provider: Provider = provider, stream: bool = False) -> UpstreamRequest:
            call = chat_call(raw[stream])
            result: UpstreamRequest = _run(
                provider.chat_request(call.canonical(), call.model, stream)
            )
            return result

        def answer(provider: Provider = provider, data: bytes = answers_json[name]) -> object:
            return answers.translate_answer("chat", provider, data, CLIENT_MODEL, None)

        def relay(provider: Provider = provider, data: bytes = streams[name]) -> bytes:
            r = answers.ChatTranslated(provider.chat_stream(CLIENT_MODEL), CLIENT_MODEL, True)
            return r.feed(data) + r.finish()

        out[f"{name} request (json)"] = request
        out[f"{name} request (stream)"] = lambda request=request: request(stream=True)
        out[f"{name} answer"] = answer
        out[f"{name} stream relay"] = relay
    frames = streams["bedrock"]

    def ours() -> object:
        decoder = EventStreamDecoder()  # `feed_raw` (the hot path's) where there is one
        return getattr(decoder, "feed_raw", decoder.feed)(frames)

    def botocore() -> object:
        buffer = EventStreamBuffer()
        buffer.add_data(frames)
        return list(buffer)

    out["eventstream decode: crossway"] = ours
    out["eventstream decode: botocore"] = botocore
    return out


def measure(fn: Callable[[], object], seconds: float, rounds: int) -> float:
    """Best per-call CPU time over `rounds` rounds of about `seconds` each, in µs."""
    fn()
    n = 1
    while True:  # calibrate
        t = time.process_time()
        for _ in range(n):
            fn()
        dt = time.process_time() - t
        if dt > seconds / 10:
            break
        n *= 2
    n = max(1, int(n * seconds / 10 / dt * 10))
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    figures = {
        name: round(measure(fn, args.seconds, args.rounds), 2)
        for name, fn in cases(providers()).items()
    }
    width = max(map(len, figures))
    for name, us in figures.items():
        print(f"{name:<{width}}  {us:8.2f} µs")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
