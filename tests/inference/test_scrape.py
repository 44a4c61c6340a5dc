"""The metrics parser (real-looking pages of vLLM, SGLang, TensorRT-LLM / Triton, TGI, DCGM,
and garbage) and the scraper against real local aiohttp servers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from crossway.config.inference import PoolMetricsConfig
from crossway.inference.scrape import (
    MAX_PAGE_BYTES,
    MetricsScraper,
    label_value,
    parse_labels,
    parse_metrics,
)
from crossway.inference.state import Endpoint, ServerMetrics
from crossway.proxy import client
from tests.helpers import free_port

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
LAT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0]
LAT_BUCKETS += [7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000]
HISTOGRAMS = [
    ("vllm:time_to_first_token_seconds", LAT_BUCKETS),
    ("vllm:inter_token_latency_seconds", LAT_BUCKETS),
    ("vllm:e2e_request_latency_seconds", LAT_BUCKETS),
    ("vllm:request_queue_time_seconds", LAT_BUCKETS),
    ("vllm:request_inference_time_seconds", LAT_BUCKETS),
    ("vllm:request_prefill_time_seconds", LAT_BUCKETS),
    ("vllm:request_decode_time_seconds", LAT_BUCKETS),
    ("vllm:request_prompt_tokens", TOKEN_BUCKETS),
    ("vllm:request_generation_tokens", TOKEN_BUCKETS),
    ("vllm:iteration_tokens_total", TOKEN_BUCKETS),
    ("vllm:request_max_num_generation_tokens", TOKEN_BUCKETS),
    ("vllm:request_params_n", TOKEN_BUCKETS),
    ("vllm:request_params_max_tokens", TOKEN_BUCKETS),
]


def vllm_page(
    waiting: float = 3,
    running: float = 7,
    kv: float = 0.42,
    *,
    model: str = MODEL,
    engines: int = 1,
    legacy_kv: bool = False,
    lora: list[tuple[float, str, str]] | None = None,
    typed: bool = True,
) -> bytes:
    """A page shaped like vLLM v1's `/metrics` (prometheus_client's text format): gauges per
    engine and model, counters with `_created`, and the histograms that make up most of it."""
    lines: list[str] = []
    labels = f'model_name="{model}"'

    def family(name: str, kind: str) -> None:
        if typed:
            lines.append(f"# HELP {name} {name.split(':')[-1].replace('_', ' ')}.")
            lines.append(f"# TYPE {name} {kind}")

    for name in ("python_gc_objects_collected_total", "process_virtual_memory_bytes"):
        family(name, "gauge")
        lines.append(f"{name} 1.2345e+06")
    family("vllm:num_requests_running", "gauge")
    lines += [
        f'vllm:num_requests_running{{engine="{e}",{labels}}} {running}' for e in range(engines)
    ]
    family("vllm:num_requests_waiting", "gauge")
    lines += [
        f'vllm:num_requests_waiting{{engine="{e}",{labels}}} {waiting}' for e in range(engines)
    ]
    kv_name = "vllm:gpu_cache_usage_perc" if legacy_kv else "vllm:kv_cache_usage_perc"
    family(kv_name, "gauge")
    lines += [f'{kv_name}{{engine="{e}",{labels}}} {kv}' for e in range(engines)]
    if lora is not None:
        family("vllm:lora_requests_info", "gauge")
        for stamp, running_adapters, waiting_adapters in lora:
            lines.append(
                f'vllm:lora_requests_info{{max_lora="4",running_lora_adapters="{running_adapters}",'
                f'waiting_lora_adapters="{waiting_adapters}"}} {stamp}'
            )
    family("vllm:cache_config_info", "gauge")
    lines.append(
        'vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",'
        'engine="0",gpu_memory_utilization="0.9",num_cpu_blocks="None",num_gpu_blocks="27000",'
        'num_gpu_blocks_override="None",prefix_caching_hash_algo="builtin",swap_space="4"} 1.0'
    )
    for name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:prompt_tokens"):
        family(f"{name}_total", "counter")
        lines.append(f'{name}_total{{engine="0",{labels}}} 123456.0')
        lines.append(f'{name}_created{{engine="0",{labels}}} 1.7311e+09')
    for name, buckets in HISTOGRAMS:
        family(name, "histogram")
        for e in range(engines):
            common = f'engine="{e}",{labels}'
            lines += [f'{name}_bucket{{{common},le="{float(b)}"}} 42.0' for b in buckets]
            lines.append(f'{name}_bucket{{{common},le="+Inf"}} 42.0')
            lines.append(f"{name}_count{{{common}}} 42.0")
            lines.append(f"{name}_sum{{{common}}} 1234.5")
            lines.append(f"{name}_created{{{common}}} 1.7311e+09")
    return ("\n".join(lines) + "\n").encode()


SGLANG_PAGE = b"""\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="qwen/qwen2.5-7b"} 12.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="qwen/qwen2.5-7b"} 4.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="qwen/qwen2.5-7b"} 0.28
# HELP sglang:cache_config_info Information about the cache configuration.
# TYPE sglang:cache_config_info gauge
sglang:cache_config_info{num_pages="51200",page_size="1"} 1.0
# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_bucket{le="0.1",model_name="qwen/qwen2.5-7b"} 10.0
sglang:time_to_first_token_seconds_bucket{le="+Inf",model_name="qwen/qwen2.5-7b"} 12.0
"""

# Triton's TensorRT-LLM backend (the names and labels of Triton's metrics documentation)
TRITON_PAGE = b"""\
# HELP nv_inference_pending_request_count Instantaneous number of pending requests
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="ensemble",version="1"} 9
nv_inference_pending_request_count{model="tensorrt_llm",version="1"} 9
# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="context",version="1"} 1
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="scheduled",version="1"} 6
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 512
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 8
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 2
# HELP nv_trt_llm_kv_cache_block_metrics TRT LLM KV cache block metrics
# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per",model="tensorrt_llm",version="1"} 64
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="tensorrt_llm",version="1"} 1560
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="free",model="tensorrt_llm",version="1"} 4680
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="tensorrt_llm",version="1"} 6240
"""

TRTLLM_SERVE_PAGE = b"""\
# TYPE trtllm_num_requests_waiting gauge
trtllm_num_requests_waiting{model_name="llama-8b",engine_type="trtllm"} 5
# TYPE trtllm_num_requests_running gauge
trtllm_num_requests_running{model_name="llama-8b",engine_type="trtllm"} 11
# TYPE trtllm_kv_cache_utilization gauge
trtllm_kv_cache_utilization{model_name="llama-8b",engine_type="trtllm"} 0.62
# TYPE trtllm_kv_cache_tokens_per_block gauge
trtllm_kv_cache_tokens_per_block{model_name="llama-8b",engine_type="trtllm"} 32
# TYPE trtllm_kv_cache_max_blocks gauge
trtllm_kv_cache_max_blocks{model_name="llama-8b",engine_type="trtllm"} 8192
"""

TGI_PAGE = b"""\
# TYPE tgi_queue_size gauge
tgi_queue_size 3
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 5
# TYPE tgi_request_count counter
tgi_request_count 150
"""

DCGM_PAGE = b"""\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-1",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="h1"} 80
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-2",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="h1"} 40
# HELP DCGM_FI_DEV_FB_FREE Framebuffer memory free (in MiB).
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-1",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="h1"} 1000
DCGM_FI_DEV_FB_FREE{gpu="1",UUID="GPU-2",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="h1"} 3000
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-1",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="h1"} 79000
DCGM_FI_DEV_FB_USED{gpu="1",UUID="GPU-2",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="h1"} 77000
"""


def untyped(page: bytes) -> bytes:
    return b"\n".join(line for line in page.split(b"\n") if not line.startswith(b"#"))


# -- the parser --------------------------------------------------------------------------------


def test_vllm_page_with_histograms() -> None:
    page = vllm_page(3, 7, 0.42)
    assert 30_000 < len(page) < 60_000
    m = parse_metrics(page)
    assert (m.waiting, m.running, m.kv_cache) == (3.0, 7.0, 0.42)
    assert (m.block_size, m.num_gpu_blocks) == (16, 27000)
    assert m.models == {MODEL}
    assert m.running_adapters == m.waiting_adapters == frozenset() and m.max_lora is None
    assert m.gpu_util is None
    assert m.recognised == 4


def test_vllm_without_type_lines_reads_the_same() -> None:
    page = vllm_page(3, 7, 0.42, lora=[(1.7e9, "a", "")])
    assert parse_metrics(untyped(page)) == parse_metrics(page)
    # the first line of the page is a wanted sample (no newline before it)
    first = b"vllm:num_requests_waiting 4\nvllm:num_requests_running 1\n"
    assert (parse_metrics(first).waiting, parse_metrics(first).running) == (4.0, 1.0)


def test_vllm_legacy_kv_name() -> None:
    m = parse_metrics(vllm_page(kv=0.9, legacy_kv=True))
    assert m.kv_cache == 0.9
    assert m.recognised == 4


def test_several_series_sum_counts_and_take_the_largest_usage() -> None:
    more = (
        b'vllm:kv_cache_usage_perc{engine="2",model_name="other"} 0.75\n'
        b'vllm:num_requests_waiting{engine="2",model_name="other"} 1\n'
    )
    typed_again = (  # a second group of the same families (two pages concatenated)
        b"# TYPE vllm:kv_cache_usage_perc gauge\n"
        + more.split(b"\n")[0]
        + b"\n# TYPE vllm:num_requests_waiting gauge\n"
        + more.split(b"\n")[1]
        + b"\n"
    )
    for page in (
        vllm_page(3, 7, 0.42, engines=2) + typed_again,
        untyped(vllm_page(3, 7, 0.42, engines=2)) + more,
    ):
        m = parse_metrics(page)
        assert (m.waiting, m.running, m.kv_cache) == (7.0, 14.0, 0.75)
        assert m.models == {MODEL, "other"}


def test_lora_newest_series_wins() -> None:
    lora = [
        (1.7e9 + 5, "sql-lora, chat-lora", "tool-lora"),  # newest, out of order
        (1.7e9, "old-lora", ""),
        (1.7e9 + 2, "", "x"),
    ]
    m = parse_metrics(vllm_page(lora=lora))
    assert m.running_adapters == {"sql-lora", "chat-lora"}
    assert m.waiting_adapters == {"tool-lora"}
    assert m.max_lora == 4
    assert m.recognised == 5


def test_lora_empty_adapters() -> None:
    m = parse_metrics(vllm_page(lora=[(1.7e9, "", "")]))
    assert m.running_adapters == m.waiting_adapters == frozenset()
    assert m.max_lora == 4


def test_lora_untyped_on_a_typed_page() -> None:
    page = vllm_page() + (
        b'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a",'
        b'waiting_lora_adapters=""} 1.7e9\n'
    )
    m = parse_metrics(page)
    assert m.running_adapters == {"a"} and m.max_lora == 2


def test_sglang() -> None:
    m = parse_metrics(SGLANG_PAGE)
    assert (m.waiting, m.running, m.kv_cache) == (4.0, 12.0, 0.28)
    assert (m.block_size, m.num_gpu_blocks) == (1, 51200)
    assert m.models == {"qwen/qwen2.5-7b"}
    assert m.recognised == 4


def test_triton_tensorrt_llm() -> None:
    m = parse_metrics(TRITON_PAGE)
    # waiting from the TensorRT-LLM backend, not Triton's per-model pending count
    assert (m.waiting, m.running) == (2.0, 6.0)
    assert m.kv_cache == pytest.approx(1560 / 6240)  # used / max blocks
    assert (m.block_size, m.num_gpu_blocks) == (64, 6240)
    assert m.recognised == 3
    fraction = TRITON_PAGE + (
        b'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="tensorrt_llm",'
        b'version="1"} 0.3\n'
    )
    assert parse_metrics(fraction).kv_cache == 0.3


def test_plain_triton_pending_requests() -> None:
    page = b"\n".join(line for line in TRITON_PAGE.split(b"\n") if b"nv_trt_llm" not in line)
    m = parse_metrics(page)
    assert m.waiting == 18.0 and m.running is None and m.kv_cache is None


def test_trtllm_serve() -> None:
    m = parse_metrics(TRTLLM_SERVE_PAGE)
    assert (m.waiting, m.running, m.kv_cache) == (5.0, 11.0, 0.62)
    assert (m.block_size, m.num_gpu_blocks) == (32, 8192)
    assert m.models == {"llama-8b"}


def test_tgi() -> None:
    m = parse_metrics(TGI_PAGE)
    assert (m.waiting, m.running, m.kv_cache) == (3.0, 5.0, None)
    assert m.recognised == 2


def test_dcgm() -> None:
    m = parse_metrics(DCGM_PAGE)
    assert m.gpu_util == pytest.approx(0.6)  # mean of 80 % and 40 %
    assert (m.gpu_fb_used_mb, m.gpu_fb_free_mb) == (156000.0, 4000.0)
    assert m.waiting is None and m.recognised == 3
    assert parse_metrics(untyped(DCGM_PAGE)) == m


@pytest.mark.parametrize(
    "page",
    [
        b"",
        b"<html><body>It works!</body></html>",
        b"\x00\xff\xfe garbage \x80\x81\n\n\n",
        b"# HELP vllm:num_requests_waiting x\n# TYPE vllm:num_requests_waiting gauge\n",
        b"vllm:num_requests_waiting abc\nvllm:num_requests_running\n",
        b'vllm:num_requests_waiting{model_name="unterminated} 3\n',
        b'vllm:num_requests_waiting_by_reason{reason="x"} 3\nvllm:num_requests_waitingX 1\n',
        b'{"object": "list", "data": []}',
        b"# TYPE\n# TYPE \n# TYPE vllm:\n" * 100,
        b"\n" * 10_000,
    ],
)
def test_garbage_recognises_nothing(page: bytes) -> None:
    m = parse_metrics(page)
    assert m == ServerMetrics()
    assert m.recognised == 0


def test_huge_page_refused() -> None:
    page = vllm_page()
    huge = page * (MAX_PAGE_BYTES // len(page) + 1)
    assert len(huge) > MAX_PAGE_BYTES
    assert parse_metrics(huge).recognised == 0


def test_numbers_nan_inf_exponents_timestamps_crlf_total() -> None:
    page = (
        b"# TYPE vllm:num_requests_waiting gauge\r\n"
        b'vllm:num_requests_waiting{engine="0"} NaN\r\n'
        b'vllm:num_requests_waiting{engine="1"} 1.5e+01 1731100000000\r\n'
        b'vllm:num_requests_waiting{engine="2"} +Inf\r\n'
        b"# TYPE vllm:num_requests_running gauge\r\n"
        b'vllm:num_requests_running_total{engine="0"} 2E0\r\n'  # an OpenMetrics-style suffix
        b"# TYPE vllm:kv_cache_usage_perc gauge\r\n"
        b'vllm:kv_cache_usage_perc{engine="0"} NaN\r\n'
        b"# EOF\r\n"
    )
    m = parse_metrics(page)
    assert m.waiting == 15.0  # NaN and +Inf series ignored
    assert m.running == 2.0
    assert m.kv_cache is None  # only NaN: unknown, not zero
    assert parse_metrics(untyped(page)).waiting == 15.0


def test_labels_with_escapes_commas_and_braces() -> None:
    block = b'model_name="a \\"quoted\\" , {model}",x="1\\\\2",y="line\\nbreak"'
    assert parse_labels(block) == {
        "model_name": 'a "quoted" , {model}',
        "x": "1\\2",
        "y": "line\nbreak",
    }
    assert label_value(block, "model_name") == 'a "quoted" , {model}'
    assert label_value(b'xmax_lora="9",max_lora="3"', "max_lora") == "3"
    assert label_value(b'a="max_lora=\\"9\\"",max_lora="3"', "max_lora") == "3"
    page = b"vllm:num_requests_waiting{" + block + b"} 6\n"
    m = parse_metrics(page)
    assert m.waiting == 6.0 and m.models == {'a "quoted" , {model}'}


def test_parse_is_fast_enough() -> None:
    """The aim is < 100 µs for a 50 KB page on a quiet machine; the test allows a shared CI
    box 10x that, to catch an accidental quadratic or per-line parse."""
    page = vllm_page(engines=1)
    best = min(_timed(parse_metrics, page) for _ in range(5))
    assert best < 1e-3, best


def _timed(fn: Callable[[bytes], object], page: bytes, n: int = 20) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(page)
    return (time.perf_counter() - start) / n


# -- the scraper -------------------------------------------------------------------------------


@dataclass
class Page:
    status: int = 200
    body: bytes = b""
    hang: bool = False
    hits: list[float] = field(default_factory=list)  # monotonic() of each request


@dataclass
class MetricsServer:
    """One aiohttp server answering `/<name>` with the page set for it."""

    port: int
    pages: dict[str, Page] = field(default_factory=dict)
    runner: web.AppRunner | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, name: str) -> str:
        self.pages.setdefault(name, Page())
        return f"http://127.0.0.1:{self.port}/{name}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release.set()  # hanging handlers end, or cleanup would wait for them
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        page = self.pages[request.match_info["name"]]
        page.hits.append(time.monotonic())
        if page.hang:
            await self.release.wait()
        return web.Response(status=page.status, body=page.body, content_type="text/plain")


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    srv = MetricsServer(free_port())
    await srv.start()
    try:
        yield srv
    finally:
        await client.close_session()  # the pool belongs to this test's event loop
        await srv.stop()


def endpoint(metrics_url: str | None, gpu_url: str | None = None) -> Endpoint:
    return Endpoint("http://127.0.0.1:1/v1", metrics_url, gpu_url)


def config(**kwargs: float) -> PoolMetricsConfig:
    return PoolMetricsConfig(**{"timeout": 0.5, "unready_after": 2, **kwargs})


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10.0
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_fresh_values(server: MetricsServer) -> None:
    ep = endpoint(server.url("m"))
    server.pages["m"].body = vllm_page(3, 7, 0.42)
    scraper = MetricsScraper(lambda: [ep], config(), "sims")
    await scraper.scrape_once()
    assert ep.server is not None and (ep.server.waiting, ep.server.kv_cache) == (3.0, 0.42)
    first_at = ep.server_at
    assert ep.fresh_server(1.0) is ep.server
    assert ep.ready and ep.scrape_failures == 0 and ep.last_error is None

    server.pages["m"].body = vllm_page(9, 1, 0.95)
    await scraper.scrape_once()
    assert ep.server is not None and (ep.server.waiting, ep.server.running) == (9.0, 1.0)
    assert ep.server_at > first_at
    assert ep.fresh_server(1.0, now=ep.server_at + 2) is None  # ages out


async def test_garbage_page_keeps_the_endpoint_ready_without_values(
    server: MetricsServer, caplog: pytest.LogCaptureFixture
) -> None:
    ep = endpoint(server.url("m"))
    server.pages["m"].body = vllm_page()
    scraper = MetricsScraper(lambda: [ep], config(), "sims")
    await scraper.scrape_once()
    assert ep.server is not None

    server.pages["m"].body = b"<html>It works!</html>"
    with caplog.at_level(logging.WARNING, logger="crossway.inference"):
        for _ in range(3):
            await scraper.scrape_once()
    assert ep.ready and ep.scrape_failures == 0
    assert ep.server is None  # not a ServerMetrics of zeros the scheduler would trust
    assert ep.last_error == "metrics page has no known metric names"
    warnings = [r for r in caplog.records if "no known metric names" in r.getMessage()]
    assert len(warnings) == 1  # one per endpoint, not one per scrape

    server.pages["m"].body = vllm_page(1, 1, 0.1)
    await scraper.scrape_once()
    assert ep.server is not None and ep.last_error is None


async def test_no_metrics_page_keeps_the_endpoint_ready(server: MetricsServer) -> None:
    """A server without Prometheus metrics (404) still serves, on Crossway's own counts."""
    ep = endpoint(server.url("none"))
    server.pages["none"].status = 404
    scraper = MetricsScraper(lambda: [ep], config(unready_after=1), "sims")
    for _ in range(3):
        await scraper.scrape_once()
    assert ep.ready and ep.scrape_failures == 0 and ep.server is None
    assert ep.last_error == "no metrics page (metrics answered HTTP 404)"


