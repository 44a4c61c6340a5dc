"""The A2A HTTP+JSON (REST) binding, mapped to and from the canonical form (v1.0 JSON-RPC
method name + v1.0 params JSON).

Server side (a client calls Crossway over REST): `parse_rest` turns a request into
`(method, params)`; `rest_result`, `rest_event` and `rest_error` render the answer.
Client side (Crossway calls an agent that declares only HTTP+JSON): `rest_request` builds the
request, `rest_response_to_canonical` and `rest_event_to_canonical` read the answer.

v1.0 routes are the `google.api.http` bindings of a2a.proto (each also under `/{tenant}`);
`SubscribeToTask` is accepted as GET (the proto) and POST (the spec text and a2a-sdk's client).
v0.3 routes live under `/v1` and carry the v0.3 *protobuf* JSON (`{"request": Message}`,
`{"msg": ...}`, `ROLE_USER`), converted in `crossway.a2a.rest_v03` with a2a-sdk's compat
layer; this module holds the routes of both versions, the v1.0 side, the error shape and the
SSE framing.

Errors: v1.0 answers a `google.rpc.Status`-like `{"error": {code, status, message, details:
[ErrorInfo{reason, domain, metadata}]}}`; v0.3 adds the top-level `{"type", "message"}` that
v0.3 clients read. `path` is relative to the agent's base path and already percent-decoded.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

import orjson

from crossway.a2a import errors as codes
from crossway.a2a import rest_v03
from crossway.a2a.errors import ERROR_DOMAIN, ERROR_INFO_TYPE, A2aError
from crossway.a2a.model import STREAMING_METHODS

V10: Final = "1.0"
V03: Final = "0.3"
A2A_MEDIA_TYPE: Final = "application/a2a+json"
"""Content type of a v1.0 REST success body (a2a-sdk and the v1.0.1 spec)."""
JSON_MEDIA_TYPE: Final = "application/json"
"""Content type of error bodies and of v0.3 bodies."""
SSE_MEDIA_TYPE: Final = "text/event-stream"
V03_PREFIX: Final = "v1"

# code -> (ErrorInfo reason, google.rpc status, a2a-sdk class name read by v0.3 clients)
_ERRORS: Final[dict[int, tuple[str, str, str]]] = {
    codes.TASK_NOT_FOUND: ("TASK_NOT_FOUND", "NOT_FOUND", "TaskNotFoundError"),
    codes.TASK_NOT_CANCELABLE: (
        "TASK_NOT_CANCELABLE",
        "FAILED_PRECONDITION",
        "TaskNotCancelableError",
    ),
    codes.PUSH_NOTIFICATION_NOT_SUPPORTED: (
        "PUSH_NOTIFICATION_NOT_SUPPORTED",
        "FAILED_PRECONDITION",
        "PushNotificationNotSupportedError",
    ),
    codes.UNSUPPORTED_OPERATION: (
        "UNSUPPORTED_OPERATION",
        "FAILED_PRECONDITION",
        "UnsupportedOperationError",
    ),
    codes.CONTENT_TYPE_NOT_SUPPORTED: (
        "CONTENT_TYPE_NOT_SUPPORTED",
        "INVALID_ARGUMENT",
        "ContentTypeNotSupportedError",
    ),
    codes.INVALID_AGENT_RESPONSE: (
        "INVALID_AGENT_RESPONSE",
        "INTERNAL",
        "InvalidAgentResponseError",
    ),
    codes.EXTENDED_CARD_NOT_CONFIGURED: (
        "EXTENDED_AGENT_CARD_NOT_CONFIGURED",
        "FAILED_PRECONDITION",
        "ExtendedAgentCardNotConfiguredError",
    ),
    codes.EXTENSION_SUPPORT_REQUIRED: (
        "EXTENSION_SUPPORT_REQUIRED",
        "FAILED_PRECONDITION",
        "ExtensionSupportRequiredError",
    ),
    codes.VERSION_NOT_SUPPORTED: (
        "VERSION_NOT_SUPPORTED",
        "FAILED_PRECONDITION",
        "VersionNotSupportedError",
    ),
    codes.INVALID_PARAMS: ("INVALID_PARAMS", "INVALID_ARGUMENT", "InvalidParamsError"),
    codes.INVALID_REQUEST: ("INVALID_REQUEST", "INVALID_ARGUMENT", "InvalidRequestError"),
    # REST has no parse-error reason: a2a-sdk answers bad JSON with INVALID_REQUEST.
    codes.PARSE_ERROR: ("INVALID_REQUEST", "INVALID_ARGUMENT", "JSONParseError"),
    codes.METHOD_NOT_FOUND: ("METHOD_NOT_FOUND", "NOT_FOUND", "MethodNotFoundError"),
    codes.INTERNAL_ERROR: ("INTERNAL_ERROR", "INTERNAL", "InternalError"),
}
_CODE_BY_REASON: Final = {
    reason: code for code, (reason, _, _) in _ERRORS.items() if code != codes.PARSE_ERROR
}
_CODE_BY_TYPE: Final = {name: code for code, (_, _, name) in _ERRORS.items()}

# Query parameters each GET method reads, with their JSON type.
_QUERY_FIELDS: Final[dict[str, dict[str, type]]] = {
    "GetTask": {"historyLength": int},
    "ListTasks": {
        "contextId": str,
        "status": str,
        "pageSize": int,
        "pageToken": str,
        "historyLength": int,
        "statusTimestampAfter": str,
        "includeArtifacts": bool,
    },
    "ListTaskPushNotificationConfigs": {"pageSize": int, "pageToken": str},
}
_TOP_WORDS: Final = frozenset({"message:send", "message:stream", "tasks", "extendedAgentCard"})


class RestMethodNotAllowed(A2aError):
    """A known REST path called with the wrong HTTP method (405; `allow` is the Allow header)."""

    def __init__(self, http_method: str, path: str, allow: tuple[str, ...]):
        super().__init__(
            codes.METHOD_NOT_FOUND,
            f"{http_method} is not allowed on {path} (allowed: {', '.join(allow)})",
            status=405,
        )
        self.allow = allow


def is_streaming(method: str) -> bool:
    """Whether the canonical method answers a stream of SSE events."""
    return method in STREAMING_METHODS


# ---------------------------------------------------------------------------------------------
# Routes


def _route(version: str, segments: list[str]) -> tuple[dict[str, str], dict[str, str]] | None:
    """The allowed `{http_method: canonical method}` and path parameters, or None (no route)."""
    if version == V03:
        if not segments or segments[0] != V03_PREFIX:
            return None
        return _route_tail(segments[1:], v03=True)
    found = _route_tail(segments, v03=False)
    if found is None and len(segments) > 1 and segments[0] not in _TOP_WORDS:
        found = _route_tail(segments[1:], v03=False)
        if found is not None:
            found[1]["tenant"] = segments[0]
    return found


def _route_tail(s: list[str], *, v03: bool) -> tuple[dict[str, str], dict[str, str]] | None:
    n = len(s)
    if n == 0:
        return None
    if n == 1:
        if s[0] == "message:send":
            return {"POST": "SendMessage"}, {}
        if s[0] == "message:stream":
            return {"POST": "SendStreamingMessage"}, {}
        if s[0] == ("card" if v03 else "extendedAgentCard"):
            return {"GET": "GetExtendedAgentCard"}, {}
        if s[0] == "tasks" and not v03:  # ListTasks is not part of v0.3
            return {"GET": "ListTasks"}, {}
        return None
    if s[0] != "tasks" or not s[1] or any(not part for part in s):
        return None
    if n == 2:
        task, _, verb = s[1].rpartition(":")
        if task and verb == "cancel":
            return {"POST": "CancelTask"}, {"id": task}
        if task and verb == "subscribe":
            return {"GET": "SubscribeToTask", "POST": "SubscribeToTask"}, {"id": task}
        return {"GET": "GetTask"}, {"id": s[1]}
    if s[2] != "pushNotificationConfigs" or n > 4:
        return None
    if n == 3:
        return {
            "POST": "CreateTaskPushNotificationConfig",
            "GET": "ListTaskPushNotificationConfigs",
        }, {"taskId": s[1]}
    return {
        "GET": "GetTaskPushNotificationConfig",
        "DELETE": "DeleteTaskPushNotificationConfig",
    }, {"taskId": s[1], "id": s[3]}


def _segments(path: str) -> list[str]:
    trimmed = path.strip("/")
    return trimmed.split("/") if trimmed else []


# ---------------------------------------------------------------------------------------------
# Server side


def parse_rest(
    version: str, http_method: str, path: str, query: bytes | str, body: bytes
) -> tuple[str, dict[str, Any]]:
    """A REST request as `(method, params)` in canonical form.

    Raises `A2aError`: METHOD_NOT_FOUND (404) for an unknown path, `RestMethodNotAllowed`
    (405) for a wrong method, PARSE_ERROR (400) for a body that is not JSON, INVALID_REQUEST
    (400) for one that is not an object, INVALID_PARAMS (400) for a bad query value.
    """
    found = _route(version, _segments(path))
    if found is None:
        hint = " (ListTasks is not part of A2A v0.3)" if _segments(path) == ["v1", "tasks"] else ""
        raise A2aError(codes.METHOD_NOT_FOUND, f"no A2A REST route {path}{hint}")
    allowed, path_params = found
    http_method = http_method.upper()
    method = allowed.get(http_method)
    if method is None:
        raise RestMethodNotAllowed(http_method, path, tuple(sorted(allowed)))
    if http_method in ("GET", "DELETE"):
        obj: dict[str, Any] = {}
    else:
        obj = _body_object(body, required=method in _BODY_REQUIRED)
    query_params = _query_params(method, query)
    if version == V03:
        return method, rest_v03.request_to_canonical(method, path_params, query_params, obj)
    if method in ("SubscribeToTask", "GetExtendedAgentCard"):
        obj = {}  # the body carries nothing for these
    return method, {**obj, **query_params, **path_params}


_BODY_REQUIRED: Final = frozenset(
    {"SendMessage", "SendStreamingMessage", "CreateTaskPushNotificationConfig"}
)


def _body_object(body: bytes, *, required: bool) -> dict[str, Any]:
    if not body.strip():
        if required:
            raise A2aError(codes.INVALID_REQUEST, "the request body must be a JSON object")
        return {}
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise A2aError(codes.PARSE_ERROR, f"the request body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise A2aError(codes.INVALID_REQUEST, "the request body must be a JSON object")
    return obj


def _query_params(method: str, query: bytes | str) -> dict[str, Any]:
    fields = _QUERY_FIELDS.get(method)
    if not fields or not query:
        return {}
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    out: dict[str, Any] = {}
    for key, values in parse_qs(text, keep_blank_values=False).items():
        kind = fields.get(key)
        if kind is None:
            continue
        raw = values[-1]  # the last one wins, as in a2a-sdk
        if kind is int:
            try:
                out[key] = int(raw)
            except ValueError:
                raise A2aError(codes.INVALID_PARAMS, f"{key} must be an integer") from None
        elif kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise A2aError(codes.INVALID_PARAMS, f"{key} must be true or false")
            out[key] = raw.lower() in ("true", "1")
        else:
            out[key] = raw
    return out


def rest_result(method: str, result: Any, version: str = V10) -> tuple[int, bytes]:
    """A canonical (v1.0) result as the REST answer's status and body."""
    if method == "DeleteTaskPushNotificationConfig":
        return 200, b"{}"
    if version == V03:
        result = rest_v03.result_from_canonical(method, result)
    return 200, orjson.dumps(result)


