"""The metrics scraper of an inference pool: each endpoint's Prometheus page, read on a short
interval off the request path, parsed into a `ServerMetrics`.

`parse_metrics` reads only the names scheduling needs, straight from the page's bytes: a
vLLM page is 30-100 KB, mostly histogram `_bucket` lines, so it never splits the page into
lines or parses a line it does not need. The page is split once (in C) at its `# TYPE`
lines into its families' groups (the text format puts all of a family's lines in one group
after its TYPE line); only the groups of wanted names are searched for their sample lines,
each matched by one regex (labels with escaped quotes, `}` and `,` in values, `NaN` /
`+Inf`, exponents, an optional timestamp, CRLF, an OpenMetrics `_total` suffix). A wanted
name without a TYPE line is looked for on the whole page when its family has other TYPE
lines (typed and untyped lines mixed), and every family is searched whole on a page with no
TYPE line at all (slower: about 3x); a family with no TYPE line on a page that has others
is not looked for. About 60 µs for a 50 KB vLLM page.

Names understood (several series of one name: counts summed, usage the largest):

    waiting   vllm:num_requests_waiting, sglang:num_queue_reqs, trtllm_num_requests_waiting,
              nv_trt_llm_request_metrics{request_type="waiting"}, tgi_queue_size,
              nv_inference_pending_request_count (plain Triton)
    running   vllm:num_requests_running, sglang:num_running_reqs, trtllm_num_requests_running,
              nv_trt_llm_request_metrics{request_type="scheduled"} (else "active"),
              tgi_batch_current_size
    kv_cache  vllm:kv_cache_usage_perc, vllm:gpu_cache_usage_perc (older vLLM),
              sglang:token_usage, trtllm_kv_cache_utilization,
              nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"} (else used/max)
    LoRA      vllm:lora_requests_info{running_lora_adapters, waiting_lora_adapters, max_lora}:
              its value is a timestamp, the series with the newest one is the current state
    blocks    vllm:cache_config_info{block_size, num_gpu_blocks},
              sglang:cache_config_info{page_size, num_pages},
              trtllm_kv_cache_tokens_per_block / trtllm_kv_cache_max_blocks,
              nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per" / "max"}
    GPU       DCGM_FI_DEV_GPU_UTIL (0-100, the mean over GPUs / 100),
              DCGM_FI_DEV_FB_USED / DCGM_FI_DEV_FB_FREE (MiB, summed over GPUs)
    models    the `model_name` labels of those series

(The TensorRT-LLM / Triton names are the ones the Gateway API Inference Extension's endpoint
picker maps: Triton's TensorRT-LLM backend and `trtllm-serve`.)

`MetricsScraper` runs one loop per pool: every `interval` (drift-free; a round that overruns
makes the next start at the first tick after it ended, rounds never stack) it GETs every
endpoint's metrics URL concurrently, each bounded by `timeout`, through the gateway's one
outbound client (`crossway.proxy.client`). Per endpoint:

- 2xx with known names: `server` = the values, `server_at` = now, `scrape_failures` = 0,
  `ready`, `last_error` = None.
- 2xx without a known name (an HTML page, another exporter, a page over `MAX_PAGE_BYTES`):
  the server answers, so it stays (or becomes) ready and its failures reset, but `server` is
  set to None, not to a `ServerMetrics` of zeros: a page the scraper cannot read must not make
  an endpoint look idle and draw every request. The scheduler then scores it on Crossway's own
  in-flight counts. `last_error` says why; one warning is logged per endpoint (again only
  after it once had readable metrics).
- 404 (a server without a metrics page, e.g. one with no Prometheus metrics): the same.
- refused, timed out, another non-2xx: `scrape_failures` + 1, `last_error`; at `unready_after`
  consecutive failures the endpoint is not ready (logged once), and ready again at the next
  successful scrape (logged once). The values of the last good scrape stay, and age out by
  `stale_after` (`Endpoint.fresh_server`).
- the GPU URL (a DCGM exporter) is scraped the same way into `gpu` / `gpu_at`; its failures
  never make the endpoint unready (they are counted in `extra["gpu_scrape_failures"]`).
- `metrics_url` None: not scraped, `ready` is left as it is.

One hanging endpoint holds its round up to `timeout`: keep `timeout` below `stale_after`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import Final

from crossway.config.common import Timeouts, UpstreamTls
from crossway.config.inference import PoolMetricsConfig
from crossway.errors import GatewayError
from crossway.inference.state import Endpoint, ServerMetrics
from crossway.telemetry.metrics import set_inference_endpoint_ready

log = logging.getLogger("crossway.inference")

MAX_PAGE_BYTES: Final = 4 * 1024 * 1024
"""Largest metrics page read and parsed; a larger one counts as having no known metrics."""
ERROR_BODY_BYTES: Final = 4096
"""Bytes of an error answer's body read (and dropped) so its connection can be reused."""
SCRAPE_HEADERS: Final = [("accept", "text/plain;version=0.0.4;q=1, */*;q=0.1")]
"""Asks for the classic text format (servers that speak OpenMetrics too send it then)."""

