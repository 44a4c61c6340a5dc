"""Crossway's one error tree.

    GatewayError                      500 internal_error
    ├── BadRequest                    400 invalid_request_error
    │   └── InvalidJSON               400 invalid_request_error
    ├── Unauthenticated               401 authentication_error
    ├── Forbidden                     403 permission_error
    ├── NotFound                      404 not_found_error
    ├── MethodNotAllowed              405 invalid_request_error
    ├── PayloadTooLarge               413 request_too_large
    ├── UnprocessableEntity           422 invalid_request_error
    ├── RateLimited                   429 rate_limit_error
    │   └── BudgetExceeded            429 budget_exceeded
    ├── UpstreamError                 502 upstream_error   (the upstream answered with an error)
    │   └── UpstreamUnreachable       502 upstream_unreachable
    ├── UpstreamTimeout               504 upstream_timeout
    └── ServiceUnavailable            503 service_unavailable

Protocols render these in their own wire format in one place each (OpenAI error JSON,
Anthropic error JSON, JSON-RPC errors); nothing else builds error bodies by hand.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error Crossway reports to a caller."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.detail = detail
        if status is not None:
            self.status_override: int | None = status
        else:
            self.status_override = None

    @property
    def status_code(self) -> int:
        """The HTTP status to answer with (an upstream's own status where it was passed on)."""
        return self.status_override if self.status_override is not None else self.status


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class InvalidJSON(BadRequest):
    pass


class Unauthenticated(GatewayError):
    status = 401
    type = "authentication_error"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "request_too_large"


class UnprocessableEntity(GatewayError):
    status = 422
    type = "invalid_request_error"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"


class BudgetExceeded(RateLimited):
    """A key's, user's or team's budget for the period is spent (code `budget_exceeded`)."""

    type = "budget_exceeded"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"


class UpstreamUnreachable(UpstreamError):
    type = "upstream_unreachable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"


__all__ = [
    "BadRequest",
    "BudgetExceeded",
    "Forbidden",
    "GatewayError",
    "InvalidJSON",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthenticated",
    "UnprocessableEntity",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]