def rest_event(event: dict[str, Any], version: str = V10) -> bytes:
    """One canonical `StreamResponse` event as an SSE event (`data: <json>`)."""
    if version == V03:
        event = rest_v03.event_from_canonical(event)
    return b"data: " + orjson.dumps(event) + b"\n\n"


def rest_error_body(error: A2aError, version: str = V10) -> dict[str, Any]:
    """The REST error body: `google.rpc.Status`-like, plus `type`/`message` for v0.3."""
    reason, status, type_name = _ERRORS.get(
        error.code, ("INTERNAL_ERROR", "INTERNAL", "InternalError")
    )
    info: dict[str, Any] = {"@type": ERROR_INFO_TYPE, "reason": reason, "domain": ERROR_DOMAIN}
    info["metadata"] = error.data if isinstance(error.data, dict) else {}
    body: dict[str, Any] = {
        "error": {
            "code": error.status,
            "status": status,
            "message": error.message,
            "details": [info],
        }
    }
    if version == V03:
        body["type"] = type_name
        body["message"] = error.message
    return body


def rest_error(error: A2aError, version: str = V10) -> tuple[int, bytes]:
    """An `A2aError` as the REST answer's status and JSON body (see `error_headers`)."""
    return error.status, orjson.dumps(rest_error_body(error, version))


