"""Plain REST APIs as MCP servers: every operation of an OpenAPI 3 document becomes a tool.

At start the document is read (file or URL, JSON or YAML). Each operation turns into a tool:
its name is the `operationId` made valid for clients (`^[a-zA-Z0-9_-]{1,64}$`), else
`method_path`; its path, query, header and cookie parameters and its request body are folded
into one JSON input schema (body properties at the top level when they do not clash with a
parameter, else under `body`), with local `$ref`s inlined (cycles cut). A `tools/call` builds the
HTTP request from the arguments, sends it with aiohttp, and answers with the response as text
(JSON pretty-printed), `isError` when the status is not 2xx.

- `schema`   — `$ref` resolution and operations -> tools (pure).
- `request`  — tool call -> HTTP request, HTTP response -> tool result (pure).
- `upstream` — `OpenApiUpstream`, the `crossway.mcp.upstream.base.Upstream` that loads the
               document and sends the requests.
"""

from crossway.mcp.openapi.request import (
    ArgumentError,
    PreparedRequest,
    build_request,
    render_response,
)
from crossway.mcp.openapi.schema import (
    OpenApiError,
    Operation,
    RefResolver,
    build_operations,
    sanitize_tool_name,
)
from crossway.mcp.openapi.upstream import OpenApiUpstream

__all__ = [
    "ArgumentError",
    "OpenApiError",
    "OpenApiUpstream",
    "Operation",
    "PreparedRequest",
    "RefResolver",
    "build_operations",
    "build_request",
    "render_response",
    "sanitize_tool_name",
]
