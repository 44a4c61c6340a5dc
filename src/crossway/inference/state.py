"""What is known about each endpoint of an inference pool: its scraped metrics and Crossway's
own counts. Written by the scraper (`crossway.inference.scrape`) and the request path, read by
the scheduler (`crossway.inference.scheduler`); all on one event loop, so no locks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(slots=True)
class ServerMetrics:
    """Values read from one scrape of a model server's (or a DCGM exporter's) `/metrics`.
    A value the page did not have stays None."""

    waiting: float | None = None
    """Requests queued (vLLM `num_requests_waiting`, SGLang `num_queue_reqs`, TensorRT-LLM /
    Triton pending requests)."""
    running: float | None = None
    """Requests being decoded."""
    kv_cache: float | None = None
    """KV-cache use, 0-1 (vLLM `kv_cache_usage_perc` / `gpu_cache_usage_perc`, SGLang
    `token_usage`, TensorRT-LLM used/max KV blocks)."""
    running_adapters: frozenset[str] = frozenset()
    """LoRA adapters loaded and running (vLLM `lora_requests_info`, newest series)."""
    waiting_adapters: frozenset[str] = frozenset()
    """LoRA adapters requests are waiting for."""
    max_lora: int | None = None
    """Adapter slots."""
    block_size: int | None = None
    """Tokens per KV block (vLLM `cache_config_info`)."""
    num_gpu_blocks: int | None = None
    """KV blocks (vLLM `cache_config_info`)."""
    models: frozenset[str] = frozenset()
    """Model names seen in the metrics' `model_name` labels."""
    gpu_util: float | None = None
    """GPU utilisation 0-1 (DCGM `DCGM_FI_DEV_GPU_UTIL` / 100; the mean over the page's GPUs)."""
    gpu_fb_used_mb: float | None = None
    """GPU framebuffer memory used, MiB (DCGM `DCGM_FI_DEV_FB_USED`, summed over GPUs)."""
    gpu_fb_free_mb: float | None = None
    """GPU framebuffer memory free, MiB (DCGM `DCGM_FI_DEV_FB_FREE`, summed over GPUs)."""
    recognised: int = 0
    """How many known metric names the page had (0: not a model server's metrics page)."""


@dataclass(slots=True, eq=False)
class Endpoint:
    """One model server of a pool."""

    base_url: str  # its OpenAI-compatible API, without a trailing slash, e.g. http://h:8000/v1
    metrics_url: str | None  # None: not scraped
    gpu_metrics_url: str | None = None
    name: str = ""  # host:port, as the EPP protocol names endpoints
    # scraped
    server: ServerMetrics | None = None
    server_at: float = 0.0  # time.monotonic() of the last successful scrape
    gpu: ServerMetrics | None = None
    gpu_at: float = 0.0
    scrape_failures: int = 0  # consecutive
    last_error: str | None = None
    ready: bool = True
    # Crossway's own counts (this worker's requests)
    in_flight: int = 0
    in_flight_tokens: int = 0
    failures: int = 0  # consecutive failed attempts (connect errors, 5xx)
    cooldown_until: float = 0.0  # time.monotonic() before which it is skipped
    served: int = 0
    extra: dict[str, object] = field(default_factory=dict)
    # the scheduler's bookkeeping between scrapes
    seen_server_at: float = 0.0  # `server_at` of the scrape the next two fields refer to
    in_flight_at_scrape: int = 0  # `in_flight` when that scrape was first seen
    recent_adapters: dict[str, float] = field(default_factory=dict)  # adapter -> monotonic() sent

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.name:
            self.name = endpoint_name(self.base_url)

    def fresh_server(self, stale_after: float, now: float | None = None) -> ServerMetrics | None:
        """The scraped model-server metrics, or None when they are older than `stale_after`."""
        if self.server is None:
            return None
        now = time.monotonic() if now is None else now
        return self.server if now - self.server_at <= stale_after else None

    def fresh_gpu(self, stale_after: float, now: float | None = None) -> ServerMetrics | None:
        """The scraped GPU metrics, or None when they are older than `stale_after`."""
        if self.gpu is None:
            return None
        now = time.monotonic() if now is None else now
        return self.gpu if now - self.gpu_at <= stale_after else None


def endpoint_name(url: str) -> str:
    """`host:port` of a URL (the default port of its scheme when it names none)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


def default_metrics_url(base_url: str) -> str:
    """`/metrics` at the origin of an API base URL."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/metrics"
