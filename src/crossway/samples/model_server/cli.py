"""Command line of `python -m crossway.samples.model_server`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from crossway.samples.model_server import config as defaults
from crossway.samples.model_server.config import SimConfig
from crossway.samples.model_server.server import SimServer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m crossway.samples.model_server",
        description="A simulated vLLM-like model server. Durations are simulated; real time is "
        "simulated time x --time-factor. One token = 4 characters of prompt text.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--host", default=DEFAULT_HOST, help="address to listen on")
    a("--port", type=int, default=DEFAULT_PORT, help="port (0: any free port, printed)")
    a("--model", default=defaults.DEFAULT_MODEL, help="base model name")
    a("--lora", default="", help="comma-separated LoRA adapter names")
    a("--lora-any", action="store_true", help="any other model name is a LoRA adapter")
    a("--max-loras", type=int, default=defaults.DEFAULT_MAX_LORAS, help="adapter slots")
    a("--lora-load-ms", type=float, default=defaults.DEFAULT_LORA_LOAD_MS,
      help="time to load an adapter into a slot")  # fmt: skip
    a("--max-num-seqs", type=int, default=defaults.DEFAULT_MAX_NUM_SEQS,
      help="sequences decoded at once; the rest wait (FIFO)")  # fmt: skip
    a("--kv-blocks", type=int, default=defaults.DEFAULT_KV_BLOCKS, help="KV-cache blocks")
    a("--block-size", type=int, default=defaults.DEFAULT_BLOCK_SIZE, help="tokens per block")
    a("--prefill-ms-per-token", type=float, default=defaults.DEFAULT_PREFILL_MS_PER_TOKEN,
      help="prefill time per prompt token not in the prefix cache")  # fmt: skip
    a("--base-itl-ms", type=float, default=defaults.DEFAULT_BASE_ITL_MS,
      help="decode step time with an empty batch")  # fmt: skip
    a("--itl-alpha", type=float, default=defaults.DEFAULT_ITL_ALPHA,
      help="step time = base-itl-ms * (1 + itl-alpha * running)")  # fmt: skip
    a("--output-tokens", type=int, default=defaults.DEFAULT_OUTPUT_TOKENS,
      help="tokens generated when the request sets no max_tokens")  # fmt: skip
    a("--max-output-tokens", type=int, default=defaults.DEFAULT_MAX_OUTPUT_TOKENS,
      help="cap on max_tokens")  # fmt: skip
    a("--max-model-len", type=int, default=defaults.DEFAULT_MAX_MODEL_LEN,
      help="longest prompt + output accepted")  # fmt: skip
    a("--time-factor", type=float, default=defaults.DEFAULT_TIME_FACTOR,
      help="real seconds per simulated second (0.1: ten times faster)")  # fmt: skip
    a("--stream-interval", type=int, default=defaults.DEFAULT_STREAM_INTERVAL,
      help="tokens per streamed write")  # fmt: skip
    a("--legacy-metrics", action="store_true",
      help="emit vllm:gpu_cache_usage_perc (and vllm:gpu_prefix_cache_*) instead of "
      "vllm:kv_cache_usage_perc (and vllm:prefix_cache_*)")  # fmt: skip
    a("--metrics-garbage", action="store_true", help="/metrics answers 200 with garbage text")
    a("--gpu-memory-mib", type=int, default=defaults.DEFAULT_GPU_MEMORY_MIB,
      help="GPU memory the DCGM page reports")  # fmt: skip
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        model=args.model,
        loras=tuple(n.strip() for n in args.lora.split(",") if n.strip()),
        lora_any=args.lora_any,
        max_loras=args.max_loras,
        lora_load_ms=args.lora_load_ms,
        max_num_seqs=args.max_num_seqs,
        kv_blocks=args.kv_blocks,
        block_size=args.block_size,
        prefill_ms_per_token=args.prefill_ms_per_token,
        base_itl_ms=args.base_itl_ms,
        itl_alpha=args.itl_alpha,
        output_tokens=args.output_tokens,
        max_output_tokens=args.max_output_tokens,
        max_model_len=args.max_model_len,
        time_factor=args.time_factor,
        stream_interval=args.stream_interval,
        legacy_metrics=args.legacy_metrics,
        gpu_memory_mib=args.gpu_memory_mib,
    )


async def serve(config: SimConfig, host: str, port: int, *, metrics_garbage: bool) -> None:
    """Run one simulator until SIGINT or SIGTERM."""
    server = SimServer(config, metrics_garbage=metrics_garbage)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    print(f"model_server listening on http://{shown}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"model_server: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    coro = serve(config, args.host, args.port, metrics_garbage=args.metrics_garbage)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(coro)
        return
    uvloop.run(coro)
