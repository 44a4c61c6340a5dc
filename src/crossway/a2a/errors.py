"""A2A errors: the spec's codes, one exception type, rendered per version and binding by
`crossway.a2a.bridge` (JSON-RPC) and `crossway.a2a.rest` (HTTP+JSON)."""

from __future__ import annotations

from typing import Any, Final

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
TASK_NOT_FOUND: Final = -32001
TASK_NOT_CANCELABLE: Final = -32002
PUSH_NOTIFICATION_NOT_SUPPORTED: Final = -32003
UNSUPPORTED_OPERATION: Final = -32004
CONTENT_TYPE_NOT_SUPPORTED: Final = -32005
INVALID_AGENT_RESPONSE: Final = -32006
EXTENDED_CARD_NOT_CONFIGURED: Final = -32007
EXTENSION_SUPPORT_REQUIRED: Final = -32008
VERSION_NOT_SUPPORTED: Final = -32009
RATE_LIMITED: Final = -32029
"""Crossway's own (server-defined range, as on MCP routes): a rate limit or a budget refused
the call; the HTTP answer is 429 with `Retry-After`."""

ERROR_INFO_TYPE: Final = "type.googleapis.com/google.rpc.ErrorInfo"
"""The `@type` of the `google.rpc.ErrorInfo` detail v1.0 errors carry."""
ERROR_DOMAIN: Final = "a2a-protocol.org"
"""The `domain` of that detail."""

HTTP_STATUS: Final = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    METHOD_NOT_FOUND: 404,
    INVALID_PARAMS: 400,
    INTERNAL_ERROR: 500,
    TASK_NOT_FOUND: 404,
    TASK_NOT_CANCELABLE: 409,
    PUSH_NOTIFICATION_NOT_SUPPORTED: 400,
    UNSUPPORTED_OPERATION: 400,
    CONTENT_TYPE_NOT_SUPPORTED: 415,
    INVALID_AGENT_RESPONSE: 502,
    EXTENDED_CARD_NOT_CONFIGURED: 400,
    EXTENSION_SUPPORT_REQUIRED: 400,
    VERSION_NOT_SUPPORTED: 400,
    RATE_LIMITED: 429,
}
"""The HTTP status of each error on the HTTP+JSON binding."""


class A2aError(Exception):
    """An A2A protocol error (code, message, optional data), in no version's wire format yet."""

    def __init__(self, code: int, message: str, data: Any = None, *, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status if status is not None else HTTP_STATUS.get(code, 500)
        """The HTTP status on the REST binding (and of a JSON-RPC answer Crossway makes
        itself before reaching an agent: 200, as JSON-RPC wants, unless noted)."""


__all__ = ["ERROR_DOMAIN", "ERROR_INFO_TYPE", "HTTP_STATUS", "A2aError"]
