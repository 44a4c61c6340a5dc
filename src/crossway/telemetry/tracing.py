"""OpenTelemetry tracing (issue 10): the server span per request, child spans, W3C context
propagation to every upstream.

Off unless configured (`telemetry.tracing`, or `OTEL_EXPORTER_OTLP_ENDPOINT`): then this module
never imports OpenTelemetry and every function below is one global test.

The API the protocol packages use (all safe to call with tracing off; none ever raises):

    enabled() -> bool
        Whether this process traces (a reloaded config may turn it on or off).
    span(name, attributes=None, *, kind="internal") -> context manager yielding Span | None
        A child of the current span, current inside the `with` (so `inject` and nested spans
        see it); an exception leaving the block sets the span's error status (its type and
        message, no stack). `kind`: "internal", "client", "server", "producer", "consumer".
    start_span(name, attributes=None, *, kind="client") -> Span | None
        A child of the current span that is NOT made current and outlives a `with` (a stream's
        attempt ends when the stream does); pair with `use_span` and `end_span`.
    use_span(span) -> context manager
        Make `span` (may be None) current inside the block, without ending it.
    end_span(span, error=None, attributes=None) -> None
        Set `attributes`, an error status when `error` (an exception or a text) is given, and
        end `span` (None: nothing).
    set_attributes(span, attributes) -> None
        Add attributes to `span` (None values skipped; None span: nothing).
    current_span() -> Span | None
        The current recording span, if any.
    inject(headers: MutableMapping[str, str]) -> None
        Add `traceparent` / `tracestate` / `baggage` of the current span to `headers` (an HTTP
        header dict, or an MCP `_meta` dict). `crossway.proxy.outbound.outbound_headers` calls
        it for every outbound request, so HTTP callers need not.
    extract(carrier: Mapping[str, str]) -> context | None; attach/detach
        Continue a trace a carrier (MCP `_meta`) brought: `token = attach(extract(meta))` ...
        `detach(token)`.
    capture_content() -> bool
        Whether prompts, completions and tool arguments/results may be recorded.
    capture(span, event, attribute, value) -> None
        Record `value` (bytes, str or JSON-able) as span event `event` with one attribute
        `attribute` (e.g. "gen_ai.content.prompt" / "gen_ai.prompt", or
        "gen_ai.tool.call.arguments"), redacted and cut at `capture_max_bytes`; nothing unless
        `capture_content()`.
    trace_id(scope) -> str | None
        The request's trace id (32 hex digits) for access logs: the server span's, or with
        tracing off the caller's `traceparent`'s; None without either.

Spans follow the OpenTelemetry semantic conventions: the server span is "{method} {route}"
(`http.request.method`, `url.path`, `http.route`, `http.response.status_code`,
`crossway.route`, `crossway.backend`, `crossway.request_id`); policy phases are
`crossway.policy.{phase}`; each LLM upstream attempt is a CLIENT span "{operation} {model}"
with the GenAI attributes and `crossway.attempt`.

Export is batched on the SDK's own thread with a bounded queue: a dead, slow or garbage
collector drops spans, never delays a request, and is logged once (and once when it recovers).
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import re
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from crossway.config.telemetry_tracing import TracingConfig
from crossway.types import Scope

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from crossway.server.context import RequestContext

log = logging.getLogger("crossway.telemetry.tracing")

SCOPE_KEY: Final = "crossway.span"
"""The ASGI scope key holding the request's server span (for `trace_id`)."""
PROPAGATED: Final = frozenset({"traceparent", "tracestate", "baggage"})
"""The header names trace context travels in (lower case)."""
_PROPAGATED_BYTES: Final = frozenset(name.encode() for name in PROPAGATED)
_TRACEPARENT: Final = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE: Final = "0" * 32
STATUS_ERROR_FROM: Final = 500
"""Server spans get an error status from this response status on (4xx are the caller's)."""

_tracer: Tracer | None = None
"""This process's tracer while tracing is on (the one switch every function tests)."""
_capture: bool = False
_capture_max: int = 0
_provider: TracerProvider | None = None
_provider_key: tuple[Any, ...] | None = None
_verdict: bool | None = None
_sdk: Any = None
"""`crossway.telemetry._otel` once tracing was first turned on (the SDK side)."""
"""A force (True) / drop (False) rule's verdict for the server span being started."""


def enabled() -> bool:
    """Whether this process traces."""
    return _tracer is not None


def recording() -> bool:
    """Whether spans made now would be recorded: tracing is on and the current request was
    not decided unsampled (a gate before building a span's attributes)."""
    return _tracer is not None and _UNSAMPLED.get() is _SAMPLED


