"""One inference pool: its endpoints (static, or re-resolved from DNS), the scraper that keeps
their metrics fresh, and the scheduler -- or the external endpoint picker -- that ranks them for
each request. The LLM backend's pool provider (`crossway.llm.providers.pool`) asks `decide`
for the order to try and reports back with `sent` / `failed` / `succeeded`."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from crossway.config.inference import InferencePoolConfig
from crossway.errors import GatewayError, ServiceUnavailable
from crossway.inference.scheduler import Decision, PickRequest, Scheduler
from crossway.inference.state import Endpoint, default_metrics_url
from crossway.telemetry import metrics

if TYPE_CHECKING:
    from crossway.inference.ext_proc import EndpointPickerClient
    from crossway.inference.scrape import MetricsScraper

log = logging.getLogger("crossway.inference")

ENDPOINT_PICKER_FAILED: Final = "endpoint_picker_failed"
"""Error code of a request refused because the external endpoint picker failed (fail closed)."""


class InferencePool:
    """A pool of model servers behind one provider name (one per worker process)."""

    def __init__(
        self,
        name: str,
        config: InferencePoolConfig,
        *,
        endpoint_cooldown: float,
        failures_to_cool: int,
    ) -> None:
        self.name = name
        self.config = config
        self.failures_to_cool = failures_to_cool
        self.scheduler = Scheduler(
            config.scheduler, config.metrics, endpoint_cooldown=endpoint_cooldown
        )
        scrape = config.metrics.enabled
        self._static = [
            Endpoint(
                e.url,
                (e.metrics_url or default_metrics_url(e.url)) if scrape else None,
                e.gpu_metrics_url if scrape else None,
            )
            for e in config.endpoints
        ]
        self._dns: list[Endpoint] = []
        self.endpoints: list[Endpoint] = list(self._static)
        self._by_name = {e.name: e for e in self.endpoints}
        self._scraper: MetricsScraper | None = None
        self._dns_task: asyncio.Task[None] | None = None
        self.picker: EndpointPickerClient | None = None

    async def start(self) -> None:
        if self.config.dns is not None:
            await self._resolve()
            self._dns_task = asyncio.get_running_loop().create_task(self._dns_loop())
        for e in self.endpoints:
            metrics.set_inference_endpoint_ready(self.name, e.name, e.ready)
        if self.config.metrics.enabled:
            from crossway.inference.scrape import MetricsScraper

            self._scraper = MetricsScraper(lambda: self.endpoints, self.config.metrics, self.name)
            await self._scraper.start()
        if self.config.endpoint_picker is not None:
            from crossway.inference.ext_proc import EndpointPickerClient

            self.picker = EndpointPickerClient(self.config.endpoint_picker, self.name)
            await self.picker.start()

    async def close(self) -> None:
        if self._dns_task is not None:
            self._dns_task.cancel()
            try:
                await self._dns_task
            except asyncio.CancelledError:
                pass
            self._dns_task = None
        if self._scraper is not None:
            await self._scraper.close()
            self._scraper = None
        if self.picker is not None:
            await self.picker.close()
            self.picker = None

    # -- DNS -----------------------------------------------------------------------------------

    async def _resolve(self) -> None:
        dns = self.config.dns
        assert dns is not None
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                dns.name, dns.port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            log.warning("inference pool %s: cannot resolve %s: %s", self.name, dns.name, exc)
            return  # keep the endpoints resolved last time
        seen: dict[str, Endpoint] = {}
        for _family, _type, _proto, _canon, sockaddr in infos:
            address = str(sockaddr[0])
            host = f"[{address}]" if ":" in address else address
            origin = f"{dns.scheme}://{host}:{dns.port}"
            current = self._by_name.get(f"{host}:{dns.port}")
            if current is None:
                metrics_url = origin + dns.metrics_path if self.config.metrics.enabled else None
                current = Endpoint(origin + dns.path, metrics_url)
                metrics.set_inference_endpoint_ready(self.name, current.name, True)
            seen[current.name] = current
        gone = [e for e in self._dns if e.name not in seen]
        for e in gone:
            self.scheduler.index.forget(e.name)
        if gone or len(seen) != len(self._dns):
            log.info(
                "inference pool %s: %s resolves to %s",
                self.name,
                dns.name,
                ", ".join(sorted(seen)) or "nothing",
            )
        self._dns = list(seen.values())
        static = {e.name for e in self._static}
        self.endpoints = self._static + [e for e in self._dns if e.name not in static]
        self._by_name = {e.name: e for e in self.endpoints}

    async def _dns_loop(self) -> None:
        dns = self.config.dns
        assert dns is not None
        while True:
            await asyncio.sleep(dns.refresh)
            await self._resolve()

    # -- decisions -----------------------------------------------------------------------------

    async def decide(
        self,
        request: PickRequest,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> tuple[Decision, bytes | None]:
        """The endpoints to try, best first, and the request body the picker replaced (None:
        unchanged). The external endpoint picker, when configured, decides first."""
        if self.picker is None:
            return self.scheduler.decide(self.endpoints, request), None
        from crossway.inference.ext_proc import EndpointPickerError

        candidates = [e for e in self.endpoints if e.ready] or self.endpoints
        try:
            result = await self.picker.pick(headers, body, [e.name for e in candidates])
        except EndpointPickerError as exc:
            if (
                self.config.endpoint_picker is not None
                and self.config.endpoint_picker.failure_mode == "open"
            ):
                log.warning(
                    "inference pool %s: endpoint picker failed (%s); using the built-in scheduler",
                    self.name,
                    exc,
                )
                decision = self.scheduler.decide(self.endpoints, request)
                decision.picked_by = "fallback"
                return decision, None
            log.warning("inference pool %s: endpoint picker failed: %s", self.name, exc)
            raise ServiceUnavailable(
                f"the endpoint picker of inference pool {self.name!r} failed: {exc}",
                code=ENDPOINT_PICKER_FAILED,
            ) from None
        if result.immediate is not None:
            status, text, picker_headers = result.immediate
            message = text.decode("utf-8", "replace").strip() or f"HTTP {status}"
            raise GatewayError(
                f"the endpoint picker refused the request: {message}",
                code="endpoint_picker_refused",
                status=status if 400 <= status <= 599 else 503,
                headers={  # when to come back; the picker's other headers are its own business
                    k.lower(): v for k, v in picker_headers.items() if k.lower() == "retry-after"
                },
            )
        ranked = [self._by_name[name] for name in result.endpoints if name in self._by_name]
        decision = Decision(ranked, {e.name: float(len(ranked) - i) for i, e in enumerate(ranked)})
        decision.picked_by = "endpoint_picker"
        return decision, result.body

    def sent(self, endpoint: Endpoint, request: PickRequest, decision: Decision) -> None:
        endpoint.in_flight += 1
        endpoint.in_flight_tokens += request.tokens
        self.scheduler.sent(endpoint, request, decision)

    def done(self, endpoint: Endpoint, request: PickRequest) -> None:
        endpoint.in_flight -= 1
        endpoint.in_flight_tokens -= request.tokens

    def failed(self, endpoint: Endpoint, unreachable: bool) -> None:
        self.scheduler.failed(endpoint, unreachable, self.failures_to_cool)

    def succeeded(self, endpoint: Endpoint) -> None:
        self.scheduler.succeeded(endpoint)
