"""The simulator's metrics pages: vLLM's `/metrics` (its metric names and labels) and a DCGM
exporter's GPU page."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from crossway.samples.model_server.engine import Engine
from crossway.samples.model_server.stats import Histogram

GARBAGE_PAGE = (
    b"<html><body>502 Bad Gateway</body></html>\n"
    b'vllm:num_requests_running{model_name="sim-model" 3\n'
    b"}}} not prometheus text {{{\n"
)
"""What `--metrics-garbage` serves (with status 200): not parseable as Prometheus text."""

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


class VllmCollector(Collector):
    """Builds the vLLM metric families from the engine's state at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lora_info = LoraInfo()

    def collect(self) -> Iterator[Metric]:
        e = self.engine
        c = e.config
        labels = ["model_name", "engine"]
        values = [c.model, "0"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(values, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=labels)
            m.add_metric(values, value)
            return m

        def histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
            m = HistogramMetricFamily(name, doc, labels=labels)
            buckets = [(_le(b), float(n)) for b, n in h.cumulative()]
            m.add_metric(values, buckets, h.sum)
            return m

        yield gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.",
            len(e.running),
        )  # fmt: skip
        yield gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.",
            len(e.waiting),
        )  # fmt: skip
        if c.legacy_metrics:
            yield gauge(
                "vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.",
                e.kv.usage(),
            )  # fmt: skip
        else:
            yield gauge(
                "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                e.kv.usage(),
            )  # fmt: skip
        if c.lora_enabled:
            info = GaugeMetricFamily(
                "vllm:lora_requests_info",
                "Running stats on lora requests.",
                labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"],
            )
            running = ",".join(sorted({s.adapter for s in e.running if s.adapter}))
            waiting = ",".join(sorted({s.adapter for s in e.waiting if s.adapter}))
            for (run, wait), ts in self.lora_info.series(running, waiting, time.time()):
                info.add_metric([str(c.max_loras), run, wait], ts)
            yield info
        config_labels = {
            "block_size": str(c.block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": "True",
            "gpu_memory_utilization": "0.9",
            "num_cpu_blocks": "0",
            "num_gpu_blocks": str(c.kv_blocks),
            "prefix_caching_hash_algo": "builtin",
        }
        cache_info = GaugeMetricFamily(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
            labels=list(config_labels),
        )  # fmt: skip
        cache_info.add_metric(list(config_labels.values()), 1.0)
        yield cache_info
        s = e.stats
        yield counter(
            "vllm:num_preemptions", "Cumulative number of preemptions from the engine.",
            s.preemptions,
        )  # fmt: skip
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens)
        yield counter(
            "vllm:generation_tokens", "Number of generation tokens processed.",
            s.generation_tokens,
        )  # fmt: skip
        prefix = "vllm:gpu_prefix_cache" if c.legacy_metrics else "vllm:prefix_cache"
        yield counter(
            f"{prefix}_queries", "Prefix cache queries, in terms of number of queried tokens.",
            s.prefix_queries,
        )  # fmt: skip
        yield counter(
            f"{prefix}_hits", "Prefix cache hits, in terms of number of cached tokens.",
            s.prefix_hits,
        )  # fmt: skip
        success = CounterMetricFamily(
            "vllm:request_success", "Count of successfully processed requests.",
            labels=[*labels, "finished_reason"],
        )  # fmt: skip
        for reason in ("stop", "length", "abort"):
            success.add_metric([*values, reason], s.success[reason])
        yield success
        yield counter(
            "vllm:lora_loads", "Adapters loaded into a slot (simulator only).", e.lora.loads
        )
        yield counter(
            "vllm:kv_block_evictions",
            "Cached KV blocks evicted to make room (simulator only).",
            e.kv.evictions,
        )
        yield histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
            s.ttft,
        )  # fmt: skip
        yield histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
            s.itl,
        )  # fmt: skip
        yield histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds (deprecated name).",
            s.itl,
        )
        yield histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            s.e2e,
        )
        yield histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            s.queue_time,
        )
        yield histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            s.prefill_time,
        )
        yield histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            s.decode_time,
        )
        yield histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", s.prompt_hist
        )
        yield histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            s.generation_hist,
        )
        yield histogram(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            s.iteration_tokens,
        )


def vllm_registry(engine: Engine) -> CollectorRegistry:
    """A registry holding only this engine's vLLM-named metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VllmCollector(engine))
    return registry


def render_vllm(registry: CollectorRegistry) -> bytes:
    """The `/metrics` page."""
    return generate_latest(registry)


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
