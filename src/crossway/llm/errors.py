"""Rendering gateway errors in the LLM APIs' own shapes (OpenAI and Anthropic), and the LLM
path's own kinds of upstream error."""

from __future__ import annotations

from typing import Final

import orjson

from crossway.errors import GatewayError, UpstreamError
from crossway.server.backend import ErrorResponse, error_headers, render_json_error

RESPONSE_TOO_LARGE: Final = "upstream_response_too_large"
"""`code` of the 502 for a non-streamed upstream answer over `max_response_bytes`."""


class ResponseTooLarge(UpstreamError):
    """A non-streamed upstream answer is larger than the backend's `max_response_bytes`."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the upstream answer is larger than {limit} bytes", code=RESPONSE_TOO_LARGE
        )


# Anthropic's documented error types by HTTP status.
_ANTHROPIC_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


def render_openai_error(exc: GatewayError) -> ErrorResponse:
    """`{"error": {"message", "type", "param", "code"}}` with the error's status."""
    return render_json_error(exc)


def render_anthropic_error(exc: GatewayError) -> ErrorResponse:
    """`{"type": "error", "error": {"type", "message"}}` with the error's status."""
    status = exc.status_code
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": exc.message}})
    headers = [(b"content-type", b"application/json")]
    headers.extend(error_headers(exc))
    return status, headers, body


def openai_stream_error(exc: GatewayError) -> bytes:
    """The SSE event that ends an OpenAI-style stream broken after it started."""
    return (
        b"data: "
        + orjson.dumps(
            {
                "error": {
                    "message": exc.message,
                    "type": exc.type,
                    "param": exc.param,
                    "code": exc.code,
                }
            }
        )
        + b"\n\n"
    )
