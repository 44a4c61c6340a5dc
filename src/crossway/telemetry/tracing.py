"""OpenTelemetry tracing (issue 10): the server span per request, child spans, W3C context
propagation to every upstream. (Skeleton: filled in by the tracing work.)"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import Any

from crossway.config.telemetry_tracing import TracingConfig


def build_observer(config: TracingConfig) -> Any:
    """The request observer that opens server spans, or None when tracing is off."""
    return None


@contextlib.contextmanager
def span(name: str, attributes: dict[str, Any] | None = None) -> Iterator[Any]:
    """A child span of the current one (nothing when tracing is off)."""
    yield None


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context (`traceparent`, `tracestate`, `baggage`) to `headers`."""