async def test_too_large_page_is_not_parsed(server: MetricsServer) -> None:
    ep = endpoint(server.url("m"))
    server.pages["m"].body = vllm_page()
    scraper = MetricsScraper(lambda: [ep], config(), "sims", max_page_bytes=10_000)
    await scraper.scrape_once()
    assert ep.ready and ep.server is None
    assert ep.last_error == "metrics page larger than 10000 bytes"


async def test_http_500_makes_it_unready_after_n(
    server: MetricsServer, caplog: pytest.LogCaptureFixture
) -> None:
    ep = endpoint(server.url("m"))
    server.pages["m"].body = vllm_page(2, 2, 0.2)
    scraper = MetricsScraper(lambda: [ep], config(unready_after=3), "sims")
    await scraper.scrape_once()
    good = ep.server

    server.pages["m"].status = 500
    server.pages["m"].body = b"boom"
    with caplog.at_level(logging.INFO, logger="crossway.inference"):
        await scraper.scrape_once()
        await scraper.scrape_once()
        assert ep.ready and ep.scrape_failures == 2
        assert ep.last_error == "metrics answered HTTP 500"
        assert ep.server is good  # the last good values stay, and age out
        await scraper.scrape_once()
        assert not ep.ready and ep.scrape_failures == 3
        await scraper.scrape_once()
        assert not ep.ready and ep.scrape_failures == 4

        server.pages["m"].status = 200
        server.pages["m"].body = vllm_page(5, 5, 0.5)
        await scraper.scrape_once()
        await scraper.scrape_once()
    assert ep.ready and ep.scrape_failures == 0 and ep.last_error is None
    assert ep.server is not None and ep.server.waiting == 5.0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is not ready after 3 failed scrapes" in m for m in messages) == 1
    assert sum("is ready again" in m for m in messages) == 1


