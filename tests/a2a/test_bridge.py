"""crossway.a2a.bridge: v0.3 <-> v1.0 round trips for every method, part, state, event and
card, built from a2a-sdk's own types (v0.3 pydantic models, v1.0 protobuf messages) so the
fixtures are what real peers send; and the errors bad input gets."""

from __future__ import annotations

import timeit
from typing import Any

import pytest
from a2a.compat.v0_3 import types as t03
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict, ParseDict

from crossway.a2a import bridge
from crossway.a2a.errors import (
    INVALID_AGENT_RESPONSE,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    TASK_NOT_FOUND,
    UNSUPPORTED_OPERATION,
    VERSION_NOT_SUPPORTED,
    A2aError,
)


def dump(model: Any) -> Any:
    """A v0.3 model as the JSON a v0.3 peer sends."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def strict(data: dict[str, Any], message: Any) -> Any:
    """Parses v1.0 JSON as a v1.0 peer would, failing on any unknown field or enum value."""
    return ParseDict(data, message)


METADATA: dict[str, Any] = {
    "count": 1,
    "ratio": 0.5,
    "nested": {"list": [1, "two", None, True], "vendor/x-custom": {"k": "v"}},
}
"""Arbitrary metadata: it must survive both ways (ints stay ints)."""


def text_part(text: str = "hello") -> t03.Part:
    return t03.Part(root=t03.TextPart(text=text, metadata={"lang": "en"}))


def parts03() -> list[t03.Part]:
    """One part of each v0.3 kind."""
    return [
        text_part(),
        t03.Part(
            root=t03.FilePart(
                file=t03.FileWithBytes(bytes="aGVsbG8=", mime_type="image/png", name="a.png")
            )
        ),
        t03.Part(
            root=t03.FilePart(
                file=t03.FileWithUri(uri="https://files.example/r.csv", mime_type="text/csv")
            )
        ),
        t03.Part(root=t03.DataPart(data={"city": "Paris", "n": 3, "tags": ["a", "b"]})),
    ]


def message03(**extra: Any) -> t03.Message:
    return t03.Message(
        message_id="msg-1",
        role=t03.Role.user,
        parts=parts03(),
        context_id="ctx-1",
        task_id="task-1",
        reference_task_ids=["task-0"],
        metadata=METADATA,
        extensions=["https://ext.example/v1"],
        **extra,
    )


def task03(state: t03.TaskState = t03.TaskState.completed) -> t03.Task:
    return t03.Task(
        id="task-1",
        context_id="ctx-1",
        status=t03.TaskStatus(
            state=state,
            timestamp="2026-01-02T03:04:05Z",
            message=t03.Message(
                message_id="st-1", role=t03.Role.agent, parts=[text_part("working on it")]
            ),
        ),
        history=[message03()],
        artifacts=[
            t03.Artifact(
                artifact_id="art-1",
                name="report",
                description="the report",
                parts=parts03(),
                metadata={"size": 10},
                extensions=["https://ext.example/v1"],
            )
        ],
        metadata=METADATA,
    )


def push03(config_id: str = "cfg-1") -> t03.TaskPushNotificationConfig:
    return t03.TaskPushNotificationConfig(
        task_id="task-1",
        push_notification_config=t03.PushNotificationConfig(
            id=config_id,
            url="https://hooks.example/a2a",
            token="tok",
            authentication=t03.PushNotificationAuthenticationInfo(
                schemes=["Bearer"], credentials="secret"
            ),
        ),
    )


# --- versions and methods ---------------------------------------------------------------


def test_method_version_for_every_method() -> None:
    for old, new in bridge.V03_METHODS.items():
        assert "/" in old
        assert bridge.method_version(old) == "0.3"
        assert bridge.method_version(new) == "1.0"
    assert bridge.method_version("ListTasks") == "1.0"
    for bad in ("message/sendx", "sendMessage", "", "tasks/list"):
        with pytest.raises(A2aError) as caught:
            bridge.method_version(bad)
        assert caught.value.code == METHOD_NOT_FOUND


@pytest.mark.parametrize(
    ("header", "version"),
    [(None, "0.3"), ("", "0.3"), ("  ", "0.3"), ("1.0", "1.0"), ("1.0.1", "1.0"), ("0.3", "0.3")],
)
def test_version_from_header(header: str | None, version: str) -> None:
    assert bridge.version_from_header(header) == version


@pytest.mark.parametrize("header", ["2.0", "1.1", "1", "0.2", "latest"])
def test_version_from_header_refuses_other_versions(header: str) -> None:
    with pytest.raises(A2aError) as caught:
        bridge.version_from_header(header)
    assert caught.value.code == VERSION_NOT_SUPPORTED
    assert header in caught.value.message


# --- requests ---------------------------------------------------------------------------


def v03_requests() -> list[tuple[str, dict[str, Any], Any]]:
    """(v0.3 method, v0.3 params, the v1.0 request message its canonical params parse as)."""
    send = t03.MessageSendParams(
        message=message03(),
        configuration=t03.MessageSendConfiguration(
            accepted_output_modes=["text/plain", "application/json"],
            history_length=5,
            blocking=False,
            push_notification_config=push03().push_notification_config,
        ),
        metadata=METADATA,
    )
    return [
        ("message/send", dump(send), pb.SendMessageRequest()),
        ("message/stream", dump(send), pb.SendMessageRequest()),
        (
            "tasks/get",
            dump(t03.TaskQueryParams(id="task-1", history_length=2)),
            pb.GetTaskRequest(),
        ),
        (
            "tasks/cancel",
            dump(t03.TaskIdParams(id="task-1", metadata=METADATA)),
            pb.CancelTaskRequest(),
        ),
        ("tasks/resubscribe", dump(t03.TaskIdParams(id="task-1")), pb.SubscribeToTaskRequest()),
        ("tasks/pushNotificationConfig/set", dump(push03()), pb.TaskPushNotificationConfig()),
        (
            "tasks/pushNotificationConfig/get",
            dump(
                t03.GetTaskPushNotificationConfigParams(
                    id="task-1", push_notification_config_id="cfg-1"
                )
            ),
            pb.GetTaskPushNotificationConfigRequest(),
        ),
        (
            "tasks/pushNotificationConfig/get",
            dump(t03.TaskIdParams(id="task-1")),
            pb.GetTaskPushNotificationConfigRequest(),
        ),
        (
            "tasks/pushNotificationConfig/list",
            dump(t03.ListTaskPushNotificationConfigParams(id="task-1")),
            pb.ListTaskPushNotificationConfigsRequest(),
        ),
        (
            "tasks/pushNotificationConfig/delete",
            dump(
                t03.DeleteTaskPushNotificationConfigParams(
                    id="task-1", push_notification_config_id="cfg-1"
                )
            ),
            pb.DeleteTaskPushNotificationConfigRequest(),
        ),
        ("agent/getAuthenticatedExtendedCard", {}, pb.GetExtendedAgentCardRequest()),
    ]


@pytest.mark.parametrize(
    ("method", "params", "proto"), v03_requests(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_request_round_trip_v03_v10_v03(method: str, params: dict[str, Any], proto: Any) -> None:
    name, canonical = bridge.request_to_canonical("0.3", method, params)
    assert name == bridge.V03_METHODS[method]
    strict(canonical, proto)  # a v1.0 peer reads it without ignoring anything
    assert bridge.request_from_canonical("0.3", name, canonical) == (method, params)
    # the canonical form is what a v1.0 agent receives, untouched
    assert bridge.request_from_canonical("1.0", name, canonical) == (name, canonical)


def test_send_message_params_in_v10_terms() -> None:
    method, params, _ = v03_requests()[0]
    _, canonical = bridge.request_to_canonical("0.3", method, params)
    message = canonical["message"]
    assert message["role"] == "ROLE_USER"
    assert message["messageId"] == "msg-1"
    assert message["contextId"] == "ctx-1" and message["taskId"] == "task-1"
    assert message["referenceTaskIds"] == ["task-0"]
    assert message["extensions"] == ["https://ext.example/v1"]
    assert message["metadata"] == METADATA
    assert message["parts"] == [
        {"text": "hello", "metadata": {"lang": "en"}},
        {"raw": "aGVsbG8=", "mediaType": "image/png", "filename": "a.png"},
        {"url": "https://files.example/r.csv", "mediaType": "text/csv"},
        {"data": {"city": "Paris", "n": 3, "tags": ["a", "b"]}},
    ]
    config = canonical["configuration"]
    assert config["acceptedOutputModes"] == ["text/plain", "application/json"]
    assert config["historyLength"] == 5
    assert config["returnImmediately"] is True  # blocking: false
    assert config["taskPushNotificationConfig"]["url"] == "https://hooks.example/a2a"
    assert canonical["metadata"] == METADATA


def test_task_query_and_ids_in_v10_terms() -> None:
    assert bridge.request_to_canonical("0.3", "tasks/get", {"id": "t9", "historyLength": 4}) == (
        "GetTask",
        {"id": "t9", "historyLength": 4},
    )
    assert bridge.request_to_canonical(
        "0.3", "tasks/pushNotificationConfig/delete", {"id": "t9", "pushNotificationConfigId": "c"}
    ) == ("DeleteTaskPushNotificationConfig", {"taskId": "t9", "id": "c"})


def v10_requests() -> list[tuple[str, Any]]:
    """(v1.0 method, v1.0 request message) as a v1.0 client builds them."""
    message = pb.Message(
        message_id="msg-1",
        role=pb.ROLE_USER,
        context_id="ctx-1",
        parts=[
            pb.Part(text="hi"),
            pb.Part(raw=b"\x89PNG", media_type="image/png", filename="p.png"),
            pb.Part(url="https://files.example/a.pdf", media_type="application/pdf"),
        ],
        extensions=["https://ext.example/v1"],
    )
    ParseDict(METADATA, message.metadata)
    send = pb.SendMessageRequest(
        message=message,
        configuration=pb.SendMessageConfiguration(
            accepted_output_modes=["text/plain"], history_length=3
        ),
    )
    push = pb.TaskPushNotificationConfig(
        task_id="task-1",
        id="cfg-1",
        url="https://hooks.example/a2a",
        token="tok",
        authentication=pb.AuthenticationInfo(scheme="Bearer", credentials="secret"),
    )
    return [
        ("SendMessage", send),
        ("SendStreamingMessage", send),
        ("GetTask", pb.GetTaskRequest(id="task-1", history_length=2)),
        ("CancelTask", pb.CancelTaskRequest(id="task-1")),
        ("SubscribeToTask", pb.SubscribeToTaskRequest(id="task-1")),
        ("CreateTaskPushNotificationConfig", push),
        (
            "GetTaskPushNotificationConfig",
            pb.GetTaskPushNotificationConfigRequest(task_id="task-1", id="cfg-1"),
        ),
        (
            "ListTaskPushNotificationConfigs",
            pb.ListTaskPushNotificationConfigsRequest(task_id="task-1"),
        ),
        (
            "DeleteTaskPushNotificationConfig",
            pb.DeleteTaskPushNotificationConfigRequest(task_id="task-1", id="cfg-1"),
        ),
        ("GetExtendedAgentCard", pb.GetExtendedAgentCardRequest()),
    ]


@pytest.mark.parametrize(
    ("method", "proto"), v10_requests(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_request_round_trip_v10_v03_v10(method: str, proto: Any) -> None:
    params = MessageToDict(proto)
    old, legacy = bridge.request_from_canonical("0.3", method, params)
    assert old == bridge.V10_TO_V03[method]
    # a v0.3 peer validates it as the matching v0.3 request
    t03.A2ARequest.model_validate({"jsonrpc": "2.0", "id": 1, "method": old, "params": legacy})
    assert bridge.request_to_canonical("0.3", old, legacy) == (method, params)


def test_v10_requests_pass_through() -> None:
    params = {"id": "t", "futureField": {"x": 1}}
    assert bridge.request_to_canonical("1.0", "GetTask", params) == ("GetTask", params)
    assert bridge.request_to_canonical("1.0", "ListTasks", None) == ("ListTasks", {})


def test_list_tasks_has_no_v03_form() -> None:
    with pytest.raises(A2aError) as caught:
        bridge.request_from_canonical("0.3", "ListTasks", {})
    assert caught.value.code == UNSUPPORTED_OPERATION


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("message/send", [], INVALID_PARAMS),
        ("message/send", "hello", INVALID_PARAMS),
        ("message/send", {}, INVALID_PARAMS),  # no message
        (
            "message/send",
            {"message": {"messageId": "m", "role": "robot", "parts": []}},
            INVALID_PARAMS,
        ),
        (
            "message/send",
            {"message": {"messageId": "m", "role": "user", "parts": [{"kind": "video"}]}},
            INVALID_PARAMS,
        ),
        ("tasks/get", {"id": 5}, INVALID_PARAMS),
        ("tasks/get", {"historyLength": 1}, INVALID_PARAMS),
        ("tasks/list", {}, METHOD_NOT_FOUND),
        ("bogus", {}, METHOD_NOT_FOUND),
        ("GetTask", [1], INVALID_PARAMS),
    ],
)
def test_bad_requests(method: str, params: Any, code: int) -> None:
    with pytest.raises(A2aError) as caught:
        bridge.request_to_canonical("0.3", method, params)
    assert caught.value.code == code
    assert "Traceback" not in caught.value.message


@pytest.mark.parametrize(
    "params",
    [
        {"message": {"messageId": "m", "role": "ROLE_ROBOT"}},
        {"message": {"messageId": "m", "parts": [{}]}},  # a part without content
        {"message": "nope"},
        {"configuration": {"historyLength": "many"}},
    ],
)
def test_bad_canonical_requests_to_v03(params: dict[str, Any]) -> None:
    with pytest.raises(A2aError) as caught:
        bridge.request_from_canonical("0.3", "SendMessage", params)
    assert caught.value.code == INVALID_PARAMS


def test_unknown_canonical_method() -> None:
    with pytest.raises(A2aError) as caught:
        bridge.request_from_canonical("0.3", "message/send", {})
    assert caught.value.code == METHOD_NOT_FOUND


# --- parts, roles and states ------------------------------------------------------------


@pytest.mark.parametrize("part", parts03(), ids=["text", "file-bytes", "file-uri", "data"])
def test_every_part_kind_round_trips(part: t03.Part) -> None:
    message = t03.Message(message_id="m", role=t03.Role.agent, parts=[part])
    result = dump(message)
    canonical = bridge.result_to_canonical("0.3", "message/send", result)
    assert canonical["message"]["role"] == "ROLE_AGENT"
    strict(canonical, pb.SendMessageResponse())
    assert bridge.result_from_canonical("0.3", "SendMessage", canonical) == result


def test_v10_only_part_values_survive() -> None:
    """A v1.0 data part may hold any JSON value; v0.3's compat wrapper carries it back."""
    canonical = {"message": {"messageId": "m", "role": "ROLE_AGENT", "parts": [{"data": [1, "x"]}]}}
    legacy = bridge.result_from_canonical("0.3", "SendMessage", canonical)
    assert legacy["parts"][0]["kind"] == "data"
    assert bridge.result_to_canonical("0.3", "SendMessage", legacy) == canonical


