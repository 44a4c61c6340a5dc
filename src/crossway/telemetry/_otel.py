"""The OpenTelemetry SDK side of `crossway.telemetry.tracing`, imported only once tracing is on
(the SDK costs start-up time and idle memory a gateway without tracing should not pay).

What is here: the TracerProvider with its batch export, the sampler (parent-based ratio plus
the config's force/drop rules), the W3C propagator, and the bounded, redacted content capture.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, attach, detach
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceState, get_current_span
from opentelemetry.trace import set_span_in_context as set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.re import parse_env_headers
from opentelemetry.util.types import Attributes

from crossway.config.telemetry_tracing import DEFAULT_SERVICE_NAME, TracingConfig
from crossway.policy import cel
from crossway.telemetry import tracing
from crossway.types import Scope

log = logging.getLogger("crossway.telemetry.tracing")

__all__ = ["attach", "detach", "get_current_span", "set_span_in_context"]

PROPAGATOR: Final = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
SERVER: Final = SpanKind.SERVER
KINDS: Final = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
HTTP_TRACES_PATH: Final = "/v1/traces"
EXPORTER_LOGGER: Final = "opentelemetry.exporter.otlp"
"""The OTLP exporters' loggers' parent: their per-batch errors are kept for our one line."""


def error_status(description: str) -> Status:
    return Status(StatusCode.ERROR, description)


# --- sampling -----------------------------------------------------------------------------------


class RuleSampler(Sampler):
    """The configured sampler, overridden for a server span by a force/drop rule's verdict
    (`tracing._verdict`, set around that one `start_span` call). The delegate is swapped when
    a reload changes the ratio, so the process keeps one provider."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        verdict = tracing._verdict
        if verdict is None:
            return self.delegate.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        parent_state = get_current_span(parent_context).get_span_context().trace_state
        if verdict:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent_state)
        return SamplingResult(Decision.DROP, None, parent_state)

    def get_description(self) -> str:
        return f"CrosswayRules{{{self.delegate.get_description()}}}"


SAMPLER: Final = RuleSampler(ParentBased(ALWAYS_ON))


def sampler_from(config: TracingConfig) -> Sampler:
    """`sample_ratio` as a parent-based ratio, else the `OTEL_TRACES_SAMPLER` one."""
    if config.sample_ratio is not None:
        return ParentBased(TraceIdRatioBased(config.sample_ratio))
    name = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    arg = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    ratio = 1.0
    if "traceidratio" in name:
        try:
            ratio = min(max(float(arg), 0.0), 1.0) if arg else 1.0
        except ValueError:
            log.warning("tracing: OTEL_TRACES_SAMPLER_ARG %r is not a number; using 1.0", arg)
    samplers: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(TraceIdRatioBased(ratio)),
    }
    sampler = samplers.get(name)
    if sampler is None:
        log.warning("tracing: unknown OTEL_TRACES_SAMPLER %r; sampling every trace", name)
        return ParentBased(ALWAYS_ON)
    return sampler


def root_ratio(sampler: RuleSampler) -> float | None:
    """The root ratio of a parent-based ratio (or always-on/off) sampler, None for any other:
    what lets the server span decide sampling without the SDK."""
    delegate = sampler.delegate
    if not isinstance(delegate, ParentBased):
        return None
    root = getattr(delegate, "_root", None)
    if isinstance(root, TraceIdRatioBased):
        return float(root.rate)
    if root is ALWAYS_ON:
        return 1.0
    if root is ALWAYS_OFF:
        return 0.0
    return None


def compile_rules(sources: Sequence[str]) -> list[cel.Rule]:
    return [cel.compile_rule(source) for source in sources]


def request_attributes(scope: Scope) -> dict[str, Any]:
    """CEL's `request` map at the server span's start (the TCP peer as `source`)."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    client = scope.get("client") or ("", 0)
    return {
        "method": scope["method"],
        "path": scope["path"],
        "host": headers.get("host", ""),
        "scheme": scope.get("scheme", "http"),
        "headers": headers,
        "source": {"address": client[0], "port": client[1]},
    }


def matches(rule: cel.Rule, request: Mapping[str, Any]) -> bool | None:
    """The rule's verdict; None when it failed to evaluate."""
    return cel.evaluate(rule, cel.activation({"request": request}, ("request",)))


# --- export -------------------------------------------------------------------------------------


