"""A2A v0.3 HTTP+JSON (REST) bodies <-> the canonical form (v1.0 JSON), for `crossway.a2a.rest`.

v0.3 REST routes (under `/v1`, matched in `rest`) carry the *protobuf* JSON of a2a_v0_3.proto
(`{"request": Message}`, `{"msg": ...}`, `ROLE_USER`), not v0.3 JSON-RPC's JSON. Each function
converts one body through a2a-sdk's compat layer (`a2a.compat.v0_3`: `proto_utils` between the
v0.3 protobuf and its pydantic models, `conversions` between those and v1.0 protobuf), imported
on first use. Server side: `request_to_canonical`, `result_from_canonical`,
`event_from_canonical`; client side: `send_message_body`, `push_config_body`,
`result_to_canonical`, `event_to_canonical`. A malformed body is `INVALID_PARAMS` when a client
sent it and `INVALID_AGENT_RESPONSE` (502) when an agent did, never a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossway.a2a import errors as codes
from crossway.a2a.errors import A2aError

if TYPE_CHECKING:
    from collections.abc import Callable


def _convert(what: str, convert: Callable[[], Any], *, from_agent: bool) -> Any:
    """Run one conversion; a malformed body becomes INVALID_PARAMS (from a client) or
    INVALID_AGENT_RESPONSE (from an agent), never a traceback."""
    try:
        return convert()
    except A2aError:
        raise
    except Exception as exc:  # protobuf, pydantic and a2a-sdk raise many types
        if from_agent:
            raise A2aError(
                codes.INVALID_AGENT_RESPONSE,
                f"the agent's v0.3 {what} is invalid: {exc}",
                status=502,
            ) from None
        raise A2aError(codes.INVALID_PARAMS, f"invalid v0.3 {what}: {exc}") from None


def request_to_canonical(
    method: str, ids: dict[str, str], query: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    """A client's v0.3 request (path ids, query fields, body) as canonical params."""
    if method in ("SendMessage", "SendStreamingMessage"):
        return dict(_convert("message request", lambda: _send_to_core(body), from_agent=False))
    if method == "CreateTaskPushNotificationConfig":
        return dict(
            _convert(
                "push notification config",
                lambda: _push_request_to_core(ids["taskId"], body),
                from_agent=False,
            )
        )
    return {**query, **ids}


def _send_to_core(body: dict[str, Any]) -> Any:
    from a2a.compat.v0_3 import a2a_v0_3_pb2, conversions, proto_utils
    from a2a.compat.v0_3 import types as types_v03
    from google.protobuf.json_format import MessageToDict, ParseDict

    pb = ParseDict(body, a2a_v0_3_pb2.SendMessageRequest(), ignore_unknown_fields=True)
    params = proto_utils.FromProto.message_send_params(pb)
    core = conversions.to_core_send_message_request(
        types_v03.SendMessageRequest(id=0, params=params)
    )
    return MessageToDict(core)


def _push_request_to_core(task_id: str, body: dict[str, Any]) -> Any:
    from a2a.compat.v0_3 import a2a_v0_3_pb2, conversions, proto_utils
    from a2a.compat.v0_3 import types as types_v03
    from google.protobuf.json_format import MessageToDict, ParseDict

    pb = ParseDict(
        body, a2a_v0_3_pb2.CreateTaskPushNotificationConfigRequest(), ignore_unknown_fields=True
    )
    push = proto_utils.FromProto.push_notification_config(pb.config.push_notification_config)
    if not push.id and pb.config_id:
        push.id = pb.config_id
    config = types_v03.TaskPushNotificationConfig(task_id=task_id, push_notification_config=push)
    return MessageToDict(conversions.to_core_task_push_notification_config(config))