def rest_error_event(error: A2aError, version: str = V10) -> bytes:
    """An error in the middle of a REST stream: `event: error` with the REST error body."""
    return b"event: error\ndata: " + orjson.dumps(rest_error_body(error, version)) + b"\n\n"


def error_headers(error: A2aError) -> list[tuple[bytes, bytes]]:
    """The headers of a REST error answer (content type; `Allow` on a 405)."""
    headers = [(b"content-type", JSON_MEDIA_TYPE.encode())]
    if isinstance(error, RestMethodNotAllowed):
        headers.append((b"allow", ", ".join(error.allow).encode()))
    return headers


# ---------------------------------------------------------------------------------------------
# Client side


def rest_request(version: str, method: str, params: dict[str, Any]) -> tuple[str, str, str, bytes]:
    """The REST request `(http_method, path, query_string, body)` for a canonical call.

    `path` is relative to the agent's REST base URL and percent-encoded; the caller sends the
    `A2A-Version` header (a2a-sdk servers refuse v1.0 routes without `A2A-Version: 1.0`) and,
    for streaming methods, `Accept: text/event-stream`. `SubscribeToTask` is sent as POST;
    a server that answers 405 wants GET (the proto's binding).
    """
    v03 = version == V03
    if v03:
        prefix = "/" + V03_PREFIX
    else:
        tenant = params.get("tenant")
        prefix = "/" + _seg(tenant) if tenant else ""
    query: dict[str, Any] = {}
    body: Any = None
    match method:
        case "SendMessage" | "SendStreamingMessage":
            verb = "send" if method == "SendMessage" else "stream"
            http, path = "POST", f"/message:{verb}"
            body = rest_v03.send_message_body(params) if v03 else params
        case "GetTask":
            http, path = "GET", f"/tasks/{_seg(_require(params, 'id'))}"
            query = _pick(params, _QUERY_FIELDS["GetTask"])
        case "ListTasks":
            if v03:
                raise A2aError(codes.UNSUPPORTED_OPERATION, "ListTasks is not part of A2A v0.3")
            http, path = "GET", "/tasks"
            query = _pick(params, _QUERY_FIELDS["ListTasks"])
        case "CancelTask":
            http, path = "POST", f"/tasks/{_seg(_require(params, 'id'))}:cancel"
            body = {} if v03 else params
        case "SubscribeToTask":
            http, path = "POST", f"/tasks/{_seg(_require(params, 'id'))}:subscribe"
        case "CreateTaskPushNotificationConfig":
            task = _require(params, "taskId")
            http, path = "POST", f"/tasks/{_seg(task)}/pushNotificationConfigs"
            body = rest_v03.push_config_body(params) if v03 else params
        case "GetTaskPushNotificationConfig" | "DeleteTaskPushNotificationConfig":
            task, config = _require(params, "taskId"), _require(params, "id")
            http = "GET" if method.startswith("Get") else "DELETE"
            path = f"/tasks/{_seg(task)}/pushNotificationConfigs/{_seg(config)}"
        case "ListTaskPushNotificationConfigs":
            http, path = "GET", f"/tasks/{_seg(_require(params, 'taskId'))}/pushNotificationConfigs"
            if not v03:
                query = _pick(params, _QUERY_FIELDS["ListTaskPushNotificationConfigs"])
        case "GetExtendedAgentCard":
            http, path = "GET", "/card" if v03 else "/extendedAgentCard"
        case _:
            raise A2aError(codes.METHOD_NOT_FOUND, f"unknown A2A method {method}")
    query_string = urlencode(
        {k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in query.items()}
    )
    return http, prefix + path, query_string, b"" if body is None else orjson.dumps(body)