@pytest.mark.parametrize("state", list(t03.TaskState))
def test_every_task_state_round_trips(state: t03.TaskState) -> None:
    result = dump(task03(state))
    canonical = bridge.result_to_canonical("0.3", "tasks/get", result)
    expected = (
        "TASK_STATE_UNSPECIFIED"
        if state is t03.TaskState.unknown
        else "TASK_STATE_" + state.value.upper().replace("-", "_")
    )
    assert canonical["status"].get("state", "TASK_STATE_UNSPECIFIED") == expected
    strict(canonical, pb.Task())
    assert bridge.result_from_canonical("0.3", "GetTask", canonical) == result


def test_task_in_v10_terms() -> None:
    canonical = bridge.result_to_canonical("0.3", "tasks/cancel", dump(task03()))
    assert canonical["id"] == "task-1" and canonical["contextId"] == "ctx-1"
    assert canonical["status"]["timestamp"] == "2026-01-02T03:04:05Z"
    assert canonical["status"]["message"]["role"] == "ROLE_AGENT"
    assert canonical["history"][0]["role"] == "ROLE_USER"
    artifact = canonical["artifacts"][0]
    assert artifact["artifactId"] == "art-1" and artifact["name"] == "report"
    assert artifact["metadata"] == {"size": 10}
    assert artifact["extensions"] == ["https://ext.example/v1"]
    assert canonical["metadata"] == METADATA
    assert "kind" not in canonical


