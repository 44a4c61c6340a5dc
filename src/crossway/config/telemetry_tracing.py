"""Config of OpenTelemetry tracing (`telemetry.tracing`).

```yaml
telemetry:
  tracing:
    endpoint: http://127.0.0.1:4318      # or OTEL_EXPORTER_OTLP_ENDPOINT
    protocol: http/protobuf              # or grpc (OTEL_EXPORTER_OTLP_PROTOCOL)
    sample_ratio: 0.1                    # parent-based: a caller's sampled trace stays sampled
    force: ['request.headers["x-debug"] == "1"']
    drop: ['request.path == "/healthz"']
```

Every key is optional: the standard `OTEL_*` variables fill what the config leaves unset.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, SecretStr, field_validator

from crossway.config.base import StrictModel

DEFAULT_SERVICE_NAME: Final = "crossway"
DEFAULT_EXPORT_TIMEOUT_SECONDS: Final = 5.0
DEFAULT_QUEUE_SIZE: Final = 2048
DEFAULT_CAPTURE_BYTES: Final = 16 * 1024

Protocol = Literal["http/protobuf", "grpc"]


class TracingConfig(StrictModel):
    """OpenTelemetry traces."""

    enabled: bool | None = None
    """True/False forces tracing on or off; unset: on when an OTLP endpoint is configured here
    or in `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`."""
    endpoint: str | None = None
    """The OTLP collector: a base URL (`http://host:4318`; `/v1/traces` is added for
    HTTP/protobuf unless the path already ends with it) or, for gRPC, `http://host:4317`
    (plaintext) / `https://host:4317`. Unset: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then
    `OTEL_EXPORTER_OTLP_ENDPOINT`, then the exporter's default (localhost)."""
    protocol: Protocol | None = None
    """`http/protobuf` or `grpc`. Unset: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then
    `OTEL_EXPORTER_OTLP_PROTOCOL`, then `http/protobuf`."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Headers sent with every export (a collector's API key); merged over
    `OTEL_EXPORTER_OTLP_HEADERS`."""
    service_name: str | None = None
    """The `service.name` resource attribute. Unset: `OTEL_SERVICE_NAME`, then
    `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, then "crossway"."""
    sample_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    """The share of new traces sampled (0..1), parent-based: a caller's `traceparent` decides
    for its own trace. Unset: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, then all."""
    force: list[str] = Field(default_factory=list)
    """CEL rules over `request` (method, path, host, scheme, headers, source) evaluated when
    the server span starts: a request any of them matches is sampled whatever the ratio or
    the caller's flag says."""
    drop: list[str] = Field(default_factory=list)
    """CEL rules like `force`: a request any of them matches is not sampled (drop wins over
    force). A rule that fails at run time decides nothing (logged once)."""
    capture_content: bool = False
    """Record prompts and completions as span events (GenAI conventions), redacted and cut at
    `capture_max_bytes`. Off by default: content may hold personal data."""
    capture_max_bytes: int = Field(default=DEFAULT_CAPTURE_BYTES, ge=0)
    """The most bytes of one captured prompt or completion kept on a span event."""
    export_timeout: float = Field(default=DEFAULT_EXPORT_TIMEOUT_SECONDS, gt=0)
    """Seconds one export may take (a slow collector delays only the exporter's thread)."""
    max_queue_size: int = Field(default=DEFAULT_QUEUE_SIZE, ge=1)
    """Finished spans held for export; when full (a dead collector) new spans are dropped."""

    @field_validator("force", "drop")
    @classmethod
    def _compiles(cls, rules: list[str]) -> list[str]:
        from crossway.policy.cel import RuleError, compile_rule

        for rule in rules:
            try:
                compile_rule(rule)
            except RuleError as exc:
                raise ValueError(f"invalid CEL rule {rule!r}: {exc}") from None
        return rules
