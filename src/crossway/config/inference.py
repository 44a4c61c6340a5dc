"""Config of an inference pool: a provider of `type: inference_pool`, whose requests are spread
over self-hosted model servers (vLLM, SGLang, TGI, TensorRT-LLM) by their queues, KV cache,
prefix cache and LoRA adapters.

    providers:
      sims:
        type: inference_pool
        pool:
          endpoints: ${CROSSWAY_POOL_ENDPOINTS}   # "http://10.0.0.5:8000/v1,http://10.0.0.6:8000/v1"
          scheduler: {scorers: {prefix: 3, queue: 2, kv_cache: 2}}   # the defaults

See docs/inference-routing.md.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from crossway.config.base import StrictModel

DEFAULT_SCRAPE_INTERVAL: Final = 0.1
"""Seconds between two scrapes of an endpoint's metrics."""
DEFAULT_STALE_AFTER: Final = 1.0
"""Scraped values older than this (seconds) are not trusted (only Crossway's own counts are)."""
DEFAULT_SCRAPE_TIMEOUT: Final = 0.5
"""Seconds one scrape may take."""
DEFAULT_UNREADY_AFTER: Final = 3
"""Consecutive failed scrapes (refused, timed out, an HTTP error) after which an endpoint is
not ready: it gets no requests until a scrape succeeds again."""
DEFAULT_DNS_REFRESH: Final = 5.0
"""Seconds between two resolutions of a pool's DNS name."""
DEFAULT_BLOCK_CHARS: Final = 64
"""Characters of prompt text per prefix block (the reference EPP's block size)."""
DEFAULT_MAX_PREFIX_BLOCKS: Final = 256
"""Longest prefix (in blocks) matched against the index."""
DEFAULT_LRU_BLOCKS_PER_ENDPOINT: Final = 31250
"""Prefix blocks remembered per endpoint (the oldest are forgotten first)."""
DEFAULT_QUEUE_THRESHOLD: Final = 5
"""Waiting requests at which an endpoint counts as saturated."""
DEFAULT_KV_THRESHOLD: Final = 0.8
"""KV-cache use (0-1) at which an endpoint counts as saturated."""
DEFAULT_MAX_ATTEMPTS: Final = 3
"""Endpoints one request tries (the best first, then the next best) before it fails."""
DEFAULT_PRIORITY_HEADER: Final = "x-crossway-priority"
"""Request header that lowers a request's priority (below zero: sheddable)."""
DEFAULT_ENDPOINT_COOLDOWN: Final = 5.0
"""Seconds an endpoint that keeps failing (or refused a connection) is tried only last."""
DEFAULT_EPP_TIMEOUT: Final = 1.0
"""Seconds an external endpoint picker may take to answer."""

ScorerName = Literal["prefix", "queue", "kv_cache", "lora", "inflight_tokens", "gpu"]
PickerName = Literal["max_score", "random", "round_robin"]

DEFAULT_SCORERS: Final[dict[ScorerName, float]] = {
    "prefix": 3.0,
    "queue": 2.0,
    "kv_cache": 2.0,
    "lora": 3.0,
}
"""Out of the box: the reference EPP's weights (prefix 3, queue 2, KV 2), plus LoRA affinity
weighted like prefix affinity (an adapter load costs like a prefill of a long prompt). LoRA
scores the same on every endpoint for a base-model request, so it only acts on adapters."""