async def test_hanging_endpoint_times_out(server: MetricsServer) -> None:
    ep = endpoint(server.url("slow"))
    server.pages["slow"].hang = True
    scraper = MetricsScraper(lambda: [ep], config(timeout=0.2, unready_after=1), "sims")
    start = time.monotonic()
    await scraper.scrape_once()
    assert time.monotonic() - start < 2.0
    assert not ep.ready and ep.scrape_failures == 1
    assert ep.last_error == "metrics did not answer within 0.2 s"


async def test_refused_then_back(caplog: pytest.LogCaptureFixture) -> None:
    srv = MetricsServer(free_port())  # nothing listens there yet
    ep = endpoint(srv.url("m"))
    srv.pages["m"].body = vllm_page(1, 2, 0.3)
    scraper = MetricsScraper(lambda: [ep], config(unready_after=2), "sims")
    try:
        with caplog.at_level(logging.INFO, logger="crossway.inference"):
            await scraper.scrape_once()
            assert ep.ready and ep.scrape_failures == 1
            assert ep.last_error is not None and "127.0.0.1" in ep.last_error
            await scraper.scrape_once()
            assert not ep.ready and ep.server is None

            await srv.start()
            await scraper.scrape_once()
        assert ep.ready and ep.scrape_failures == 0
        assert ep.server is not None and ep.server.kv_cache == 0.3
        assert sum("is ready again" in r.getMessage() for r in caplog.records) == 1
    finally:
        await client.close_session()
        await srv.stop()


