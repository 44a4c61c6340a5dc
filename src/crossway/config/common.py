"""Small config values shared by every backend kind."""

from __future__ import annotations

from typing import Final

from pydantic import Field

from crossway.config.base import StrictModel

DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_FIRST_BYTE_TIMEOUT: Final = 300.0
DEFAULT_IDLE_TIMEOUT: Final = 300.0


class Timeouts(StrictModel):
    """Upstream timeouts, in seconds."""

    connect: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0)
    """Time to open a TCP (and TLS) connection."""
    first_byte: float = Field(default=DEFAULT_FIRST_BYTE_TIMEOUT, gt=0)
    """Time from sending the request until the response headers arrive."""
    idle: float = Field(default=DEFAULT_IDLE_TIMEOUT, gt=0)
    """Longest silence allowed between two chunks of a streamed response body."""
