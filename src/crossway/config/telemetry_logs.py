"""Config of access logs (`telemetry.access_log`) and the request log store
(`telemetry.request_log`)."""

from __future__ import annotations

from crossway.config.base import StrictModel


class AccessLogConfig(StrictModel):
    """One structured JSON line per request."""


class RequestLogConfig(StrictModel):
    """Stored request and response contents (opt-in)."""
