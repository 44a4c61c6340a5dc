"""CPU cost of splitting the benchmark's fixture streams into server-sent events.

Times `crossway.proxy.sse.SSEParser` (or the parser in another file, to compare with an older
version) over `bench/fixtures.py`'s OpenAI and Anthropic streams, fed three ways: the whole
stream in one chunk (what nginx sends), one event per chunk (what a token-streaming upstream
sends) and 64-byte chunks (events split across reads). Reports microseconds per stream (process
time, best of rounds); `--mcp` times the MCP upstream's event iterator over the same chunks.

    flock bench/.work/bench.lock .venv/bin/python -m bench.sse_micro [--module FILE] [--mcp FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any, Final

from bench import fixtures

MAX_EVENT_BYTES: Final = 4 * 1024 * 1024


def _load(path: str | None, default: str) -> ModuleType:
    if path is None:
        return importlib.import_module(default)
    name = f"sse_under_test_{len(sys.modules)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _events(stream: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in stream.split(b"\n\n") if event]


def _sized(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def feeds() -> dict[str, list[bytes]]:
    """The chunkings timed, by name."""
    openai, anthropic = fixtures.openai_stream(), fixtures.anthropic_stream()
    return {
        "openai whole": [openai],
        "openai per event": _events(openai),
        "openai 64 B": _sized(openai, 64),
        "anthropic whole": [anthropic],
        "anthropic per event": _events(anthropic),
        "anthropic 64 B": _sized(anthropic, 64),
    }


def _best(run: Callable[[], Any], loops: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(loops):
            run()
        best = min(best, (time.process_time() - started) / loops)
    return best * 1e6


def time_parser(module: ModuleType, chunks: list[bytes], loops: int, rounds: int) -> float:
    parser_class = module.SSEParser

    def run() -> int:
        parser = parser_class(MAX_EVENT_BYTES)
        n = 0
        for chunk in chunks:
            n += len(parser.feed(chunk))
        return n + len(parser.close())

    return _best(run, loops, rounds)


def time_iterator(module: ModuleType, chunks: list[bytes], loops: int, rounds: int) -> float:
    iter_events = module.iter_events

    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def drain() -> int:
        n = 0
        async for _ in iter_events(source(), MAX_EVENT_BYTES):
            n += 1
        return n

    loop = asyncio.new_event_loop()
    try:
        return _best(lambda: loop.run_until_complete(drain()), loops, rounds)
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", help="a file defining SSEParser (default crossway.proxy.sse)")
    parser.add_argument("--mcp", nargs="?", const="", help="also time iter_events (from FILE)")
    parser.add_argument("--loops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    module = _load(args.module, "crossway.proxy.sse")
    mcp = None if args.mcp is None else _load(args.mcp or None, "crossway.proxy.sse")
    print(f"{'stream':<22}{'SSEParser µs':>14}" + (f"{'iter_events µs':>16}" if mcp else ""))
    for name, chunks in feeds().items():
        line = f"{name:<22}{time_parser(module, chunks, args.loops, args.rounds):>14.2f}"
        if mcp is not None:
            line += f"{time_iterator(mcp, chunks, args.loops // 4, args.rounds):>16.2f}"
        print(line)


if __name__ == "__main__":
    main()