async def test_gpu_metrics_and_their_failures(server: MetricsServer) -> None:
    ep = endpoint(server.url("m"), server.url("dcgm"))
    server.pages["m"].body = vllm_page()
    server.pages["dcgm"].body = DCGM_PAGE
    scraper = MetricsScraper(lambda: [ep], config(unready_after=1), "sims")
    await scraper.scrape_once()
    assert ep.gpu is not None and ep.gpu.gpu_fb_free_mb == 4000.0
    assert ep.fresh_gpu(1.0) is ep.gpu

    server.pages["dcgm"].status = 503
    await scraper.scrape_once()
    await scraper.scrape_once()
    assert ep.ready  # GPU metrics failing never takes the endpoint out
    assert ep.extra["gpu_scrape_failures"] == 2
    assert ep.extra["gpu_last_error"] == "metrics answered HTTP 503"

    server.pages["dcgm"].status = 200
    server.pages["dcgm"].body = b"not a metrics page"
    await scraper.scrape_once()
    assert ep.gpu is None and ep.extra["gpu_scrape_failures"] == 0


async def test_no_metrics_url_is_not_scraped(server: MetricsServer) -> None:
    ep = endpoint(None)
    ep.ready = False
    scraper = MetricsScraper(lambda: [ep], config(), "sims")
    await scraper.scrape_once()
    assert not ep.ready and ep.server is None and ep.scrape_failures == 0
    assert scraper.rounds == 1