# -- the parser --------------------------------------------------------------------------------

VLLM_WAITING: Final = b"vllm:num_requests_waiting"
VLLM_RUNNING: Final = b"vllm:num_requests_running"
VLLM_KV: Final = b"vllm:kv_cache_usage_perc"
VLLM_KV_LEGACY: Final = b"vllm:gpu_cache_usage_perc"
VLLM_LORA: Final = b"vllm:lora_requests_info"
VLLM_CACHE_CONFIG: Final = b"vllm:cache_config_info"
SGLANG_WAITING: Final = b"sglang:num_queue_reqs"
SGLANG_RUNNING: Final = b"sglang:num_running_reqs"
SGLANG_KV: Final = b"sglang:token_usage"
SGLANG_CACHE_CONFIG: Final = b"sglang:cache_config_info"
TRTLLM_WAITING: Final = b"trtllm_num_requests_waiting"
TRTLLM_RUNNING: Final = b"trtllm_num_requests_running"
TRTLLM_KV: Final = b"trtllm_kv_cache_utilization"
TRTLLM_BLOCK_SIZE: Final = b"trtllm_kv_cache_tokens_per_block"
TRTLLM_BLOCKS: Final = b"trtllm_kv_cache_max_blocks"
TRITON_REQUESTS: Final = b"nv_trt_llm_request_metrics"
TRITON_KV_BLOCKS: Final = b"nv_trt_llm_kv_cache_block_metrics"
TRITON_PENDING: Final = b"nv_inference_pending_request_count"
TGI_QUEUE: Final = b"tgi_queue_size"
TGI_BATCH: Final = b"tgi_batch_current_size"
DCGM_UTIL: Final = b"DCGM_FI_DEV_GPU_UTIL"
DCGM_FB_USED: Final = b"DCGM_FI_DEV_FB_USED"
DCGM_FB_FREE: Final = b"DCGM_FI_DEV_FB_FREE"

_FAMILIES: Final[tuple[tuple[bytes, tuple[bytes, ...]], ...]] = (
    (
        b"vllm:",
        (VLLM_WAITING, VLLM_RUNNING, VLLM_KV, VLLM_KV_LEGACY, VLLM_LORA, VLLM_CACHE_CONFIG),
    ),
    (b"sglang:", (SGLANG_WAITING, SGLANG_RUNNING, SGLANG_KV, SGLANG_CACHE_CONFIG)),
    (b"trtllm_", (TRTLLM_WAITING, TRTLLM_RUNNING, TRTLLM_KV, TRTLLM_BLOCK_SIZE, TRTLLM_BLOCKS)),
    (b"nv_trt_llm_", (TRITON_REQUESTS, TRITON_KV_BLOCKS)),
    (TRITON_PENDING, (TRITON_PENDING,)),
    (b"tgi_", (TGI_QUEUE, TGI_BATCH)),
    (b"DCGM_FI_DEV_", (DCGM_UTIL, DCGM_FB_USED, DCGM_FB_FREE)),
)
"""Wanted names by family: a family whose prefix starts no line is not searched further."""
_SEARCH: Final = tuple(
    (prefix, b"\n" + prefix, tuple((name, b"\n" + name) for name in names))
    for prefix, names in _FAMILIES
)

