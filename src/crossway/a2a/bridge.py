"""A2A v0.3 <-> v1.0 JSON-RPC translation, to and from the canonical form (v1.0 JSON).

Every function takes and returns plain JSON values (dicts as decoded from the wire). A v1.0
value passes through untouched; a v0.3 value goes through a2a-sdk's own compat conversions
(`a2a.compat.v0_3.conversions`: v0.3 pydantic models <-> v1.0 protobuf messages), imported
on first use because they are heavy. What the SDK lacks is written here: the method table,
result shapes, the stream's `final` flag and error data.

This module holds the JSON-RPC side: method names, requests, results, stream events and
errors. Agent cards are converted in `bridge_cards` (`card_to_canonical` and
`card_from_canonical` are re-exported here); the JSON <-> SDK-model plumbing both share is
`bridge_codec`.

Bad input never escapes as a traceback: a malformed request is `A2aError(INVALID_PARAMS)`,
an unknown method `METHOD_NOT_FOUND`, and a malformed result, event or card (which comes
from an agent) `INVALID_AGENT_RESPONSE`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from crossway.a2a.bridge_cards import V03_PROTOCOL_VERSION, card_from_canonical, card_to_canonical
from crossway.a2a.bridge_codec import (
    json_object,
    proto_from_json,
    proto_to_json,
    pydantic_from_json,
    pydantic_to_json,
    quote_json,
    run_conversion,
)
from crossway.a2a.errors import (
    CONTENT_TYPE_NOT_SUPPORTED,
    ERROR_DOMAIN,
    ERROR_INFO_TYPE,
    EXTENDED_CARD_NOT_CONFIGURED,
    EXTENSION_SUPPORT_REQUIRED,
    INTERNAL_ERROR,
    INVALID_AGENT_RESPONSE,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PUSH_NOTIFICATION_NOT_SUPPORTED,
    TASK_NOT_CANCELABLE,
    TASK_NOT_FOUND,
    UNSUPPORTED_OPERATION,
    VERSION_NOT_SUPPORTED,
    A2aError,
)
from crossway.a2a.model import STREAMING_METHODS, Version

V03_METHODS: Final[dict[str, str]] = {
    "message/send": "SendMessage",
    "message/stream": "SendStreamingMessage",
    "tasks/get": "GetTask",
    "tasks/cancel": "CancelTask",
    "tasks/resubscribe": "SubscribeToTask",
    "tasks/pushNotificationConfig/set": "CreateTaskPushNotificationConfig",
    "tasks/pushNotificationConfig/get": "GetTaskPushNotificationConfig",
    "tasks/pushNotificationConfig/list": "ListTaskPushNotificationConfigs",
    "tasks/pushNotificationConfig/delete": "DeleteTaskPushNotificationConfig",
    "agent/getAuthenticatedExtendedCard": "GetExtendedAgentCard",
}
"""v0.3 JSON-RPC method -> its v1.0 (canonical) name."""

V10_TO_V03: Final[dict[str, str]] = {v: k for k, v in V03_METHODS.items()}
"""v1.0 method -> its v0.3 name (`ListTasks` has none)."""

V10_METHODS: Final[frozenset[str]] = frozenset([*V03_METHODS.values(), "ListTasks"])
"""Every canonical (v1.0) JSON-RPC method."""

"""Canonical methods answered with an SSE stream of `StreamResponse` events."""

V03_FINAL_STATES: Final[frozenset[str]] = frozenset(
    ["completed", "canceled", "failed", "rejected", "input-required"]
)
"""v0.3 states whose status-update carries `final: true`: the states at which a v1.0 stream
ends (a2a-sdk's event consumer stops on these; the SDK's own converter forgets
input-required)."""


ERROR_REASONS: Final[dict[int, str]] = {
    TASK_NOT_FOUND: "TASK_NOT_FOUND",
    TASK_NOT_CANCELABLE: "TASK_NOT_CANCELABLE",
    PUSH_NOTIFICATION_NOT_SUPPORTED: "PUSH_NOTIFICATION_NOT_SUPPORTED",
    UNSUPPORTED_OPERATION: "UNSUPPORTED_OPERATION",
    CONTENT_TYPE_NOT_SUPPORTED: "CONTENT_TYPE_NOT_SUPPORTED",
    INVALID_AGENT_RESPONSE: "INVALID_AGENT_RESPONSE",
    EXTENDED_CARD_NOT_CONFIGURED: "EXTENDED_AGENT_CARD_NOT_CONFIGURED",
    EXTENSION_SUPPORT_REQUIRED: "EXTENSION_SUPPORT_REQUIRED",
    VERSION_NOT_SUPPORTED: "VERSION_NOT_SUPPORTED",
    INVALID_PARAMS: "INVALID_PARAMS",
    INVALID_REQUEST: "INVALID_REQUEST",
    METHOD_NOT_FOUND: "METHOD_NOT_FOUND",
    INTERNAL_ERROR: "INTERNAL_ERROR",
    PARSE_ERROR: "PARSE_ERROR",
}
"""The `google.rpc.ErrorInfo.reason` of each code in v1.0 error data (as a2a-sdk names them)."""


_REQUIRED_IDS: Final[dict[str, tuple[str, str]]] = {
    "GetTask": ("id", "id"),
    "CancelTask": ("id", "id"),
    "SubscribeToTask": ("id", "id"),
    "CreateTaskPushNotificationConfig": ("task_id", "taskId"),
    "GetTaskPushNotificationConfig": ("task_id", "taskId"),
    "ListTaskPushNotificationConfigs": ("task_id", "taskId"),
    "DeleteTaskPushNotificationConfig": ("task_id", "taskId"),
}
"""The id a canonical request needs before it can be a v0.3 one (v0.3 requires it; proto
field, JSON name)."""

_STREAM_KEYS: Final = {
    "task": "task",
    "message": "message",
    "status-update": "statusUpdate",
    "artifact-update": "artifactUpdate",
}
"""v0.3 event `kind` -> v1.0 `StreamResponse` member."""


# --- versions and methods ---------------------------------------------------------------


def method_version(method: str) -> Version:
    """The protocol version a JSON-RPC method name belongs to (v0.3 names contain '/')."""
    if method in V10_METHODS:
        return "1.0"
    if method in V03_METHODS:
        return "0.3"
    raise A2aError(METHOD_NOT_FOUND, f"unknown A2A method {quote_json(method)}")


def version_from_header(value: str | None) -> Version:
    """The version an `A2A-Version` header asks for: absent or empty means 0.3 (the spec's
    rule), `1.0` / `1.0.x` means 1.0, `0.3` / `0.3.x` 0.3; anything else -32009."""
    value = (value or "").strip()
    if not value:
        return "0.3"
    if value == "1.0" or value.startswith("1.0."):
        return "1.0"
    if value == "0.3" or value.startswith("0.3."):
        return "0.3"
    raise A2aError(
        VERSION_NOT_SUPPORTED,
        f"A2A version {quote_json(value)} is not supported (supported: 1.0, 0.3)",
        {"supportedVersions": "1.0,0.3"},
    )


def _canonical_method(method: str) -> str:
    """The v1.0 name of `method`, given in either version's spelling."""
    if method in V10_METHODS:
        return method
    name = V03_METHODS.get(method)
    if name is None:
        raise A2aError(METHOD_NOT_FOUND, f"unknown A2A method {quote_json(method)}")
    return name