@pytest.mark.parametrize(
    "result",
    [
        {"id": "t", "contextId": "c", "status": {"state": "TASK_STATE_BOGUS"}},
        {"id": "t", "contextId": "c", "status": {"state": 7}} | {"status": {"state": "nope"}},
        {"id": "t", "history": [{"messageId": "m", "role": "ROLE_ALIEN"}]},
        [],
        "task",
    ],
)
def test_bad_canonical_results(result: Any) -> None:
    with pytest.raises(A2aError) as caught:
        bridge.result_from_canonical("0.3", "GetTask", result)
    assert caught.value.code == INVALID_AGENT_RESPONSE


@pytest.mark.parametrize(
    "result",
    [
        {"kind": "task", "id": "t", "contextId": "c", "status": {"state": "bogus"}},
        {
            "kind": "task",
            "id": "t",
            "contextId": "c",
            "status": {"state": "completed", "timestamp": "yesterday"},
        },
        {"kind": "widget"},
        {
            "kind": "message",
            "messageId": "m",
            "role": "user",
            "parts": [{"kind": "file", "file": {"name": "no-content"}}],
        },
        None,
    ],
)
def test_bad_v03_results(result: Any) -> None:
    with pytest.raises(A2aError) as caught:
        bridge.result_to_canonical("0.3", "message/send", result)
    assert caught.value.code == INVALID_AGENT_RESPONSE


