"""The simulator's metrics pages: vLLM's `/metrics` (its metric names and labels) and a DCGM
exporter's GPU page."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final

from crossway.samples.model_server.engine import Engine
from crossway.samples.model_server.stats import Histogram

GARBAGE_PAGE = (
    b"<html><body>502 Bad Gateway</body></html>\n"
    b'vllm:num_requests_running{model_name="sim-model" 3\n'
    b"}}} not prometheus text {{{\n"
)
"""What `--metrics-garbage` serves (with status 200): not parseable as Prometheus text."""

FINISH_REASONS: Final = ("stop", "length", "abort")
WEIGHTS_SHARE = 0.3  # of GPU memory: the model's weights
KV_SHARE = 0.6  # of GPU memory: the KV cache (in use in proportion to kv_cache_usage)


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (`0.5`, `1.0`, `+Inf`)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


class LoraInfo:
    """`vllm:lora_requests_info` series. vLLM keeps one series per distinct label set, valued
    by the time it was last set; the simulator shows the current one (valued now) and the one
    before it (valued when it was last current), so a reader must take the newest."""

    def __init__(self) -> None:
        self.current: tuple[tuple[str, str], float] | None = None
        self.previous: tuple[tuple[str, str], float] | None = None

    def series(self, running: str, waiting: str, now: float) -> list[tuple[tuple[str, str], float]]:
        labels = (running, waiting)
        if self.current is not None and self.current[0] != labels:
            self.previous = self.current
        self.current = (labels, now)
        if self.previous is not None and self.previous[0] != labels:
            return [self.previous, self.current]
        return [self.current]


class VllmPage:
    """Writes the vLLM `/metrics` page from the engine's state at scrape time (by hand: the
    page is scraped often, and prometheus_client's collectors cost ten times more)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lora_info = LoraInfo()

    def render(self) -> bytes:
        out = _Lines(f'engine="0",model_name="{_escape(self.engine.config.model)}"')
        self._write(out)
        return out.text()

    def _write(self, out: _Lines) -> None:
        e = self.engine
        c = e.config
        gauge, counter, histogram = out.gauge, out.counter, out.histogram

        gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.",
            len(e.running),
        )  # fmt: skip
        gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.",
            len(e.waiting),
        )  # fmt: skip
        if c.legacy_metrics:
            gauge(
                "vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.",
                e.kv.usage(),
            )  # fmt: skip
        else:
            gauge(
                "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                e.kv.usage(),
            )  # fmt: skip
        if c.lora_enabled:
            running = ",".join(sorted({s.adapter for s in e.running if s.adapter}))
            waiting = ",".join(sorted({s.adapter for s in e.waiting if s.adapter}))
            series = self.lora_info.series(running, waiting, time.time())
            out.info(
                "vllm:lora_requests_info",
                "Running stats on lora requests.",
                [
                    (
                        {
                            "max_lora": str(c.max_loras),
                            "running_lora_adapters": run,
                            "waiting_lora_adapters": wait,
                        },
                        ts,
                    )
                    for (run, wait), ts in series
                ],
            )
        config_labels = {
            "block_size": str(c.block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": "True",
            "gpu_memory_utilization": "0.9",
            "num_cpu_blocks": "0",
            "num_gpu_blocks": str(c.kv_blocks),
            "prefix_caching_hash_algo": "builtin",
        }
        out.info(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            [(config_labels, 1.0)],
        )
        s = e.stats
        counter(
            "vllm:num_preemptions", "Cumulative number of preemptions from the engine.",
            s.preemptions,
        )  # fmt: skip
        counter("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens)
        counter(
            "vllm:generation_tokens", "Number of generation tokens processed.",
            s.generation_tokens,
        )  # fmt: skip
        prefix = "vllm:gpu_prefix_cache" if c.legacy_metrics else "vllm:prefix_cache"
        counter(
            f"{prefix}_queries", "Prefix cache queries, in terms of number of queried tokens.",
            s.prefix_queries,
        )  # fmt: skip
        counter(
            f"{prefix}_hits", "Prefix cache hits, in terms of number of cached tokens.",
            s.prefix_hits,
        )  # fmt: skip
        out.counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            *[(s.success[reason], f'finished_reason="{reason}"') for reason in FINISH_REASONS],
        )
        counter("vllm:lora_loads", "Adapters loaded into a slot (simulator only).", e.lora.loads)
        counter(
            "vllm:kv_block_evictions",
            "Cached KV blocks evicted to make room (simulator only).",
            e.kv.evictions,
        )
        histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
            s.ttft,
        )  # fmt: skip
        histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
            s.itl,
        )  # fmt: skip
        histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds (deprecated name).",
            s.itl,
        )
        histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            s.e2e,
        )
        histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            s.queue_time,
        )
        histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            s.prefill_time,
        )
        histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            s.decode_time,
        )
        histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", s.prompt_hist
        )
        histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            s.generation_hist,
        )
        histogram(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            s.iteration_tokens,
        )


