"""Config of observability: traces (OpenTelemetry), access logs, the request log store.

```yaml
telemetry:
  tracing:                     # also enabled by OTEL_EXPORTER_OTLP_ENDPOINT alone
    endpoint: http://127.0.0.1:4318
  access_log: {path: /var/log/crossway/access.log}
  request_log: {enabled: true}
```

Each part is filled in by its own module (`crossway.telemetry.tracing`, `.access_log`,
`.request_log`); a part that is not configured costs the request path nothing.
"""

from __future__ import annotations

from pydantic import Field

from crossway.config.base import StrictModel
from crossway.config.telemetry_logs import AccessLogConfig, RedactionConfig, RequestLogConfig
from crossway.config.telemetry_tracing import TracingConfig


class TelemetryConfig(StrictModel):
    """Traces, access logs and the request log store."""

    tracing: TracingConfig = Field(default_factory=TracingConfig)
    """OpenTelemetry traces (OTLP export); the standard `OTEL_*` variables work too."""
    access_log: AccessLogConfig | None = None
    """One JSON line per request; unset: no access log."""
    request_log: RequestLogConfig | None = None
    """Stored prompts, completions, tool calls and agent messages (opt-in)."""
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    """Regex and JSON field-path rules applied, with the built-in ones, to access logs, the
    request log and captured span contents."""