# --- results of every method ------------------------------------------------------------


def v03_results() -> list[tuple[str, Any]]:
    return [
        ("message/send", dump(task03())),
        ("message/send", dump(message03())),
        ("tasks/get", dump(task03(t03.TaskState.working))),
        ("tasks/cancel", dump(task03(t03.TaskState.canceled))),
        ("tasks/pushNotificationConfig/set", dump(push03())),
        ("tasks/pushNotificationConfig/get", dump(push03())),
        ("tasks/pushNotificationConfig/list", [dump(push03("a")), dump(push03("b"))]),
        ("tasks/pushNotificationConfig/delete", None),
    ]


@pytest.mark.parametrize(
    ("method", "result"), v03_results(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_result_round_trip_v03_v10_v03(method: str, result: Any) -> None:
    canonical = bridge.result_to_canonical("0.3", method, result)
    assert bridge.result_from_canonical("0.3", method, canonical) == result
    assert bridge.result_from_canonical("1.0", method, canonical) == canonical


def test_send_message_results_are_wrapped_in_v10() -> None:
    task = bridge.result_to_canonical("0.3", "message/send", dump(task03()))
    message = bridge.result_to_canonical("0.3", "message/send", dump(message03()))
    assert set(task) == {"task"} and set(message) == {"message"}
    strict(task, pb.SendMessageResponse())
    strict(message, pb.SendMessageResponse())
    # and a v0.3 result is the object itself, with its kind
    assert bridge.result_from_canonical("0.3", "SendMessage", task)["kind"] == "task"
    assert bridge.result_from_canonical("0.3", "SendMessage", message)["kind"] == "message"
    # a v0.3 agent that leaves out `kind` is still read by shape
    bare = dump(task03())
    del bare["kind"]
    assert bridge.result_to_canonical("0.3", "message/send", bare) == task


def test_push_config_results_in_v10_terms() -> None:
    config = bridge.result_to_canonical("0.3", "tasks/pushNotificationConfig/get", dump(push03()))
    assert config == {
        "taskId": "task-1",
        "id": "cfg-1",
        "url": "https://hooks.example/a2a",
        "token": "tok",
        "authentication": {"scheme": "Bearer", "credentials": "secret"},
    }
    listed = bridge.result_to_canonical(
        "0.3", "tasks/pushNotificationConfig/list", [dump(push03())]
    )
    assert listed == {"configs": [config]}
    strict(listed, pb.ListTaskPushNotificationConfigsResponse())
    assert bridge.result_to_canonical("0.3", "tasks/pushNotificationConfig/delete", None) == {}
    assert bridge.result_from_canonical("0.3", "DeleteTaskPushNotificationConfig", {}) is None


def test_v10_results_round_trip_through_v03() -> None:
    task = pb.Task(
        id="t",
        context_id="c",
        status=pb.TaskStatus(state=pb.TASK_STATE_INPUT_REQUIRED),
        artifacts=[pb.Artifact(artifact_id="a", parts=[pb.Part(text="x")])],
    )
    for method, proto in [
        ("SendMessage", pb.SendMessageResponse(task=task)),
        (
            "SendMessage",
            pb.SendMessageResponse(
                message=pb.Message(message_id="m", role=pb.ROLE_AGENT, parts=[pb.Part(text="x")])
            ),
        ),
        ("GetTask", task),
        ("CancelTask", task),
    ]:
        canonical = MessageToDict(proto)
        legacy = bridge.result_from_canonical("0.3", method, canonical)
        assert bridge.result_to_canonical("0.3", method, legacy) == canonical


# --- stream events ----------------------------------------------------------------------


def v03_events() -> list[dict[str, Any]]:
    status = [
        dump(
            t03.TaskStatusUpdateEvent(
                task_id="task-1",
                context_id="ctx-1",
                status=t03.TaskStatus(state=state, timestamp="2026-01-02T03:04:05.250Z"),
                final=state.value in bridge.V03_FINAL_STATES,
                metadata=METADATA,
            )
        )
        for state in t03.TaskState
        if state is not t03.TaskState.unknown
    ]
    artifact = dump(
        t03.TaskArtifactUpdateEvent(
            task_id="task-1",
            context_id="ctx-1",
            artifact=t03.Artifact(artifact_id="art-1", parts=parts03()),
            append=True,
            last_chunk=False,
            metadata={"chunk": 2},
        )
    )
    return [dump(task03(t03.TaskState.submitted)), dump(message03()), *status, artifact]


@pytest.mark.parametrize(
    "event", v03_events(), ids=lambda e: f"{e['kind']}-{e.get('status', {}).get('state', '')}"
)
def test_event_round_trip_v03_v10_v03(event: dict[str, Any]) -> None:
    canonical = bridge.event_to_canonical("0.3", event)
    assert len(canonical) == 1
    strict(canonical, pb.StreamResponse())
    assert bridge.event_from_canonical("0.3", canonical) == event
    assert bridge.event_from_canonical("1.0", canonical) == canonical
    # the streaming methods' results are events too
    assert bridge.result_to_canonical("0.3", "message/stream", event) == canonical
    assert bridge.result_from_canonical("0.3", "SubscribeToTask", canonical) == event


def test_events_in_v10_terms() -> None:
    events = {e["kind"]: e for e in v03_events()}
    status = bridge.event_to_canonical("0.3", events["status-update"])
    assert set(status) == {"statusUpdate"}
    assert "final" not in status["statusUpdate"]
    artifact = bridge.event_to_canonical("0.3", events["artifact-update"])["artifactUpdate"]
    assert artifact["append"] is True and artifact["artifact"]["artifactId"] == "art-1"
    assert set(bridge.event_to_canonical("0.3", events["task"])) == {"task"}
    assert set(bridge.event_to_canonical("0.3", events["message"])) == {"message"}


@pytest.mark.parametrize(
    ("state", "final"),
    [
        ("TASK_STATE_WORKING", False),
        ("TASK_STATE_SUBMITTED", False),
        ("TASK_STATE_AUTH_REQUIRED", False),
        ("TASK_STATE_INPUT_REQUIRED", True),
        ("TASK_STATE_COMPLETED", True),
        ("TASK_STATE_FAILED", True),
        ("TASK_STATE_CANCELED", True),
        ("TASK_STATE_REJECTED", True),
    ],
)
def test_v10_status_update_gets_final_where_the_stream_ends(state: str, final: bool) -> None:
    event = {"statusUpdate": {"taskId": "t", "contextId": "c", "status": {"state": state}}}
    legacy = bridge.event_from_canonical("0.3", event)
    assert legacy["kind"] == "status-update"
    assert legacy["final"] is final


@pytest.mark.parametrize(
    "event",
    [{}, {"weird": {}}, {"statusUpdate": {"status": {"state": "TASK_STATE_NOPE"}}}, [], "x"],
)
def test_bad_canonical_events(event: Any) -> None:
    with pytest.raises(A2aError) as caught:
        bridge.event_from_canonical("0.3", event)
    assert caught.value.code == INVALID_AGENT_RESPONSE


@pytest.mark.parametrize(
    "event",
    [
        {
            "kind": "status-update",
            "taskId": "t",
            "contextId": "c",
            "status": {"state": "paused"},
            "final": False,
        },
        {"kind": "status-update", "taskId": "t"},
        {"taskId": "t"},
        {"kind": 3},
        None,
    ],
)
def test_bad_v03_events(event: Any) -> None:
    with pytest.raises(A2aError) as caught:
        bridge.event_to_canonical("0.3", event)
    assert caught.value.code == INVALID_AGENT_RESPONSE


# --- errors -----------------------------------------------------------------------------


def test_error_v10_carries_error_info_details() -> None:
    error = A2aError(TASK_NOT_FOUND, "task t9 not found", {"taskId": "t9", "attempt": 2})
    assert bridge.error_for("1.0", error) == {
        "code": TASK_NOT_FOUND,
        "message": "task t9 not found",
        "data": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "TASK_NOT_FOUND",
                "domain": "a2a-protocol.org",
                "metadata": {"taskId": "t9", "attempt": "2"},
            }
        ],
    }
    assert (
        bridge.error_for("1.0", A2aError(VERSION_NOT_SUPPORTED, "no"))["data"][0]["metadata"] == {}
    )
    assert bridge.error_for("1.0", A2aError(INVALID_PARAMS, "bad", "why"))["data"][0][
        "metadata"
    ] == {"detail": "why"}