def _seg(value: Any) -> str:
    return quote(str(value), safe="")


def _require(params: dict[str, Any], key: str) -> Any:
    value = params.get(key)
    if value in (None, ""):
        raise A2aError(codes.INVALID_PARAMS, f"params.{key} is required")
    return value


def _pick(params: dict[str, Any], fields: dict[str, type]) -> dict[str, Any]:
    return {k: params[k] for k in fields if params.get(k) not in (None, "")}


def rest_response_to_canonical(version: str, method: str, status: int, body: bytes) -> Any:
    """A REST agent's answer as the canonical (v1.0) result; an error answer raises `A2aError`.

    A body that is not JSON (or not the expected object) raises INVALID_AGENT_RESPONSE (502).
    """
    if not 200 <= status < 300:
        raise _error_from_answer(status, body)
    if method == "DeleteTaskPushNotificationConfig":
        return None
    obj = _agent_json(body)
    if version == V03:
        return rest_v03.result_to_canonical(method, obj)
    return obj


def rest_event_to_canonical(version: str, event: str, data: bytes | str) -> dict[str, Any]:
    """One SSE event of a REST agent's stream as a canonical `StreamResponse`; `event: error`
    (or an error body) raises `A2aError`."""
    raw = data.encode() if isinstance(data, str) else data
    if event == "error":
        raise _error_from_answer(502, raw)
    obj = _agent_json(raw)
    if "error" in obj:
        raise _error_from_answer(502, raw)
    if version == V03:
        return rest_v03.event_to_canonical(obj)
    return obj