class _Lines:
    """Prometheus text exposition lines, every sample with the same base labels."""

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.lines: list[str] = []

    def text(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()

    def _head(self, name: str, doc: str, kind: str) -> None:
        self.lines.append(f"# HELP {name} {doc}")
        self.lines.append(f"# TYPE {name} {kind}")

    def gauge(self, name: str, doc: str, value: float) -> None:
        self._head(name, doc, "gauge")
        self.lines.append(f"{name}{{{self.labels}}} {_num(value)}")

    def counter(self, name: str, doc: str, *values: float | tuple[float, str]) -> None:
        """One sample, or (value, extra labels) pairs."""
        self._head(name + "_total", doc, "counter")
        for v in values:
            value, extra = v if isinstance(v, tuple) else (v, "")
            labels = f"{extra},{self.labels}" if extra else self.labels
            self.lines.append(f"{name}_total{{{labels}}} {_num(value)}")

    def histogram(self, name: str, doc: str, h: Histogram) -> None:
        self._head(name, doc, "histogram")
        for bound, count in h.cumulative():
            self.lines.append(f'{name}_bucket{{{self.labels},le="{_le(bound)}"}} {count}.0')
        self.lines.append(f"{name}_count{{{self.labels}}} {h.count}.0")
        self.lines.append(f"{name}_sum{{{self.labels}}} {_num(h.sum)}")

    def info(self, name: str, doc: str, series: list[tuple[dict[str, str], float]]) -> None:
        """A gauge whose labels carry the information (no base labels, as vLLM writes it)."""
        self._head(name, doc, "gauge")
        for labels, value in series:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{text}}} {_num(value)}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value))


def gpu_util_percent(engine: Engine) -> float:
    """Busy when anything runs, more so with a fuller batch (a simple stand-in for SM use)."""
    running = len(engine.running)
    if not running:
        return 0.0
    return min(100.0, round(30.0 + 70.0 * running / engine.config.max_num_seqs))


def render_dcgm(engine: Engine) -> bytes:
    """A DCGM exporter's page for one GPU: utilisation from the batch, framebuffer use from
    the weights plus the KV cache in use (MiB)."""
    c = engine.config
    used = round(c.gpu_memory_mib * (WEIGHTS_SHARE + KV_SHARE * engine.kv.usage()))
    free = c.gpu_memory_mib - used
    labels = (
        'gpu="0",UUID="GPU-5f1c0d3e-sim0-0000-0000-000000000000",pci_bus_id="00000000:00:1E.0",'
        'device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="crossway-sim",'
        'DCGM_FI_DRIVER_VERSION="550.54.15"'
    )
    rows: Iterable[tuple[str, str, str, float]] = (
        ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", gpu_util_percent(engine)),
        ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).",
         min(100.0, round(100 * engine.kv.usage()))),
        ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", float(free)),
        ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", float(used)),
        ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).",
         35.0 + gpu_util_percent(engine) / 4),
    )  # fmt: skip
    lines: list[str] = []
    for name, kind, doc, value in rows:
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{{{labels}}} {value:g}")
    return ("\n".join(lines) + "\n").encode()