def test_error_v03_is_free_form() -> None:
    assert bridge.error_for("0.3", A2aError(TASK_NOT_FOUND, "gone")) == {
        "code": TASK_NOT_FOUND,
        "message": "gone",
    }
    assert bridge.error_for("0.3", A2aError(INVALID_PARAMS, "bad", {"field": "id"}))["data"] == {
        "field": "id"
    }


def test_error_round_trip_between_versions() -> None:
    """An agent's error re-rendered for a client of the other version keeps code and data."""
    v03 = bridge.error_for("0.3", A2aError(TASK_NOT_FOUND, "gone", {"taskId": "t9"}))
    v10 = bridge.error_for("1.0", A2aError(v03["code"], v03["message"], v03["data"]))
    assert v10["code"] == TASK_NOT_FOUND and v10["data"][0]["metadata"] == {"taskId": "t9"}
    # a v1.0 agent's details pass through to a v1.0 client and are unwrapped for v0.3
    again = A2aError(v10["code"], v10["message"], v10["data"])
    assert bridge.error_for("1.0", again) == v10
    assert bridge.error_for("0.3", again) == v03
    empty = A2aError(
        TASK_NOT_FOUND, "gone", bridge.error_for("1.0", A2aError(TASK_NOT_FOUND, "gone"))["data"]
    )
    assert "data" not in bridge.error_for("0.3", empty)