# What follows a wanted name on its sample line: an optional OpenMetrics `_total`, optional
# labels (quoted values may hold `}`, `,` and escaped quotes), the value, an optional
# timestamp, the line's end. A longer name (`..._bucket`, `..._by_reason`) does not match.
_WANTED: Final = {
    alias: (family, name)
    for family, (_, names) in enumerate(_FAMILIES)
    for name in names
    for alias in (name, name + b"_total")
}
"""A TYPE line's name -> (its family's index in `_FAMILIES`, the wanted name)."""
_REPLACED_BY: Final = {VLLM_KV_LEGACY: VLLM_KV}
"""Older names not looked for when their successor is on the page."""
_TYPE_LINE: Final = b"# TYPE "
_TYPE_NEEDLE: Final = b"\n# TYPE "
_MAX_NAME: Final = 512

_SAMPLE: Final = re.compile(
    rb"(?:_total)?"
    rb'(?:\{((?:[^"}\n\\]++|"(?:[^"\\\n]++|\\.)*+")*+)\})?'
    rb"[ \t]+([^ \t\r\n]+)"
    rb"(?:[ \t]+[^ \t\r\n]+)?"
    rb"[ \t]*(?:\r?\n|\r?\Z)"
)
_LABEL: Final = re.compile(
    rb'[ \t,]*([A-Za-z_][A-Za-z0-9_.:]*|"(?:[^"\\]++|\\.)*+")[ \t]*=[ \t]*"((?:[^"\\]++|\\.)*+)"'
)
_UNESCAPE: Final = re.compile(rb"\\(.)")
_ESCAPES: Final = {b"n": b"\n", b"\\": b"\\", b'"': b'"'}

Samples = list[tuple[bytes | None, float]]
"""One name's series: (its label block, or None; its value)."""


def _text(raw: bytes) -> str:
    if b"\\" in raw:
        raw = _UNESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), raw)
    return raw.decode("utf-8", "replace")


def parse_labels(block: bytes | None) -> dict[str, str]:
    """The labels of a sample's `{...}` block (escapes undone)."""
    if not block:
        return {}
    labels: dict[str, str] = {}
    for match in _LABEL.finditer(block):
        name = match.group(1)
        if name.startswith(b'"'):
            name = name[1:-1]
        labels[_text(name)] = _text(match.group(2))
    return labels


_LABEL_VALUE: dict[str, re.Pattern[bytes]] = {}


def label_value(block: bytes | None, label: str) -> str | None:
    """One label's value in a sample's `{...}` block (escapes undone), without parsing the
    others."""
    if not block:
        return None
    pattern = _LABEL_VALUE.get(label)
    if pattern is None:
        name = re.escape(label.encode())
        pattern = _LABEL_VALUE[label] = re.compile(
            rb"(?:^|,)[ \t]*(?:" + name + rb'|"' + name + rb'")[ \t]*=[ \t]*"((?:[^"\\]++|\\.)*+)"'
        )
    match = pattern.search(block)
    return _text(match.group(1)) if match is not None else None