class PoolEndpointConfig(StrictModel):
    """One model server of a pool."""

    url: str
    """Base URL of its OpenAI-compatible API, e.g. `http://10.0.0.5:8000/v1`."""
    metrics_url: str | None = None
    """Its Prometheus metrics; empty: `/metrics` at the URL's origin."""
    gpu_metrics_url: str | None = None
    """A DCGM exporter's metrics for its GPU (`DCGM_FI_DEV_GPU_UTIL`, `DCGM_FI_DEV_FB_USED`,
    `DCGM_FI_DEV_FB_FREE`); empty: no GPU metrics."""

    @field_validator("url", "metrics_url", "gpu_metrics_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class PoolDnsConfig(StrictModel):
    """Endpoints found by resolving a DNS name (every address it resolves to is one endpoint)."""

    name: str = Field(min_length=1)
    """Host name to resolve, e.g. `vllm.internal` (a headless service)."""
    port: int = Field(ge=1, le=65535)
    """Port of the model servers."""
    scheme: Literal["http", "https"] = "http"
    """Scheme of their API."""
    path: str = "/v1"
    """Path of their OpenAI-compatible API."""
    metrics_path: str = "/metrics"
    """Path of their Prometheus metrics."""
    refresh: float = Field(default=DEFAULT_DNS_REFRESH, gt=0)
    """Seconds between two resolutions; endpoints that appear or disappear follow."""


class PoolMetricsConfig(StrictModel):
    """How endpoints' metrics are scraped (off the request path)."""

    interval: float = Field(default=DEFAULT_SCRAPE_INTERVAL, ge=0.05, le=60)
    """Seconds between two scrapes of each endpoint (0.05 to 60)."""
    timeout: float = Field(default=DEFAULT_SCRAPE_TIMEOUT, gt=0)
    """Seconds one scrape may take."""
    stale_after: float = Field(default=DEFAULT_STALE_AFTER, gt=0)
    """Scraped values older than this (seconds) are ignored; the endpoint is then scored on
    Crossway's own in-flight counts."""
    unready_after: int = Field(default=DEFAULT_UNREADY_AFTER, ge=1)
    """Consecutive failed scrapes that take an endpoint out of the pool until one succeeds."""
    enabled: bool = True
    """Scrape at all; off: scheduling uses Crossway's own counts only."""


class PrefixConfig(StrictModel):
    """The prefix-cache index: which endpoint recently served which blocks of prompt text."""

    block_chars: int = Field(default=DEFAULT_BLOCK_CHARS, ge=8)
    """Characters per block (the prompt's text is hashed block by block, each hash chained to
    the previous one and salted by the model)."""
    max_blocks: int = Field(default=DEFAULT_MAX_PREFIX_BLOCKS, ge=1)
    """Blocks of a prompt that are hashed and matched (its first `max_blocks` blocks)."""
    lru_blocks_per_endpoint: int = Field(default=DEFAULT_LRU_BLOCKS_PER_ENDPOINT, ge=1)
    """Blocks remembered per endpoint; the least recently used are forgotten first."""


class SaturationConfig(StrictModel):
    """When the pool counts as saturated: every ready endpoint is over a threshold. Then
    sheddable requests (priority below zero) get a 429."""

    queue_depth: int = Field(default=DEFAULT_QUEUE_THRESHOLD, ge=0)
    """Waiting requests (scraped, or Crossway's own in-flight count beyond the running ones)."""
    kv_cache: float = Field(default=DEFAULT_KV_THRESHOLD, ge=0, le=1)
    """KV-cache use (0-1)."""


class SchedulerConfig(StrictModel):
    """Filters, then weighted scorers, then a picker."""

    scorers: dict[ScorerName, float] = Field(default_factory=lambda: dict(DEFAULT_SCORERS))
    """Scorer weights: `prefix` (prefix-cache affinity), `queue` (fewest waiting), `kv_cache`
    (lowest KV-cache use), `lora` (adapter loaded > free slot > queued > none),
    `inflight_tokens` (fewest estimated tokens in flight), `gpu` (lowest GPU utilisation).
    Every scorer gives 0-1; an endpoint's score is the weighted sum. Empty: no scorers (the
    picker alone decides, e.g. `round_robin`)."""
    picker: PickerName = "max_score"
    """`max_score` (ties broken at random), `random`, or `round_robin` (ignores scores)."""
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)
    """The prefix-cache index."""
    saturation: SaturationConfig = Field(default_factory=SaturationConfig)
    """The saturation detector (load shedding of sheddable requests)."""
    min_gpu_free_mb: float | None = Field(default=None, ge=0)
    """Filter: skip an endpoint whose GPU has less free memory (MiB, `DCGM_FI_DEV_FB_FREE`)
    than this, while another has more. Empty: no filter."""
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1)
    """Endpoints one request tries, best first, when a pick fails before the first byte."""
    endpoint_cooldown: float = Field(default=DEFAULT_ENDPOINT_COOLDOWN, ge=0)
    """Seconds an endpoint is tried only last after it refused a connection, or failed
    `routing.cooldown.failures` times in a row (5xx, timeouts)."""

    @field_validator("scorers")
    @classmethod
    def _weights(cls, value: dict[ScorerName, float]) -> dict[ScorerName, float]:
        for name, weight in value.items():
            if weight < 0:
                raise ValueError(f"scorer {name}: weight must be >= 0")
        return {k: float(v) for k, v in value.items()}


class EndpointPickerConfig(StrictModel):
    """An external endpoint picker (the Gateway API Inference Extension's EPP), asked over
    Envoy's ext_proc gRPC protocol which endpoint serves each request."""

    address: str = Field(min_length=3)
    """`host:port` of its gRPC service (e.g. `127.0.0.1:9002`)."""
    timeout: float = Field(default=DEFAULT_EPP_TIMEOUT, gt=0)
    """Seconds it may take to pick."""
    failure_mode: Literal["open", "closed"] = "closed"
    """When it is down, slow, or names no endpoint of the pool: `open` falls back to Crossway's
    own scheduler, `closed` refuses the request with a 503."""
    tls: bool = False
    """Use TLS to reach it (system CAs)."""
    ca_file: str | None = None
    """PEM CA certificate(s) to trust for it (implies `tls`)."""


class InferencePoolConfig(StrictModel):
    """A pool of model servers behind one provider name."""

    endpoints: list[PoolEndpointConfig] = Field(default_factory=list)
    """Static endpoints: a list of base URLs (or `{url, metrics_url, gpu_metrics_url}`), or one
    string of comma-separated base URLs (e.g. from `${CROSSWAY_POOL_ENDPOINTS}`)."""
    dns: PoolDnsConfig | None = None
    """Endpoints from a DNS name, re-resolved (instead of, or besides, `endpoints`)."""
    metrics: PoolMetricsConfig = Field(default_factory=PoolMetricsConfig)
    """Scraping of each endpoint's Prometheus metrics."""
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    """How an endpoint is chosen for each request."""
    endpoint_picker: EndpointPickerConfig | None = None
    """An external endpoint picker that chooses instead of the scheduler."""
    priority_header: str = DEFAULT_PRIORITY_HEADER
    """Request header that can lower a request's priority (an integer; below zero means
    sheddable). It can only lower the model's `priority`, never raise it."""
    priority: int = 0
    """Priority of this pool's requests; below zero: shed with a 429 when the pool is saturated."""

    @field_validator("endpoints", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"url": part.strip()} for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [{"url": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("priority_header")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _some_endpoints(self) -> InferencePoolConfig:
        if not self.endpoints and self.dns is None:
            raise ValueError("an inference pool needs endpoints or dns")
        urls = [e.url.rstrip("/") for e in self.endpoints]
        if len(set(urls)) != len(urls):
            raise ValueError("endpoints: the same URL is listed twice")
        return self