def test_error_v10_matches_a2a_sdk() -> None:
    from a2a.utils.error_handlers import build_error_details
    from a2a.utils.errors import TaskNotFoundError

    ours = bridge.error_for("1.0", A2aError(TASK_NOT_FOUND, "x", {"taskId": "t"}))
    assert ours["data"] == build_error_details(TaskNotFoundError("x", {"taskId": "t"}))


# --- agent cards ------------------------------------------------------------------------


def card10() -> Any:
    """A v1.0 card as an a2a-sdk v1.0 agent builds it: JSON-RPC and REST in v1.0, plus a
    v0.3 JSON-RPC interface."""
    card = pb.AgentCard(
        name="Weather",
        description="Forecasts",
        version="2.1.0",
        supported_interfaces=[
            pb.AgentInterface(
                url="https://w.example/a2a", protocol_binding="JSONRPC", protocol_version="1.0"
            ),
            pb.AgentInterface(
                url="https://w.example/rest", protocol_binding="HTTP+JSON", protocol_version="1.0"
            ),
            pb.AgentInterface(
                url="https://w.example/a2a/v03", protocol_binding="JSONRPC", protocol_version="0.3"
            ),
        ],
        provider=pb.AgentProvider(organization="Example", url="https://example.com"),
        documentation_url="https://w.example/docs",
        capabilities=pb.AgentCapabilities(
            streaming=True,
            push_notifications=False,
            extended_agent_card=True,
            extensions=[pb.AgentExtension(uri="https://ext.example/v1", required=False)],
        ),
        default_input_modes=["text/plain", "image/*"],
        default_output_modes=["text/plain", "application/json"],
        skills=[
            pb.AgentSkill(
                id="forecast",
                name="Forecast",
                description="Weather forecast for a city",
                tags=["weather", "forecast"],
                examples=["Weather in Paris tomorrow?"],
                input_modes=["text/plain"],
                output_modes=["application/json"],
            )
        ],
    )
    ParseDict({"region": "eu", "levels": [1, 2]}, card.capabilities.extensions[0].params)
    card.security_schemes["bearer"].http_auth_security_scheme.scheme = "Bearer"
    card.security_schemes["bearer"].http_auth_security_scheme.bearer_format = "JWT"
    card.security_schemes["key"].api_key_security_scheme.name = "x-api-key"
    card.security_schemes["key"].api_key_security_scheme.location = "header"
    requirement = card.security_requirements.add()
    requirement.schemes["bearer"].list.extend(["read"])
    return card


