"""Small config values shared by every backend kind."""

from __future__ import annotations

import logging
from typing import Annotated, Final

from pydantic import AfterValidator, Field, model_validator

from crossway.config.base import StrictModel

DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_FIRST_BYTE_TIMEOUT: Final = 300.0
DEFAULT_IDLE_TIMEOUT: Final = 300.0


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("url must start with http:// or https://")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""A URL that must be `http://` or `https://`."""


class Timeouts(StrictModel):
    """Upstream timeouts, in seconds."""

    connect: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0)
    """Time to open a TCP (and TLS) connection."""
    first_byte: float = Field(default=DEFAULT_FIRST_BYTE_TIMEOUT, gt=0)
    """Time from sending the request until the response headers arrive."""
    idle: float = Field(default=DEFAULT_IDLE_TIMEOUT, gt=0)
    """Longest silence allowed between two chunks of a streamed response body."""


class UpstreamTls(StrictModel):
    """How Crossway's connections to one upstream use TLS (the `tls:` key of a backend,
    provider or MCP server). Unset: the system's CA certificates, no client certificate."""

    ca_file: str | None = None
    """PEM file of the CA certificate(s) trusted for this upstream, besides the system's."""
    cert_file: str | None = None
    """PEM client certificate (chain) presented to the upstream (mutual TLS)."""
    key_file: str | None = None
    """PEM private key of `cert_file` (omit when `cert_file` holds the key too)."""
    server_name: str | None = None
    """Name sent as SNI and checked against the upstream's certificate, instead of the URL's
    host (e.g. an IP address in the URL, a certificate issued for an internal name)."""
    insecure_skip_verify: bool = False
    """Accept any upstream certificate, unverified. For tests only: anyone on the path can read
    and change the traffic. A warning is logged at every config load."""

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamTls:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        if self.insecure_skip_verify:
            logging.getLogger("crossway.config").warning(
                "tls.insecure_skip_verify is set: an upstream's TLS certificate is not verified"
            )
        return self