def send_message_body(params: dict[str, Any]) -> dict[str, Any]:
    """Canonical `SendMessage` params as a v0.3 `message:send` / `message:stream` body
    (blocking unless the params say otherwise, as v1.0 is)."""

    def convert() -> Any:
        from a2a.compat.v0_3 import a2a_v0_3_pb2, conversions, proto_utils
        from a2a.compat.v0_3 import types as types_v03
        from a2a.types import a2a_pb2
        from google.protobuf.json_format import MessageToDict, ParseDict

        core = ParseDict(params, a2a_pb2.SendMessageRequest(), ignore_unknown_fields=True)
        req = conversions.to_compat_send_message_request(core, request_id=0).params
        if req.configuration is None:
            # v1.0 without configuration blocks; a v0.3 protobuf body without `blocking` does not.
            req.configuration = types_v03.MessageSendConfiguration(blocking=True)
        pb = a2a_v0_3_pb2.SendMessageRequest(
            request=proto_utils.ToProto.message(req.message),
            configuration=proto_utils.ToProto.message_send_configuration(req.configuration),
            metadata=proto_utils.ToProto.metadata(req.metadata),
        )
        return MessageToDict(pb)

    return dict(_convert("message request", convert, from_agent=False))


def push_config_body(params: dict[str, Any]) -> dict[str, Any]:
    """A canonical push notification config as a v0.3 create-config body."""

    def convert() -> Any:
        from a2a.compat.v0_3 import a2a_v0_3_pb2, conversions, proto_utils
        from a2a.types import a2a_pb2
        from google.protobuf.json_format import MessageToDict, ParseDict

        core = ParseDict(params, a2a_pb2.TaskPushNotificationConfig(), ignore_unknown_fields=True)
        compat = conversions.to_compat_task_push_notification_config(core)
        pb = a2a_v0_3_pb2.CreateTaskPushNotificationConfigRequest(
            parent=f"tasks/{core.task_id}",
            config_id=compat.push_notification_config.id or "",
            config=proto_utils.ToProto.task_push_notification_config(compat),
        )
        return MessageToDict(pb)

    return dict(_convert("push notification config", convert, from_agent=False))


def result_from_canonical(method: str, result: Any) -> Any:
    """A canonical result of `method` as a v0.3 REST answer body."""

    def convert() -> Any:
        from a2a.compat.v0_3 import a2a_v0_3_pb2, conversions, proto_utils
        from a2a.types import a2a_pb2
        from google.protobuf.json_format import MessageToDict, ParseDict

        match method:
            case "SendMessage":
                core = ParseDict(result, a2a_pb2.SendMessageResponse(), ignore_unknown_fields=True)
                root = conversions.to_compat_send_message_response(core).root
                compat = root.result  # type: ignore[union-attr]  # always a success response
                return MessageToDict(proto_utils.ToProto.task_or_message(compat))
            case "GetTask" | "CancelTask":
                task = ParseDict(result, a2a_pb2.Task(), ignore_unknown_fields=True)
                return MessageToDict(proto_utils.ToProto.task(conversions.to_compat_task(task)))
            case "CreateTaskPushNotificationConfig" | "GetTaskPushNotificationConfig":
                cfg = ParseDict(
                    result, a2a_pb2.TaskPushNotificationConfig(), ignore_unknown_fields=True
                )
                compat_cfg = conversions.to_compat_task_push_notification_config(cfg)
                return MessageToDict(proto_utils.ToProto.task_push_notification_config(compat_cfg))
            case "ListTaskPushNotificationConfigs":
                listed = ParseDict(
                    result,
                    a2a_pb2.ListTaskPushNotificationConfigsResponse(),
                    ignore_unknown_fields=True,
                )
                configs = [
                    proto_utils.ToProto.task_push_notification_config(
                        conversions.to_compat_task_push_notification_config(c)
                    )
                    for c in listed.configs
                ]
                return MessageToDict(
                    a2a_v0_3_pb2.ListTaskPushNotificationConfigResponse(configs=configs)
                )
            case "GetExtendedAgentCard":
                card = ParseDict(result, a2a_pb2.AgentCard(), ignore_unknown_fields=True)
                compat_card = conversions.to_compat_agent_card(card)
                return compat_card.model_dump(mode="json", by_alias=True, exclude_none=True)
        return result

    return _convert("result", convert, from_agent=False)


