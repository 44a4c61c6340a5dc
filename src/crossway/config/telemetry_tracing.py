"""Config of OpenTelemetry tracing (`telemetry.tracing`)."""

from __future__ import annotations

from crossway.config.base import StrictModel


class TracingConfig(StrictModel):
    """OpenTelemetry traces."""

    enabled: bool | None = None
    """True/False forces tracing on or off; unset: on when an OTLP endpoint is configured here
    or in `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`."""