def _agent_json(body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise A2aError(
            codes.INVALID_AGENT_RESPONSE, "the agent answered a body that is not JSON", status=502
        ) from None
    if not isinstance(obj, dict):
        raise A2aError(
            codes.INVALID_AGENT_RESPONSE,
            "the agent answered JSON that is not an object",
            status=502,
        )
    return obj


def _error_from_answer(status: int, body: bytes) -> A2aError:
    """The `A2aError` a REST error answer describes (v1.0 ErrorInfo reason, v0.3 `type`, or
    the HTTP status alone)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        error = obj.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or f"the agent answered HTTP {status}")
            details = error.get("details")
            for detail in details if isinstance(details, list) else ():
                if isinstance(detail, dict) and detail.get("@type") == ERROR_INFO_TYPE:
                    code = _CODE_BY_REASON.get(str(detail.get("reason")))
                    if code is not None:
                        metadata = detail.get("metadata")
                        return A2aError(code, message, metadata or None)
                    break
        code = _CODE_BY_TYPE.get(str(obj.get("type")))
        if code is not None:
            return A2aError(code, str(obj.get("message") or f"the agent answered HTTP {status}"))
    if status == 404:
        return A2aError(codes.METHOD_NOT_FOUND, "the agent has no such REST route")
    return A2aError(codes.INTERNAL_ERROR, f"the agent answered HTTP {status}", status=502)


__all__ = [
    "A2A_MEDIA_TYPE",
    "JSON_MEDIA_TYPE",
    "SSE_MEDIA_TYPE",
    "STREAMING_METHODS",
    "RestMethodNotAllowed",
    "error_headers",
    "is_streaming",
    "parse_rest",
    "rest_error",
    "rest_error_body",
    "rest_error_event",
    "rest_event",
    "rest_event_to_canonical",
    "rest_request",
    "rest_response_to_canonical",
    "rest_result",
]