def card03() -> t03.AgentCard:
    """A v0.3 card as an a2a-sdk 0.3 agent serves it."""
    return t03.AgentCard(
        name="Legacy",
        description="An old agent",
        version="0.9.0",
        url="https://old.example/rpc",
        preferred_transport="JSONRPC",
        protocol_version="0.3.0",
        additional_interfaces=[
            t03.AgentInterface(url="https://old.example/rest", transport="HTTP+JSON")
        ],
        provider=t03.AgentProvider(organization="Old Co", url="https://old.example"),
        capabilities=t03.AgentCapabilities(
            streaming=True,
            push_notifications=True,
            extensions=[
                t03.AgentExtension(
                    uri="https://ext.example/v1", required=False, params={"mode": "full", "n": 1}
                )
            ],
        ),
        supports_authenticated_extended_card=True,
        security_schemes={
            "bearer": t03.SecurityScheme(
                root=t03.HTTPAuthSecurityScheme(scheme="bearer", bearer_format="JWT")
            ),
            "key": t03.SecurityScheme(
                root=t03.APIKeySecurityScheme(in_=t03.In.header, name="x-api-key")
            ),
        },
        security=[{"bearer": []}],
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            t03.AgentSkill(
                id="echo",
                name="Echo",
                description="Echoes",
                tags=["echo"],
                examples=["say hi"],
                input_modes=["text/plain"],
            )
        ],
    )


def test_v10_card_is_canonical_as_is() -> None:
    card = MessageToDict(card10())
    canonical, version = bridge.card_to_canonical(card)
    assert version == "1.0"
    assert canonical == card
    assert bridge.card_from_canonical("1.0", canonical) == canonical


def test_hybrid_card_served_by_a2a_sdk_reads_as_v10() -> None:
    """a2a-sdk serves v1.0 cards with the v0.3 fields merged in for old clients."""
    from a2a.server.request_handlers.response_helpers import agent_card_to_dict

    served = agent_card_to_dict(card10())
    assert "url" in served and "supportedInterfaces" in served
    canonical, version = bridge.card_to_canonical(served)
    assert version == "1.0"
    assert canonical == MessageToDict(card10())


def test_v10_card_for_a_v03_client() -> None:
    legacy = bridge.card_from_canonical("0.3", MessageToDict(card10()))
    model = t03.AgentCard.model_validate(legacy)  # a v0.3 peer reads it
    assert model.url == "https://w.example/a2a/v03"
    assert model.preferred_transport == "JSONRPC"
    assert legacy["protocolVersion"] == "0.3"
    assert "additionalInterfaces" not in legacy  # only the 0.3 interface speaks 0.3
    assert legacy["supportsAuthenticatedExtendedCard"] is True
    assert legacy["capabilities"]["streaming"] is True
    assert legacy["capabilities"]["extensions"][0]["params"] == {"region": "eu", "levels": [1, 2]}
    assert legacy["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "Bearer",
        "bearerFormat": "JWT",
    }
    assert legacy["securitySchemes"]["key"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }
    assert legacy["security"] == [{"bearer": ["read"]}]
    assert legacy["skills"][0]["id"] == "forecast"
    assert legacy["skills"][0]["outputModes"] == ["application/json"]
    assert legacy["defaultInputModes"] == ["text/plain", "image/*"]
    # and back: everything but the interfaces a v0.3 card cannot list
    canonical, version = bridge.card_to_canonical(legacy)
    assert version == "0.3"
    original = MessageToDict(card10())
    for key in (
        "name",
        "description",
        "version",
        "provider",
        "skills",
        "securitySchemes",
        "securityRequirements",
        "defaultInputModes",
        "defaultOutputModes",
        "documentationUrl",
    ):
        assert canonical[key] == original[key], key
    assert canonical["capabilities"] == original["capabilities"]