async def test_loop_scrapes_on_interval_and_close_leaves_no_task(server: MetricsServer) -> None:
    eps = [endpoint(server.url(f"m{i}")) for i in range(5)]
    for i in range(5):
        server.pages[f"m{i}"].body = vllm_page(i, 0, 0.1)
    eps.append(endpoint(server.url("slow")))
    server.pages["slow"].hang = True
    scraper = MetricsScraper(lambda: eps, config(interval=0.05, timeout=0.15), "sims")
    try:
        await scraper.start()
        await scraper.start()  # a second start is a no-op
        assert scraper.running
        await until(lambda: scraper.rounds >= 3, "three rounds")
        assert [e.server.waiting if e.server else None for e in eps[:5]] == [0, 1, 2, 3, 4]
        # a round waits for its slowest scrape (the timeout): rounds never overlap
        slow = server.pages["slow"].hits
        assert all(b - a >= 0.14 for a, b in itertools.pairwise(slow)), slow
        assert len(server.pages["m0"].hits) >= 3

        server.pages["m2"].body = vllm_page(42, 0, 0.1)
        await until(lambda: eps[2].server is not None and eps[2].server.waiting == 42, "new value")
    finally:
        await scraper.close()
    assert not scraper.running
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("crossway-scrape")]
    hits = len(server.pages["m0"].hits)
    await asyncio.sleep(0)  # nothing left to run: no more scrapes
    assert len(server.pages["m0"].hits) == hits
    await scraper.close()  # idempotent


async def test_disabled_scraping_does_not_start(server: MetricsServer) -> None:
    scraper = MetricsScraper(lambda: [], PoolMetricsConfig(enabled=False), "sims")
    await scraper.start()
    assert not scraper.running
    await scraper.close()


async def test_endpoints_follow_the_getter(server: MetricsServer) -> None:
    current = [endpoint(server.url("a"))]
    server.pages["a"].body = vllm_page(1)
    scraper = MetricsScraper(lambda: current, config(), "sims")
    await scraper.scrape_once()
    new = endpoint(server.url("b"))
    server.pages["b"].body = vllm_page(2)
    current = [new]
    await scraper.scrape_once()
    assert new.server is not None and new.server.waiting == 2.0
    assert len(server.pages["a"].hits) == 1


def test_type_lines_without_a_kind() -> None:
    page = (
        b"# TYPE vllm:num_requests_waiting\n"
        b"vllm:num_requests_waiting 2\n"
        b"# TYPE vllm:num_requests_running\r\n"
        b"vllm:num_requests_running 3\r\n"
    )
    m = parse_metrics(page)
    assert (m.waiting, m.running) == (2.0, 3.0)