_SAMPLED: Final = ()
_UNSAMPLED: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "crossway_unsampled", default=_SAMPLED
)
"""The request's sampling when decided without the SDK (the unsampled fast path): the default
`()` means "ask the SDK" (a sampled or SDK-decided request); `(traceparent, tracestate)`, an
unsampled request and the context every upstream gets — the caller's, unchanged, or a new one
with the sampled flag off. An unsampled request makes no span objects at all."""


# --- the observer -----------------------------------------------------------------------------


def tracing_wanted(config: TracingConfig) -> bool:
    """Whether `config` (with the environment) turns tracing on."""
    if config.enabled is not None:
        return config.enabled
    return bool(
        config.endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def build_observer(config: TracingConfig) -> TracingObserver | None:
    """The request observer that opens server spans, or None when tracing is off.

    Called for every config snapshot: the process keeps one TracerProvider while the export
    settings stay the same (a reload that changes them replaces it)."""
    global _tracer, _capture, _capture_max
    if not tracing_wanted(config):
        _tracer = None
        _capture = False
        return None
    global _sdk
    from crossway.telemetry import _otel

    _sdk = _otel
    provider, tracer, old = _provider_for(config)
    _otel.SAMPLER.delegate = _otel.sampler_from(config)
    _tracer = tracer
    _capture = config.capture_content
    _capture_max = config.capture_max_bytes
    return TracingObserver(config, provider, tracer, old)


def _provider_for(config: TracingConfig) -> tuple[Any, Any, Any]:
    global _provider, _provider_key
    from crossway.telemetry import _otel

    key = _otel.export_key(config)
    old = None
    if _provider is None or key != _provider_key:
        old = _provider
        _provider = _otel.new_provider(config)
        _provider_key = key
    return _provider, _provider.get_tracer("crossway"), old


class TracingObserver:
    """Opens a SERVER span when a request begins (continuing the caller's W3C trace context),
    makes it current for the request's task, and ends it when the request ends."""

    def __init__(
        self, config: TracingConfig, provider: Any, tracer: Any, retired_provider: Any
    ) -> None:
        from crossway.telemetry import _otel

        self._otel = _otel
        self._provider = provider
        self._retired = retired_provider
        self._tracer = tracer
        self._force = tuple(_otel.compile_rules(config.force))
        self._drop = tuple(_otel.compile_rules(config.drop))
        self._rules_failed = False
        self._ratio = None if self._force or self._drop else _otel.root_ratio(_otel.SAMPLER)
        """The parent-based root ratio when this observer may decide sampling itself (no
        force/drop rules): unsampled requests then skip the SDK entirely."""

    def begin(self, scope: Scope) -> Any:
        global _verdict
        otel = self._otel
        try:
            carrier: dict[str, str] | None = None
            for name, value in scope["headers"]:
                if name in _PROPAGATED_BYTES:
                    if carrier is None:
                        carrier = {}
                    carrier.setdefault(name.decode(), value.decode("latin-1"))
            ratio = self._ratio
            if ratio is not None and ratio < 1.0:
                fast = _unsampled(carrier, ratio)
                if fast is not None:
                    return (None, _UNSAMPLED.set(fast))
                if carrier is None or "traceparent" not in carrier:
                    _verdict = True  # this root was drawn sampled: the SDK must not draw again
            parent = otel.PROPAGATOR.extract(carrier) if carrier else None
            if self._force or self._drop:
                _verdict = self._decide(scope)
            method = scope["method"]
            span = self._tracer.start_span(
                method,
                context=parent,
                kind=otel.SERVER,
                attributes={"http.request.method": method, "url.path": scope["path"]},
            )
        except Exception:
            log.exception("tracing: cannot start the server span")
            return None
        finally:
            _verdict = None
        scope[SCOPE_KEY] = span
        token = otel.attach(otel.set_span_in_context(span, parent))
        return (span, token)

    def _decide(self, scope: Scope) -> bool | None:
        request = self._otel.request_attributes(scope)
        try:
            if any(self._otel.matches(rule, request) for rule in self._drop):
                return False
            if any(self._otel.matches(rule, request) for rule in self._force):
                return True
        except Exception as exc:
            if not self._rules_failed:
                self._rules_failed = True
                log.warning(
                    "tracing: a force/drop rule failed (%s); it decides nothing (logged once)",
                    exc,
                )
        return None

    def end(
        self,
        state: Any,
        scope: Scope,
        ctx: RequestContext | None,
        route: str,
        status: int,
        seconds: float,
    ) -> None:
        if state is None:
            return
        span, token = state
        if span is None:  # an unsampled request: nothing was made, nothing to end
            _UNSAMPLED.reset(token)
            return
        try:
            if span.is_recording():
                span.update_name(f"{scope['method']} {route}")
                attributes: dict[str, Any] = {
                    "http.route": route,
                    "http.response.status_code": status,
                    "crossway.route": route,
                }
                if ctx is not None:
                    attributes["crossway.backend"] = ctx.backend
                    attributes["crossway.request_id"] = ctx.request_id
                span.set_attributes(attributes)
                if status >= STATUS_ERROR_FROM:
                    span.set_status(self._otel.error_status(str(status)))
            span.end()
        except Exception:
            log.exception("tracing: cannot end the server span")
        finally:
            self._otel.detach(token)

    async def close(self) -> None:
        """Export what is queued (off the event loop); retire a provider a reload replaced."""
        import asyncio

        timeout = DEFAULT_FLUSH_MILLIS
        await asyncio.to_thread(self._provider.force_flush, timeout)
        if self._retired is not None:
            retired, self._retired = self._retired, None
            await asyncio.to_thread(retired.shutdown)


DEFAULT_FLUSH_MILLIS: Final = 5000


def _unsampled(carrier: Mapping[str, str] | None, ratio: float) -> tuple[str, ...] | None:
    """The unsampled fast path's decision for a new request: `(traceparent, tracestate)` to
    pass on (the caller's unsampled context, or a new unsampled one), or None (sampled, or a
    context this cannot read: the SDK decides). Mirrors the parent-based ratio sampler: a
    caller's valid `traceparent` decides by its sampled flag; a new trace is drawn at `ratio`."""
    traceparent = carrier.get("traceparent") if carrier else None
    if traceparent is None:
        if random.random() < ratio:
            return None
        # A new, unsampled context: upstreams that sample by their parent stay unsampled too.
        new = f"00-{random.getrandbits(128):032x}-{random.getrandbits(64) or 1:016x}-00"
        return (new, "")
    value = traceparent.strip().lower()
    parts = value.split("-")
    found = _TRACEPARENT.match(value)
    if (
        found is None
        or found.group(1) == _ZERO_TRACE
        or parts[0] == "ff"
        or parts[2] == "0" * 16
        or (parts[0] == "00" and len(parts) != 4)
    ):
        return None  # not a context to continue: the SDK starts a new trace (and draws it)
    if int(parts[3][:2], 16) & 1:
        return None  # the caller sampled it: the SDK records it
    assert carrier is not None
    return (value, carrier.get("tracestate", ""))


# --- child spans --------------------------------------------------------------------------------


class _NoSpan:
    """What `span` returns with tracing off: a reusable no-op context manager."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN: Final = _NoSpan()


class _CurrentSpan:
    __slots__ = ("_end", "_span", "_token")

    def __init__(self, span: Any, end: bool) -> None:
        self._span = span
        self._end = end
        self._token: Any = None

    def __enter__(self) -> Any:

        self._token = _sdk.attach(_sdk.set_span_in_context(self._span))
        return self._span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:

        try:
            if self._end:
                end_span(self._span, exc)
        finally:
            _sdk.detach(self._token)


def span(name: str, attributes: dict[str, Any] | None = None, *, kind: str = "internal") -> Any:
    """A child span of the current one, current inside the `with` (nothing when tracing is
    off: the block gets None)."""
    tracer = _tracer
    if tracer is None:
        return _NO_SPAN
    new = start_span(name, attributes, kind=kind)
    return _NO_SPAN if new is None else _CurrentSpan(new, True)


def start_span(
    name: str, attributes: dict[str, Any] | None = None, *, kind: str = "client"
) -> Span | None:
    """A child of the current span, not made current (None when tracing is off)."""
    tracer = _tracer
    if tracer is None or _UNSAMPLED.get() is not _SAMPLED:
        return None

    try:
        parent = _sdk.get_current_span().get_span_context()
        if parent.is_valid and not parent.trace_flags.sampled:
            return None  # an unsampled trace: its children are never recorded, make none
        return tracer.start_span(name, kind=_sdk.KINDS[kind], attributes=_clean(attributes))
    except Exception:
        log.exception("tracing: cannot start span %s", name)
        return None


def use_span(span: Span | None) -> Any:
    """Make `span` current inside the block (not ended at its end)."""
    if span is None:
        return _NO_SPAN
    return _CurrentSpan(span, False)


def end_span(
    span: Span | None,
    error: BaseException | str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """Set `attributes` and an error status (when `error`), then end `span`."""
    if span is None:
        return
    try:
        if span.is_recording():
            if attributes:
                span.set_attributes(_clean(attributes) or {})
            if error is not None:
                span.set_status(_sdk.error_status(_describe(error)))
                if isinstance(error, BaseException):
                    span.set_attribute("error.type", type(error).__name__)
        span.end()
    except Exception:
        log.exception("tracing: cannot end a span")


def set_attributes(span: Span | None, attributes: Mapping[str, Any]) -> None:
    """Add `attributes` to `span` (None values skipped)."""
    if span is not None and span.is_recording():
        span.set_attributes(_clean(attributes) or {})


def current_span() -> Span | None:
    """The current recording span, or None."""
    if _tracer is None or _UNSAMPLED.get() is not _SAMPLED:
        return None
    from opentelemetry import trace

    current = trace.get_current_span()
    return current if current.is_recording() else None


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not attributes:
        return None
    return {k: v for k, v in attributes.items() if v is not None}


def _describe(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- propagation --------------------------------------------------------------------------------


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context (`traceparent`, `tracestate`, `baggage`) to `headers`."""
    if _tracer is None:
        return
    unsampled = _UNSAMPLED.get()
    if unsampled is not _SAMPLED:
        if unsampled:  # the caller's unsampled context goes on unchanged
            headers["traceparent"] = unsampled[0]
            if unsampled[1]:
                headers["tracestate"] = unsampled[1]
        return

    try:
        _sdk.PROPAGATOR.inject(headers)
    except Exception:
        log.exception("tracing: cannot inject the trace context")


def extract(carrier: Mapping[str, str]) -> Context | None:
    """The context a carrier (`traceparent`... keys) brings, or None (tracing off)."""
    if _tracer is None:
        return None

    try:
        context: Context = _sdk.PROPAGATOR.extract(carrier)
    except Exception:
        return None
    return context


def attach(context: Context | None) -> Any:
    """Make `context` current; returns the token for `detach` (None: nothing was done)."""
    if context is None:
        return None
    from opentelemetry import context as otel_context

    return otel_context.attach(context)


def detach(token: Any) -> None:
    """Undo `attach`."""
    if token is not None:
        _sdk.detach(token)


def with_trace_context(headers: Any) -> Any:
    """`headers` with the current trace context replacing any the caller sent (what
    `outbound_headers` calls while tracing is on); a Mapping stays a dict, pairs stay pairs."""
    carrier: dict[str, str] = {}
    inject(carrier)
    if not carrier:
        return headers
    if isinstance(headers, Mapping):
        out = {k: v for k, v in headers.items() if k.lower() not in PROPAGATED}
        out.update(carrier)
        return out
    pairs = [(k, v) for k, v in headers if k.lower() not in PROPAGATED]
    pairs.extend(carrier.items())
    return pairs


# --- content capture ----------------------------------------------------------------------------


def capture_content() -> bool:
    """Whether prompts, completions and tool calls may be recorded on spans."""
    return _capture


def capture(span: Span | None, event: str, attribute: str, value: Any) -> None:
    """Record `value` as span event `event` (attribute `attribute`), redacted and bounded."""
    if not _capture or span is None or not span.is_recording():
        return
    try:
        text, truncated = _sdk.bounded_text(value, _capture_max)
        attributes: dict[str, Any] = {attribute: text}
        if truncated:
            attributes["crossway.truncated"] = True
        span.add_event(event, attributes)
    except Exception as exc:
        log.warning("tracing: content not captured: %s", exc)


# --- access logs --------------------------------------------------------------------------------


def trace_id(scope: Scope) -> str | None:
    """The request's trace id (32 hex digits), or None."""
    span = scope.get(SCOPE_KEY)
    if span is not None:
        trace = span.get_span_context().trace_id
        return format(trace, "032x") if trace else None
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            found = _TRACEPARENT.match(value.decode("latin-1").strip().lower())
            if found is not None and found.group(1) != _ZERO_TRACE:
                return found.group(1)
            return None
    return None


__all__ = [
    "PROPAGATED",
    "SCOPE_KEY",
    "TracingObserver",
    "attach",
    "build_observer",
    "capture",
    "capture_content",
    "current_span",
    "detach",
    "enabled",
    "end_span",
    "extract",
    "inject",
    "recording",
    "set_attributes",
    "span",
    "start_span",
    "trace_id",
    "tracing_wanted",
    "use_span",
    "with_trace_context",
]