def _groups(page: bytes) -> dict[bytes, list[bytes]]:
    """Each family's group of lines (from its `# TYPE` line to the next), by name. One C
    pass: the page is split at its TYPE lines."""
    parts = page.split(_TYPE_NEEDLE)
    if page.startswith(_TYPE_LINE):
        parts[0] = parts[0][len(_TYPE_LINE) :]
    else:
        del parts[0]  # lines before the first TYPE line: the untyped search covers them
    groups: dict[bytes, list[bytes]] = {}
    for part in parts:  # `<name> <type>\n<its lines>`
        line_end = part.find(b"\n", 0, _MAX_NAME)
        end = part.find(b" ", 0, line_end if line_end >= 0 else _MAX_NAME)
        if end < 0:
            end = line_end
        name = part[:end].rstrip(b"\r\t") if end >= 0 else part
        found = groups.get(name)
        if found is None:
            groups[name] = [part]
        else:  # a family whose TYPE line repeats (pages concatenated)
            found.append(part)
    return groups


def _collect(samples: Samples, text: bytes, needle: bytes, first_line: int) -> None:
    """Append the samples of the name of `needle` (`\\n<name>`) on the lines of `text`; with
    `first_line` >= 0, `text` starts with the name and its sample's rest is there."""
    match = _SAMPLE.match
    find = text.find
    after = first_line
    pos = find(needle)
    while True:
        if after >= 0 and (sample := match(text, after)) is not None:
            try:
                samples.append((sample.group(1), float(sample.group(2))))
            except ValueError:  # not a number
                pass
        if pos < 0:
            return
        after = pos + len(needle)
        pos = find(needle, after)


def _find(page: bytes) -> dict[bytes, Samples]:
    """The samples of every wanted name on the page. On a page with `# TYPE` lines a name is
    looked for in its family's group (the format puts all of a family's lines in one group
    after its TYPE line), and on the whole page only when another name of its family has a
    TYPE line and it has none (typed and untyped lines mixed); a page without TYPE lines is
    searched whole, family by family."""
    found: dict[bytes, Samples] = {}
    groups = _groups(page)
    if not groups:
        for prefix, prefix_needle, names in _SEARCH:
            if prefix_needle in page or page.startswith(prefix):
                for name, needle in names:
                    samples: Samples = []
                    _collect(samples, page, needle, len(name) if page.startswith(name) else -1)
                    if samples:
                        found[name] = samples
        return found
    typed: dict[int, dict[bytes, list[bytes]]] = {}
    for group, parts in groups.items():
        wanted = _WANTED.get(group)
        if wanted is not None:
            typed.setdefault(wanted[0], {}).setdefault(wanted[1], []).extend(parts)
    for family, names_typed in typed.items():
        for name, needle in _SEARCH[family][2]:
            samples = []
            found_parts = names_typed.get(name)
            if found_parts is not None:
                for part in found_parts:
                    _collect(samples, part, needle, -1)
            elif _REPLACED_BY.get(name) not in names_typed:
                # an untyped name of a typed family (typed and untyped lines mixed)
                _collect(samples, page, needle, len(name) if page.startswith(name) else -1)
            if samples:
                found[name] = samples
    return found


def _values(samples: Samples | None) -> list[float]:
    if not samples:
        return []
    return [v for _, v in samples if math.isfinite(v)]


def _labelled(samples: Samples | None, label: str, value: str) -> Samples:
    """The series of `samples` whose `label` is `value`."""
    if not samples:
        return []
    want = value.encode()
    return [
        (block, v)
        for block, v in samples
        if block is not None and want in block and label_value(block, label) == value
    ]


def _count(*candidates: Samples | None) -> float | None:
    """The sum over the series of the first candidate that has any (negative values as 0)."""
    for samples in candidates:
        values = _values(samples)
        if values:
            return float(sum(max(v, 0.0) for v in values))
    return None


def _usage(*candidates: Samples | None) -> float | None:
    """The largest value, 0-1, of the first candidate that has any."""
    for samples in candidates:
        values = _values(samples)
        if values:
            return min(max(max(values), 0.0), 1.0)
    return None