def result_to_canonical(method: str, obj: dict[str, Any]) -> Any:
    """A v0.3 REST agent's answer to `method` as the canonical result."""

    def convert() -> Any:
        from a2a.compat.v0_3 import a2a_v0_3_pb2, conversions, proto_utils
        from a2a.compat.v0_3 import types as types_v03
        from google.protobuf.json_format import MessageToDict, ParseDict

        match method:
            case "SendMessage":
                pb = ParseDict(obj, a2a_v0_3_pb2.SendMessageResponse(), ignore_unknown_fields=True)
                which = pb.WhichOneof("payload")
                if which == "task":
                    return {
                        "task": MessageToDict(
                            conversions.to_core_task(proto_utils.FromProto.task(pb.task))
                        )
                    }
                if which == "msg":
                    msg = conversions.to_core_message(proto_utils.FromProto.message(pb.msg))
                    return {"message": MessageToDict(msg)}
                raise ValueError("neither task nor msg")
            case "GetTask" | "CancelTask":
                task = ParseDict(obj, a2a_v0_3_pb2.Task(), ignore_unknown_fields=True)
                return MessageToDict(conversions.to_core_task(proto_utils.FromProto.task(task)))
            case "CreateTaskPushNotificationConfig" | "GetTaskPushNotificationConfig":
                cfg = ParseDict(
                    obj, a2a_v0_3_pb2.TaskPushNotificationConfig(), ignore_unknown_fields=True
                )
                compat = proto_utils.FromProto.task_push_notification_config(cfg)
                return MessageToDict(conversions.to_core_task_push_notification_config(compat))
            case "ListTaskPushNotificationConfigs":
                listed = ParseDict(
                    obj,
                    a2a_v0_3_pb2.ListTaskPushNotificationConfigResponse(),
                    ignore_unknown_fields=True,
                )
                configs = [
                    MessageToDict(
                        conversions.to_core_task_push_notification_config(
                            proto_utils.FromProto.task_push_notification_config(c)
                        )
                    )
                    for c in listed.configs
                ]
                return {"configs": configs}
            case "GetExtendedAgentCard":
                # a2a-sdk serves the v0.3 card as v0.3 JSON; other servers may send proto JSON.
                try:
                    compat_card = types_v03.AgentCard.model_validate(obj)
                except ValueError:
                    pb_card = ParseDict(obj, a2a_v0_3_pb2.AgentCard(), ignore_unknown_fields=True)
                    compat_card = proto_utils.FromProto.agent_card(pb_card)
                return MessageToDict(conversions.to_core_agent_card(compat_card))
        return obj

    return _convert("answer", convert, from_agent=True)


def event_from_canonical(event: dict[str, Any]) -> dict[str, Any]:
    """A canonical `StreamResponse` as a v0.3 REST stream event."""

    def convert() -> Any:
        from a2a.compat.v0_3 import conversions, proto_utils
        from a2a.types import a2a_pb2
        from google.protobuf.json_format import MessageToDict, ParseDict

        core = ParseDict(event, a2a_pb2.StreamResponse(), ignore_unknown_fields=True)
        compat = conversions.to_compat_stream_response(core).result
        return MessageToDict(proto_utils.ToProto.stream_response(compat))

    return dict(_convert("event", convert, from_agent=False))


def event_to_canonical(obj: dict[str, Any]) -> dict[str, Any]:
    """A v0.3 REST agent's stream event as a canonical `StreamResponse`."""

    def convert() -> Any:
        from a2a.compat.v0_3 import a2a_v0_3_pb2, conversions, proto_utils
        from a2a.compat.v0_3 import types as types_v03
        from google.protobuf.json_format import MessageToDict, ParseDict

        pb = ParseDict(obj, a2a_v0_3_pb2.StreamResponse(), ignore_unknown_fields=True)
        compat = types_v03.SendStreamingMessageSuccessResponse(
            id=0, result=proto_utils.FromProto.stream_response(pb)
        )
        return MessageToDict(conversions.to_core_stream_response(compat))

    return dict(_convert("event", convert, from_agent=True))


__all__ = [
    "event_from_canonical",
    "event_to_canonical",
    "push_config_body",
    "request_to_canonical",
    "result_from_canonical",
    "result_to_canonical",
    "send_message_body",
]