def test_v10_only_card_is_offered_to_v03_clients() -> None:
    """Crossway bridges, so an agent with only v1.0 interfaces still gets a v0.3 card; the
    JSON-RPC interface is the primary one."""
    card = card10()
    del card.supported_interfaces[2]
    card.supported_interfaces.reverse()  # REST first
    legacy = bridge.card_from_canonical("0.3", MessageToDict(card))
    t03.AgentCard.model_validate(legacy)
    assert legacy["url"] == "https://w.example/a2a"
    assert legacy["preferredTransport"] == "JSONRPC"
    assert legacy["protocolVersion"] == "0.3.0"
    assert legacy["additionalInterfaces"] == [
        {"url": "https://w.example/rest", "transport": "HTTP+JSON"}
    ]


def test_v03_card_round_trip() -> None:
    card = dump(card03())
    canonical, version = bridge.card_to_canonical(card)
    assert version == "0.3"
    strict(canonical, pb.AgentCard())
    assert canonical["supportedInterfaces"] == [
        {
            "url": "https://old.example/rpc",
            "protocolBinding": "JSONRPC",
            "protocolVersion": "0.3.0",
        },
        {
            "url": "https://old.example/rest",
            "protocolBinding": "HTTP+JSON",
            "protocolVersion": "0.3",
        },
    ]
    assert canonical["capabilities"]["extendedAgentCard"] is True
    assert canonical["capabilities"]["extensions"][0]["params"] == {"mode": "full", "n": 1}
    assert canonical["securitySchemes"]["key"] == {
        "apiKeySecurityScheme": {"location": "header", "name": "x-api-key"}
    }
    assert canonical["skills"][0]["tags"] == ["echo"]
    assert bridge.card_from_canonical("0.3", canonical) == card


def test_extended_card_result_round_trip() -> None:
    card = dump(card03())
    canonical = bridge.result_to_canonical("0.3", "agent/getAuthenticatedExtendedCard", card)
    assert canonical == bridge.card_to_canonical(card)[0]
    assert bridge.result_from_canonical("0.3", "GetExtendedAgentCard", canonical) == card


@pytest.mark.parametrize(
    "card",
    [
        [],
        "card",
        {"name": "x"},  # neither supportedInterfaces nor url
        {
            "name": "x",
            "url": "https://x",
            "protocolVersion": "0.3.0",
        },  # v0.3 without required fields
        {"name": "x", "supportedInterfaces": "https://x"},
        {"name": "x", "supportedInterfaces": []},
        {"name": "x", "supportedInterfaces": [{"url": "https://x"}], "securitySchemes": {"k": 1}},
    ],
)
def test_bad_cards(card: Any) -> None:
    with pytest.raises(A2aError) as caught:
        bridge.card_to_canonical(card)
    assert caught.value.code == INVALID_AGENT_RESPONSE


def test_card_of_an_unknown_version() -> None:
    card = dump(card03()) | {"protocolVersion": "2.0"}
    with pytest.raises(A2aError) as caught:
        bridge.card_to_canonical(card)
    assert caught.value.code == VERSION_NOT_SUPPORTED


def test_card_with_an_empty_security_scheme_for_v03() -> None:
    card = MessageToDict(card10()) | {"securitySchemes": {"odd": {}}}
    with pytest.raises(A2aError) as caught:
        bridge.card_from_canonical("0.3", card)
    assert caught.value.code == INVALID_AGENT_RESPONSE


# --- cost -------------------------------------------------------------------------------


def test_send_message_translation_cost() -> None:
    """Reported, not asserted: a v0.3 message/send request to canonical and its Task result
    back to v0.3, the work a v0.3 client calling a v1.0 agent adds per call."""
    request = dump(
        t03.MessageSendParams(
            message=t03.Message(
                message_id="m",
                role=t03.Role.user,
                parts=[text_part("What is the weather in Paris?")],
            )
        )
    )
    result = MessageToDict(
        pb.SendMessageResponse(
            task=pb.Task(
                id="t",
                context_id="c",
                status=pb.TaskStatus(state=pb.TASK_STATE_COMPLETED),
                artifacts=[pb.Artifact(artifact_id="a", parts=[pb.Part(text="Sunny, 21 C")])],
            )
        )
    )

    def request_only() -> None:
        bridge.request_to_canonical("0.3", "message/send", request)

    def result_only() -> None:
        bridge.result_from_canonical("0.3", "SendMessage", result)

    n = 200
    request_us = min(timeit.repeat(request_only, number=n, repeat=3)) / n * 1e6
    result_us = min(timeit.repeat(result_only, number=n, repeat=3)) / n * 1e6
    print(
        f"\nSendMessage v0.3->v1.0 request {request_us:.1f} us, v1.0->v0.3 result {result_us:.1f} us"
    )
