"""JSON-RPC 2.0 vocabulary for MCP, and the one place gateway errors become JSON-RPC errors."""

from __future__ import annotations

from typing import Any, Final

import orjson

from crossway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
)
from crossway.mcp.upstream.base import JsonObject, UpstreamRpcError

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# Implementation-defined server errors (-32000..-32099).
UPSTREAM_UNAVAILABLE: Final = -32001
"""The server that owns the tool/prompt/resource is down or did not answer."""
REQUEST_TIMEOUT: Final = -32001
FORBIDDEN: Final = -32003
"""The caller may not use this tool/prompt/resource."""
UNAUTHENTICATED: Final = -32004
PAYLOAD_TOO_LARGE: Final = -32005
RATE_LIMITED: Final = -32029
HEADER_MISMATCH: Final = -32020
MISSING_CLIENT_CAPABILITY: Final = -32021
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022
RESOURCE_NOT_FOUND: Final = -32002
REQUEST_CANCELLED: Final = -32800

JSONRPC: Final = "2.0"


def dumps(message: JsonObject) -> bytes:
    """Encode one message."""
    return orjson.dumps(message)


def response(request_id: Any, result: JsonObject) -> JsonObject:
    """A success response."""
    return {"jsonrpc": JSONRPC, "id": request_id, "result": result}


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> JsonObject:
    """An error response."""
    error: JsonObject = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": JSONRPC, "id": request_id, "error": error}


def error_from_exception(exc: BaseException) -> JsonObject:
    """The JSON-RPC `error` member for anything raised while serving a request.

    Upstream JSON-RPC errors pass through untouched; gateway errors map to a code by kind;
    anything else is an internal error whose details stay in the logs.
    """
    if isinstance(exc, UpstreamRpcError):
        return exc.to_error()
    if isinstance(exc, GatewayError):
        code = _code_for(exc)
        error: JsonObject = {"code": code, "message": exc.message}
        if exc.detail is not None:
            error["data"] = exc.detail
        return error
    return {"code": INTERNAL_ERROR, "message": "internal error"}


def _code_for(exc: GatewayError) -> int:
    if isinstance(exc, JsonRpcCodeError):
        return exc.rpc_code
    if isinstance(exc, NotFound):
        return METHOD_NOT_FOUND
    if isinstance(exc, PayloadTooLarge):
        return PAYLOAD_TOO_LARGE
    if isinstance(exc, BadRequest):
        return INVALID_PARAMS
    if isinstance(exc, Forbidden):
        return FORBIDDEN
    if isinstance(exc, Unauthenticated):
        return UNAUTHENTICATED
    if isinstance(exc, RateLimited):
        return RATE_LIMITED
    if isinstance(exc, (UpstreamError, UpstreamTimeout)):
        return UPSTREAM_UNAVAILABLE
    return INTERNAL_ERROR


class JsonRpcCodeError(BadRequest):
    """A bad request with a specific JSON-RPC code (parse error, invalid request...)."""

    def __init__(self, rpc_code: int, message: str, *, detail: Any = None) -> None:
        super().__init__(message, detail=detail)
        self.rpc_code = rpc_code


__all__ = [
    "FORBIDDEN",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "JsonRpcCodeError",
    "UpstreamRpcError",
    "dumps",
    "error_from_exception",
    "error_response",
    "response",
]