# --- requests ---------------------------------------------------------------------------


def request_to_canonical(version: Version, method: str, params: Any) -> tuple[str, dict[str, Any]]:
    """A client's JSON-RPC request as a canonical `(method, params)`.

    The method's spelling decides how params are read (a v0.3 name means v0.3 params,
    whatever `version` says), since a JSON-RPC method name is unambiguous.
    """
    if method in V10_METHODS:
        return method, _params_dict(params)
    name = V03_METHODS.get(method)
    if name is None:
        raise A2aError(METHOD_NOT_FOUND, f"unknown A2A method {quote_json(method)}")
    return name, _request_03_to_10(method, name, _params_dict(params))


def request_from_canonical(
    version: Version, method: str, params: Any
) -> tuple[str, dict[str, Any]]:
    """A canonical request as the agent's `version` wants it."""
    if method not in V10_METHODS:
        raise A2aError(METHOD_NOT_FOUND, f"unknown A2A method {quote_json(method)}")
    params = _params_dict(params)
    if version == "1.0":
        return method, params
    old = V10_TO_V03.get(method)
    if old is None:
        raise A2aError(UNSUPPORTED_OPERATION, f"{method} has no A2A v0.3 equivalent")
    return old, _request_10_to_03(method, old, params)


def _params_dict(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise A2aError(INVALID_PARAMS, "params must be a JSON object")
    return params


def _request_03_to_10(old: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    from a2a.compat.v0_3 import conversions as conv
    from a2a.compat.v0_3 import types as t03

    if method == "GetExtendedAgentCard":
        return {}
    wrappers: dict[str, tuple[Any, Callable[[Any], Any]]] = {
        "SendMessage": (t03.SendMessageRequest, conv.to_core_send_message_request),
        "SendStreamingMessage": (
            t03.SendStreamingMessageRequest,
            conv.to_core_send_message_request,
        ),
        "GetTask": (t03.GetTaskRequest, conv.to_core_get_task_request),
        "CancelTask": (t03.CancelTaskRequest, conv.to_core_cancel_task_request),
        "SubscribeToTask": (t03.TaskResubscriptionRequest, conv.to_core_subscribe_to_task_request),
        "CreateTaskPushNotificationConfig": (
            t03.SetTaskPushNotificationConfigRequest,
            conv.to_core_create_task_push_notification_config_request,
        ),
        "GetTaskPushNotificationConfig": (
            t03.GetTaskPushNotificationConfigRequest,
            conv.to_core_get_task_push_notification_config_request,
        ),
        "ListTaskPushNotificationConfigs": (
            t03.ListTaskPushNotificationConfigRequest,
            conv.to_core_list_task_push_notification_config_request,
        ),
        "DeleteTaskPushNotificationConfig": (
            t03.DeleteTaskPushNotificationConfigRequest,
            conv.to_core_delete_task_push_notification_config_request,
        ),
    }
    model, to_core = wrappers[method]
    request = pydantic_from_json(
        model,
        {"jsonrpc": "2.0", "id": 0, "method": old, "params": params},
        f"{old} params",
        INVALID_PARAMS,
    )
    return proto_to_json(run_conversion(to_core, request, f"{old} params", INVALID_PARAMS))


def _request_10_to_03(method: str, old: str, params: dict[str, Any]) -> dict[str, Any]:
    from a2a.compat.v0_3 import conversions as conv
    from a2a.types import a2a_pb2 as pb

    if method == "GetExtendedAgentCard":
        return {}
    table: dict[str, tuple[Any, Callable[[Any, int], Any]]] = {
        "SendMessage": (pb.SendMessageRequest, conv.to_compat_send_message_request),
        "SendStreamingMessage": (pb.SendMessageRequest, conv.to_compat_send_message_request),
        "GetTask": (pb.GetTaskRequest, conv.to_compat_get_task_request),
        "CancelTask": (pb.CancelTaskRequest, conv.to_compat_cancel_task_request),
        "SubscribeToTask": (pb.SubscribeToTaskRequest, conv.to_compat_subscribe_to_task_request),
        "CreateTaskPushNotificationConfig": (
            pb.TaskPushNotificationConfig,
            conv.to_compat_create_task_push_notification_config_request,
        ),
        "GetTaskPushNotificationConfig": (
            pb.GetTaskPushNotificationConfigRequest,
            conv.to_compat_get_task_push_notification_config_request,
        ),
        "ListTaskPushNotificationConfigs": (
            pb.ListTaskPushNotificationConfigsRequest,
            conv.to_compat_list_task_push_notification_config_request,
        ),
        "DeleteTaskPushNotificationConfig": (
            pb.DeleteTaskPushNotificationConfigRequest,
            conv.to_compat_delete_task_push_notification_config_request,
        ),
    }
    proto, to_compat = table[method]
    what = f"{method} params"
    core = proto_from_json(params, proto(), what, INVALID_PARAMS)
    if method in ("SendMessage", "SendStreamingMessage"):
        if not core.message.message_id:
            raise A2aError(INVALID_PARAMS, f"{what}: a message with a messageId is required")
    else:
        required = _REQUIRED_IDS.get(method)
        if required is not None and not getattr(core, required[0]):
            raise A2aError(INVALID_PARAMS, f"{what}: {required[1]} is required")
    request = run_conversion(lambda c: to_compat(c, 0), core, what, INVALID_PARAMS)
    return pydantic_to_json(request.params)


# --- results ----------------------------------------------------------------------------


def result_to_canonical(version: Version, method: str, result: Any) -> Any:
    """An agent's JSON-RPC `result` (in the agent's `version`) as canonical v1.0 JSON.

    `method` is the call's method in either spelling. A result of a streaming method is
    read as one stream event.
    """
    method = _canonical_method(method)
    if version == "1.0":
        return result
    if method in STREAMING_METHODS:
        return event_to_canonical(version, result)
    from a2a.compat.v0_3 import conversions as conv
    from a2a.compat.v0_3 import types as t03

    what = f"{method} result"
    code = INVALID_AGENT_RESPONSE
    if method == "SendMessage":
        obj = json_object(result, what, code)
        kind = obj.get("kind") or ("task" if "status" in obj else "message")
        if kind == "task":
            task = pydantic_from_json(t03.Task, obj, what, code)
            return {"task": proto_to_json(run_conversion(conv.to_core_task, task, what, code))}
        if kind == "message":
            msg = pydantic_from_json(t03.Message, obj, what, code)
            return {"message": proto_to_json(run_conversion(conv.to_core_message, msg, what, code))}
        raise A2aError(code, f"{what}: unknown kind {quote_json(kind)}")
    if method in ("GetTask", "CancelTask"):
        task = pydantic_from_json(t03.Task, json_object(result, what, code), what, code)
        return proto_to_json(run_conversion(conv.to_core_task, task, what, code))
    if method in ("CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig"):
        config = pydantic_from_json(
            t03.TaskPushNotificationConfig, json_object(result, what, code), what, code
        )
        return proto_to_json(
            run_conversion(conv.to_core_task_push_notification_config, config, what, code)
        )
    if method == "ListTaskPushNotificationConfigs":
        if not isinstance(result, list):
            raise A2aError(code, f"{what} must be a JSON array")
        configs = [
            proto_to_json(
                run_conversion(
                    conv.to_core_task_push_notification_config,
                    pydantic_from_json(
                        t03.TaskPushNotificationConfig, json_object(c, what, code), what, code
                    ),
                    what,
                    code,
                )
            )
            for c in result
        ]
        return {"configs": configs}
    if method == "DeleteTaskPushNotificationConfig":
        return {}
    if method == "GetExtendedAgentCard":
        return card_to_canonical(json_object(result, what, code))[0]
    raise A2aError(code, f"{method} has no A2A v0.3 equivalent")


def result_from_canonical(version: Version, method: str, result: Any) -> Any:
    """A canonical (v1.0) `result` as a client speaking `version` expects it.

    `method` is the call's method in either spelling. A v0.3 `message/send` result is the
    Task or Message object itself (with `kind`), not v1.0's `{"task"|"message": ...}`.
    """
    method = _canonical_method(method)
    if version == "1.0":
        return result
    if method in STREAMING_METHODS:
        return event_from_canonical(version, result)
    from a2a.compat.v0_3 import conversions as conv
    from a2a.types import a2a_pb2 as pb

    what = f"{method} result"
    code = INVALID_AGENT_RESPONSE
    obj = {} if method == "DeleteTaskPushNotificationConfig" and result is None else result
    obj = json_object(obj, what, code)
    if method == "SendMessage":
        response = proto_from_json(obj, pb.SendMessageResponse(), what, code)
        which = response.WhichOneof("payload")
        if which == "task":
            return pydantic_to_json(run_conversion(conv.to_compat_task, response.task, what, code))
        if which == "message":
            return pydantic_to_json(
                run_conversion(conv.to_compat_message, response.message, what, code)
            )
        raise A2aError(code, f"{what} holds neither a task nor a message")
    if method in ("GetTask", "CancelTask"):
        task = proto_from_json(obj, pb.Task(), what, code)
        return pydantic_to_json(run_conversion(conv.to_compat_task, task, what, code))
    if method in ("CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig"):
        config = proto_from_json(obj, pb.TaskPushNotificationConfig(), what, code)
        return pydantic_to_json(
            run_conversion(conv.to_compat_task_push_notification_config, config, what, code)
        )
    if method == "ListTaskPushNotificationConfigs":
        listed = proto_from_json(obj, pb.ListTaskPushNotificationConfigsResponse(), what, code)
        return [
            pydantic_to_json(
                run_conversion(conv.to_compat_task_push_notification_config, c, what, code)
            )
            for c in listed.configs
        ]
    if method == "DeleteTaskPushNotificationConfig":
        return None
    if method == "GetExtendedAgentCard":
        return card_from_canonical(version, obj)
    raise A2aError(UNSUPPORTED_OPERATION, f"{method} has no A2A v0.3 equivalent")


# --- stream events ----------------------------------------------------------------------


def event_to_canonical(version: Version, event: Any) -> dict[str, Any]:
    """One stream event from an agent (the `result` of an SSE message) as a v1.0
    `StreamResponse` (`{"task"|"message"|"statusUpdate"|"artifactUpdate": {...}}`)."""
    what = "stream event"
    code = INVALID_AGENT_RESPONSE
    obj = json_object(event, what, code)
    if version == "1.0":
        return obj
    from a2a.compat.v0_3 import conversions as conv
    from a2a.compat.v0_3 import types as t03

    kind = obj.get("kind")
    readers: dict[str, tuple[Any, Callable[[Any], Any]]] = {
        "task": (t03.Task, conv.to_core_task),
        "message": (t03.Message, conv.to_core_message),
        "status-update": (t03.TaskStatusUpdateEvent, conv.to_core_task_status_update_event),
        "artifact-update": (t03.TaskArtifactUpdateEvent, conv.to_core_task_artifact_update_event),
    }
    if not isinstance(kind, str) or kind not in readers:
        raise A2aError(code, f"{what}: unknown kind {quote_json(kind)}")
    model, to_core = readers[kind]
    value = pydantic_from_json(model, obj, what, code)
    return {_STREAM_KEYS[kind]: proto_to_json(run_conversion(to_core, value, what, code))}


def event_from_canonical(version: Version, event: Any) -> dict[str, Any]:
    """A v1.0 `StreamResponse` as a client speaking `version` expects one stream event: in
    v0.3 the object itself with `kind` (status updates with `final`)."""
    what = "stream event"
    code = INVALID_AGENT_RESPONSE
    obj = json_object(event, what, code)
    if version == "1.0":
        return obj
    from a2a.compat.v0_3 import conversions as conv
    from a2a.types import a2a_pb2 as pb

    response = proto_from_json(obj, pb.StreamResponse(), what, code)
    which = response.WhichOneof("payload")
    if which is None:
        raise A2aError(code, f"{what} holds no task, message or update")
    converted = run_conversion(
        lambda r: conv.to_compat_stream_response(r).result, response, what, code
    )
    out = pydantic_to_json(converted)
    if which == "status_update":
        out["final"] = out.get("status", {}).get("state") in V03_FINAL_STATES
    return out


# --- errors -----------------------------------------------------------------------------


def error_for(version: Version, error: A2aError) -> dict[str, Any]:
    """The JSON-RPC `error` member for `error`, in `version`'s shape.

    Codes are the same in both versions. v1.0 `data` is a list of typed details led by a
    `google.rpc.ErrorInfo` (reason, domain, the error's data as string metadata), as a2a-sdk
    sends it; v0.3 `data` is the free-form value. `error.data` may come in either shape (an
    agent's error is re-rendered for a client of the other version).
    """
    out: dict[str, Any] = {"code": error.code, "message": error.message}
    data = error.data
    if version == "1.0":
        if _is_details(data):
            out["data"] = data
        else:
            reason = ERROR_REASONS.get(error.code, "UNKNOWN_ERROR")
            out["data"] = [
                {
                    "@type": ERROR_INFO_TYPE,
                    "reason": reason,
                    "domain": ERROR_DOMAIN,
                    "metadata": _string_map(data),
                }
            ]
        return out
    if _is_details(data):
        info = next((d for d in data if d.get("@type") == ERROR_INFO_TYPE), None)
        data = (info.get("metadata") or None) if info is not None else data
    if data is not None:
        out["data"] = data
    return out


def _is_details(data: Any) -> bool:
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(d, dict) and "@type" in d for d in data)
    )


def _string_map(data: Any) -> dict[str, str]:
    """`data` as `ErrorInfo.metadata` (a map of strings)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        return {"detail": data if isinstance(data, str) else json.dumps(data, default=str)}
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in data.items()
    }


__all__ = [
    "STREAMING_METHODS",
    "V03_METHODS",
    "V03_PROTOCOL_VERSION",
    "V10_METHODS",
    "card_from_canonical",
    "card_to_canonical",
    "error_for",
    "event_from_canonical",
    "event_to_canonical",
    "method_version",
    "request_from_canonical",
    "request_to_canonical",
    "result_from_canonical",
    "result_to_canonical",
    "version_from_header",
]