def _protocol(config: TracingConfig) -> str:
    return (
        config.protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def _service_name(config: TracingConfig) -> str:
    if config.service_name:
        return config.service_name
    if os.environ.get("OTEL_SERVICE_NAME"):
        return os.environ["OTEL_SERVICE_NAME"]
    for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == SERVICE_NAME and value.strip():
            return value.strip()
    return DEFAULT_SERVICE_NAME


def _headers(config: TracingConfig) -> dict[str, str]:
    headers: dict[str, str] = {}
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        if os.environ.get(variable):
            headers.update(parse_env_headers(os.environ[variable], liberal=True))
    headers.update({k: v.get_secret_value() for k, v in config.headers.items()})
    return headers


def export_key(config: TracingConfig) -> tuple[Any, ...]:
    """What the provider is built from: a reload that changes none of it keeps the provider."""
    env = tuple(
        os.environ.get(name)
        for name in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_SERVICE_NAME",
            "OTEL_RESOURCE_ATTRIBUTES",
        )
    )
    return (
        config.endpoint,
        config.protocol,
        tuple(sorted((k, v.get_secret_value()) for k, v in config.headers.items())),
        config.service_name,
        config.export_timeout,
        config.max_queue_size,
        env,
    )


def _http_endpoint(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None  # the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT itself
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(HTTP_TRACES_PATH) else endpoint + HTTP_TRACES_PATH


def _exporter(config: TracingConfig) -> tuple[SpanExporter, str]:
    protocol = _protocol(config)
    headers = _headers(config) or None
    timeout = config.export_timeout
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        grpc = GrpcExporter(endpoint=config.endpoint, headers=headers, timeout=timeout)
        return grpc, f"grpc {config.endpoint or 'from OTEL_EXPORTER_OTLP_ENDPOINT'}"
    if protocol not in ("http/protobuf", "http"):
        log.warning("tracing: OTLP protocol %r is not supported; using http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    http = HttpExporter(endpoint=_http_endpoint(config.endpoint), headers=headers, timeout=timeout)
    return http, http._endpoint


class _LastError(logging.Handler):
    """Keeps the first log message of an export (the exporters log every failed batch and
    retry) instead of letting them reach the gateway's log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if self.last:
            return  # the first message of a failed export says why; the rest are retries
        try:
            self.last = record.getMessage()[:500]
        except Exception:
            self.last = str(record.msg)[:500]


_LAST_ERROR: Final = _LastError()


def _quiet_exporter_logs() -> None:
    logger = logging.getLogger(EXPORTER_LOGGER)
    if _LAST_ERROR not in logger.handlers:
        logger.addHandler(_LAST_ERROR)
        logger.propagate = False


class LoggedOnceExporter(SpanExporter):
    """Wraps an OTLP exporter: a failing export is logged once (and once when it works again),
    never per batch; nothing it raises reaches the SDK's thread."""

    def __init__(self, inner: SpanExporter, target: str) -> None:
        self.inner = inner
        self.target = target
        self.failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        _LAST_ERROR.last = ""
        try:
            result = self.inner.export(spans)
        except Exception as exc:
            _LAST_ERROR.last = f"{type(exc).__name__}: {exc}"
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.FAILURE:
            if not self.failing:
                self.failing = True
                log.warning(
                    "tracing: exporting spans to %s failed (%s); spans are dropped until it "
                    "works again (logged once)",
                    self.target,
                    _LAST_ERROR.last or "no detail",
                )
        elif self.failing:
            self.failing = False
            log.info("tracing: exporting spans to %s works again", self.target)
        return result

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception as exc:
            log.debug("tracing: exporter shutdown: %s", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def new_provider(config: TracingConfig) -> TracerProvider:
    """A provider exporting over OTLP in batches: a bounded queue (full: spans dropped), a
    short export timeout, on the SDK's own thread. Shut down (flushed) at process exit."""
    _quiet_exporter_logs()
    exporter, target = _exporter(config)
    resource = Resource.create({SERVICE_NAME: _service_name(config)})
    provider = TracerProvider(resource=resource, sampler=SAMPLER, shutdown_on_exit=True)
    provider.add_span_processor(
        BatchSpanProcessor(
            LoggedOnceExporter(exporter, target),
            max_queue_size=config.max_queue_size,
            max_export_batch_size=min(512, config.max_queue_size),
            export_timeout_millis=config.export_timeout * 1000,
        )
    )
    log.info("tracing: exporting spans over OTLP to %s", target)
    return provider


# --- content capture ----------------------------------------------------------------------------


def _redact(value: Any) -> Any:
    try:
        from crossway.telemetry.redaction import redact
    except ImportError:  # pragma: no cover - the module ships with the gateway
        return value
    return redact(value)


def bounded_text(value: Any, limit: int) -> tuple[str, bool]:
    """`value` as redacted text of at most `limit` bytes (cut at a character boundary), and
    whether it was cut."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = raw.decode("utf-8", "replace")
    value = _redact(value)
    if isinstance(value, str):
        data = value.encode()
    else:
        data = orjson.dumps(value, default=str)
    if len(data) <= limit:
        return data.decode(), False
    return data[:limit].decode("utf-8", "ignore"), True
