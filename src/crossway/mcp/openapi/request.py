"""From a tool call to an HTTP request, and from the HTTP response to a tool result (pure)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlencode

import orjson
from yarl import URL

from crossway.mcp.openapi.schema import Operation
from crossway.mcp.upstream.base import JsonObject

_PATH_TEMPLATE: Final = re.compile(r"\{([^{}]+)\}")


@dataclass(slots=True)
class PreparedRequest:
    """An HTTP request built from a tool call; `url` is already percent-encoded (send it as
    is: re-parsing would decode `%2E` and resolve dot segments)."""

    method: str
    url: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


class ArgumentError(ValueError):
    """The call's arguments do not fit the operation."""


class PathSegmentError(ArgumentError):
    """A path parameter is exactly `.` or `..`: a dot segment, which would move the request to
    another path (refused as invalid params, never sent)."""


def path_segment(value: str) -> str:
    """`value` percent-encoded as exactly one path segment: every reserved character, `/`,
    `%` and `.` included, so no value can add a segment or climb out of its own."""
    if value in (".", ".."):
        raise PathSegmentError(f"a path parameter cannot be {value!r}")
    return quote(value, safe="").replace(".", "%2E")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def build_request(operation: Operation, arguments: JsonObject, base_url: str) -> PreparedRequest:
    """The HTTP request for one call of `operation` (pure: nothing is sent)."""
    unknown = set(arguments) - set(operation.arguments)
    if unknown:
        raise ArgumentError(f"unknown arguments: {', '.join(sorted(unknown))}")
    missing = [n for n in operation.input_schema.get("required", ()) if arguments.get(n) is None]
    if missing:
        raise ArgumentError(f"missing required arguments: {', '.join(missing)}")

    path_values: dict[str, str] = {}
    request = PreparedRequest(operation.method.upper(), "")
    cookies: list[str] = []
    body_fields: JsonObject = {}
    whole_body: Any = None
    has_body = False
    for arg_name, value in arguments.items():
        if value is None:
            continue
        arg = operation.arguments[arg_name]
        if arg.location == "path":
            try:
                path_values[arg.wire_name] = path_segment(_scalar(value))
            except PathSegmentError as exc:
                raise PathSegmentError(f"{arg_name}: {exc}") from None
        elif arg.location == "query":
            if isinstance(value, list) and arg.explode:
                request.params.extend((arg.wire_name, _scalar(v)) for v in value)
            elif isinstance(value, list):
                request.params.append((arg.wire_name, ",".join(_scalar(v) for v in value)))
            elif isinstance(value, dict) and arg.style == "deepObject":
                request.params.extend(
                    (f"{arg.wire_name}[{k}]", _scalar(v)) for k, v in value.items()
                )
            else:
                request.params.append((arg.wire_name, _scalar(value)))
        elif arg.location == "header":
            request.headers[arg.wire_name] = _scalar(value)
        elif arg.location == "cookie":
            cookies.append(f"{arg.wire_name}={quote(_scalar(value), safe='')}")
        elif arg.location == "body_field":
            body_fields[arg.wire_name] = value
            has_body = True
        else:
            whole_body = value
            has_body = True
    if cookies:
        request.headers["Cookie"] = "; ".join(cookies)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in path_values:
            raise ArgumentError(f"missing path parameter: {name}")
        return path_values[name]

    base = str(URL(base_url))  # percent-encoded, like the path appended to it
    request.url = base.rstrip("/") + _PATH_TEMPLATE.sub(fill, operation.path)

    if has_body:
        payload = body_fields if whole_body is None else whole_body
        content_type = operation.content_type or "application/json"
        base = content_type.split(";")[0].strip().lower()
        if base == "application/x-www-form-urlencoded" and isinstance(payload, dict):
            request.body = urlencode({k: _scalar(v) for k, v in payload.items()}).encode()
        elif base.startswith("text/") and isinstance(payload, str):
            request.body = payload.encode()
        else:
            content_type = "application/json" if not base.endswith("json") else content_type
            request.body = orjson.dumps(payload)
        request.headers["Content-Type"] = content_type
    return request


def render_response(status: int, reason: str, content_type: str, body: bytes) -> JsonObject:
    """The `tools/call` result for an HTTP response."""
    media = content_type.split(";")[0].strip().lower()
    content: list[JsonObject]
    if media.startswith("image/"):
        content = [{"type": "image", "data": base64.b64encode(body).decode(), "mimeType": media}]
    else:
        text = body.decode("utf-8", errors="replace")
        if media == "application/json" or media.endswith("+json"):
            try:
                text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
            except orjson.JSONDecodeError:
                pass
        content = [{"type": "text", "text": text}]
    ok = 200 <= status < 300
    if not ok:
        content.insert(0, {"type": "text", "text": f"HTTP {status} {reason}".strip()})
    return {"content": content, "isError": not ok}


__all__ = [
    "ArgumentError",
    "PathSegmentError",
    "PreparedRequest",
    "build_request",
    "path_segment",
    "render_response",
]