def _int(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value >= 0 else None


def _adapters(text: str | None) -> frozenset[str]:
    if not text:
        return frozenset()
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _info(samples: Samples | None) -> bytes | None:
    """The label block of an info-style gauge's first series."""
    return samples[0][0] if samples else None


def parse_metrics(page: bytes) -> ServerMetrics:
    """The values scheduling needs from a Prometheus text page (see the module docstring).
    Never raises: a page that is not one (or is larger than `MAX_PAGE_BYTES`) gives a
    `ServerMetrics` with `recognised == 0`."""
    if not page or len(page) > MAX_PAGE_BYTES:
        return ServerMetrics()
    if not isinstance(page, bytes):
        page = bytes(page)
    found = _find(page)
    if not found:
        return ServerMetrics()
    get = found.get
    out = ServerMetrics(recognised=len(found))

    requests = get(TRITON_REQUESTS)
    out.waiting = _count(
        get(VLLM_WAITING),
        get(SGLANG_WAITING),
        get(TRTLLM_WAITING),
        _labelled(requests, "request_type", "waiting"),
        get(TGI_QUEUE),
        get(TRITON_PENDING),
    )
    out.running = _count(
        get(VLLM_RUNNING),
        get(SGLANG_RUNNING),
        get(TRTLLM_RUNNING),
        _labelled(requests, "request_type", "scheduled"),
        _labelled(requests, "request_type", "active"),
        get(TGI_BATCH),
    )

    blocks = get(TRITON_KV_BLOCKS)
    out.kv_cache = _usage(
        get(VLLM_KV),
        get(VLLM_KV_LEGACY),
        get(SGLANG_KV),
        get(TRTLLM_KV),
        _labelled(blocks, "kv_cache_block_type", "fraction"),
    )
    if out.kv_cache is None and blocks:
        used = _values(_labelled(blocks, "kv_cache_block_type", "used"))
        total = _values(_labelled(blocks, "kv_cache_block_type", "max"))
        if used and total and sum(total) > 0:
            out.kv_cache = min(max(sum(used) / sum(total), 0.0), 1.0)

    lora = [(block, v) for block, v in get(VLLM_LORA) or () if not math.isnan(v)]
    if lora:
        newest = max(lora, key=lambda s: s[1])[0]
        out.running_adapters = _adapters(label_value(newest, "running_lora_adapters"))
        out.waiting_adapters = _adapters(label_value(newest, "waiting_lora_adapters"))
        out.max_lora = _int(label_value(newest, "max_lora"))

    if VLLM_CACHE_CONFIG in found:
        info = _info(get(VLLM_CACHE_CONFIG))
        out.block_size = _int(label_value(info, "block_size"))
        out.num_gpu_blocks = _int(label_value(info, "num_gpu_blocks"))
    elif SGLANG_CACHE_CONFIG in found:
        info = _info(get(SGLANG_CACHE_CONFIG))
        out.block_size = _int(label_value(info, "page_size"))
        out.num_gpu_blocks = _int(label_value(info, "num_pages"))
    elif TRTLLM_BLOCK_SIZE in found or TRTLLM_BLOCKS in found:
        out.block_size = _first_int(get(TRTLLM_BLOCK_SIZE))
        out.num_gpu_blocks = _first_int(get(TRTLLM_BLOCKS))
    elif blocks:
        out.block_size = _first_int(_labelled(blocks, "kv_cache_block_type", "tokens_per"))
        out.num_gpu_blocks = _first_int(_labelled(blocks, "kv_cache_block_type", "max"))

    util = _values(get(DCGM_UTIL))
    if util:
        out.gpu_util = min(max(sum(util) / len(util) / 100.0, 0.0), 1.0)
    fb_used = _values(get(DCGM_FB_USED))
    if fb_used:
        out.gpu_fb_used_mb = float(sum(fb_used))
    fb_free = _values(get(DCGM_FB_FREE))
    if fb_free:
        out.gpu_fb_free_mb = float(sum(fb_free))

    models: set[str] = set()
    for samples in found.values():
        for block, _ in samples:
            if block is not None and b"model_name" in block:
                model = label_value(block, "model_name")
                if model:
                    models.add(model)
    if models:
        out.models = frozenset(models)
    return out


def _first_int(samples: Samples | None) -> int | None:
    values = _values(samples)
    return int(values[0]) if values and values[0] >= 0 else None


# -- the scraper -------------------------------------------------------------------------------

_EXTRA_GARBAGE_WARNED: Final = "scrape_garbage_warned"
_EXTRA_GPU_FAILURES: Final = "gpu_scrape_failures"
_EXTRA_GPU_ERROR: Final = "gpu_last_error"


class ScrapeFailed(Exception):
    """One scrape got no page (refused, timed out, an HTTP error status)."""


class NoMetricsPage(Exception):
    """The endpoint answers, but has no metrics page (404): a server without Prometheus
    metrics, scheduled on Crossway's own counts like one whose page is garbage."""


class MetricsScraper:
    """Scrapes the metrics of one pool's endpoints on an interval (see the module docstring).
    `endpoints_getter` is called at every round, so endpoints that appear or go (DNS) follow."""

    def __init__(
        self,
        endpoints_getter: Callable[[], Iterable[Endpoint]],
        config: PoolMetricsConfig,
        pool_name: str,
        *,
        tls: UpstreamTls | None = None,
        max_page_bytes: int = MAX_PAGE_BYTES,
    ) -> None:
        self._endpoints = endpoints_getter
        self.config = config
        self.pool_name = pool_name
        self._tls = tls
        self._max_page = max_page_bytes
        t = config.timeout
        self._timeouts = Timeouts(connect=t, first_byte=t, idle=t)
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        """Rounds completed (for tests and the admin view)."""

    @property
    def running(self) -> bool:
        """Whether the loop runs."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the loop (a first round at once). Does nothing when scraping is disabled or
        the loop already runs."""
        if self.running or not self.config.enabled:
            return
        self._task = asyncio.create_task(self._run(), name=f"crossway-scrape:{self.pool_name}")

    async def close(self) -> None:
        """Stop the loop and wait until it has (an unfinished round is cancelled)."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # close() itself was cancelled

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval
        next_at = loop.time()
        while True:
            try:
                await self.scrape_once()
            except Exception:  # a bug must not end scraping for good
                log.exception("inference pool %s: a scrape round failed", self.pool_name)
            now = loop.time()
            next_at += interval
            if next_at < now:  # the round overran: skip the ticks it missed, never stack
                next_at += math.ceil((now - next_at) / interval) * interval
            await asyncio.sleep(next_at - now)

    async def scrape_once(self) -> None:
        """One round: every endpoint's metrics (and GPU metrics) URL, concurrently."""
        jobs = []
        for endpoint in self._endpoints():
            if endpoint.metrics_url is not None:
                jobs.append(self._scrape_server(endpoint, endpoint.metrics_url))
            if endpoint.gpu_metrics_url is not None:
                jobs.append(self._scrape_gpu(endpoint, endpoint.gpu_metrics_url))
        if jobs:
            for result in await asyncio.gather(*jobs, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error(
                        "inference pool %s: scrape failed unexpectedly",
                        self.pool_name,
                        exc_info=result,
                    )
                elif isinstance(result, BaseException):  # a cancellation
                    raise result
        self.rounds += 1

    async def _fetch(self, url: str) -> bytes:
        from crossway.proxy.client import read_body, send

        try:
            async with asyncio.timeout(self.config.timeout):
                resp = await send(
                    "GET", url, SCRAPE_HEADERS, b"", self._timeouts, self._tls, stream=False
                )
                if not 200 <= resp.status < 300:
                    await read_body(resp, self._timeouts, ERROR_BODY_BYTES)
                    if resp.status == 404:
                        raise NoMetricsPage(f"metrics answered HTTP {resp.status}")
                    raise ScrapeFailed(f"metrics answered HTTP {resp.status}")
                return await read_body(resp, self._timeouts, self._max_page)
        except TimeoutError:
            raise ScrapeFailed(f"metrics did not answer within {self.config.timeout:g} s") from None
        except GatewayError as exc:
            raise ScrapeFailed(str(exc)) from None
        except OSError as exc:  # pragma: no cover - the client maps these; belt and braces
            raise ScrapeFailed(f"metrics unreachable: {exc}") from None

    def _parse(self, body: bytes) -> tuple[ServerMetrics | None, str | None]:
        if len(body) > self._max_page:
            return None, f"metrics page larger than {self._max_page} bytes"
        metrics = parse_metrics(body)
        if metrics.recognised == 0:
            return None, "metrics page has no known metric names"
        return metrics, None

    async def _scrape_server(self, endpoint: Endpoint, url: str) -> None:
        problem: str | None
        try:
            body = await self._fetch(url)
        except NoMetricsPage as exc:
            metrics, problem = None, f"no metrics page ({exc})"
        except ScrapeFailed as exc:
            endpoint.scrape_failures += 1
            endpoint.last_error = str(exc)
            if endpoint.ready and endpoint.scrape_failures >= self.config.unready_after:
                endpoint.ready = False
                set_inference_endpoint_ready(self.pool_name, endpoint.name, False)
                log.warning(
                    "inference pool %s: endpoint %s is not ready after %d failed scrapes: %s",
                    self.pool_name,
                    endpoint.name,
                    endpoint.scrape_failures,
                    exc,
                )
            return
        else:
            metrics, problem = self._parse(body)
        came_back = not endpoint.ready
        endpoint.scrape_failures = 0
        endpoint.ready = True
        endpoint.last_error = problem
        if metrics is None:
            endpoint.server = None
            if not endpoint.extra.get(_EXTRA_GARBAGE_WARNED):
                endpoint.extra[_EXTRA_GARBAGE_WARNED] = True
                log.warning(
                    "inference pool %s: endpoint %s: %s (%s); it is scheduled on Crossway's "
                    "own counts only",
                    self.pool_name,
                    endpoint.name,
                    problem,
                    url,
                )
        else:
            endpoint.server = metrics
            endpoint.server_at = time.monotonic()
            endpoint.extra.pop(_EXTRA_GARBAGE_WARNED, None)
        if came_back:
            set_inference_endpoint_ready(self.pool_name, endpoint.name, True)
            log.info("inference pool %s: endpoint %s is ready again", self.pool_name, endpoint.name)

    async def _scrape_gpu(self, endpoint: Endpoint, url: str) -> None:
        raw = endpoint.extra.get(_EXTRA_GPU_FAILURES)
        failures = raw if isinstance(raw, int) else 0
        try:
            body = await self._fetch(url)
        except ScrapeFailed as exc:
            failures += 1
            endpoint.extra[_EXTRA_GPU_FAILURES] = failures
            endpoint.extra[_EXTRA_GPU_ERROR] = str(exc)
            if failures == self.config.unready_after:
                log.warning(
                    "inference pool %s: GPU metrics of endpoint %s failed %d times: %s",
                    self.pool_name,
                    endpoint.name,
                    failures,
                    exc,
                )
            return
        metrics, problem = self._parse(body)
        if failures >= self.config.unready_after:
            log.info(
                "inference pool %s: GPU metrics of endpoint %s answer again",
                self.pool_name,
                endpoint.name,
            )
        endpoint.extra[_EXTRA_GPU_FAILURES] = 0
        endpoint.extra[_EXTRA_GPU_ERROR] = problem
        endpoint.gpu = metrics
        if metrics is not None:
            endpoint.gpu_at = time.monotonic()


__all__ = [
    "MAX_PAGE_BYTES",
    "MetricsScraper",
    "ScrapeFailed",
    "label_value",
    "parse_labels",
    "parse_metrics",
]
