"""crossway.a2a.rest: the A2A HTTP+JSON binding <-> canonical form, against a2a-sdk's own REST
client (its requests go through parse_rest, our answers through its parser) and its REST server
(rest_request's requests are accepted, its answers read back)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from crossway.a2a import errors as codes
from crossway.a2a.errors import A2aError
from crossway.a2a.rest import (
    RestMethodNotAllowed,
    error_headers,
    is_streaming,
    parse_rest,
    rest_error,
    rest_error_event,
    rest_event,
    rest_event_to_canonical,
    rest_request,
    rest_response_to_canonical,
    rest_result,
)

MESSAGE: dict[str, Any] = {
    "messageId": "m-1",
    "role": "ROLE_USER",
    "parts": [{"text": "hello"}],
    "contextId": "c-1",
}
TASK: dict[str, Any] = {
    "id": "t-1",
    "contextId": "c-1",
    "status": {"state": "TASK_STATE_COMPLETED"},
}
PUSH: dict[str, Any] = {
    "taskId": "t-1",
    "id": "p-1",
    "url": "https://hooks.example/a2a",
    "token": "tok",
}

# (method, canonical params, expected http method, expected path, expected query)
V10_ROUTES: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("SendMessage", {"message": MESSAGE}, "POST", "/message:send", ""),
    ("SendStreamingMessage", {"message": MESSAGE}, "POST", "/message:stream", ""),
    ("GetTask", {"id": "t-1", "historyLength": 3}, "GET", "/tasks/t-1", "historyLength=3"),
    (
        "ListTasks",
        {
            "contextId": "c-1",
            "status": "TASK_STATE_WORKING",
            "pageSize": 5,
            "includeArtifacts": True,
        },
        "GET",
        "/tasks",
        "contextId=c-1&status=TASK_STATE_WORKING&pageSize=5&includeArtifacts=true",
    ),
    ("CancelTask", {"id": "t-1"}, "POST", "/tasks/t-1:cancel", ""),
    ("SubscribeToTask", {"id": "t-1"}, "POST", "/tasks/t-1:subscribe", ""),
    ("CreateTaskPushNotificationConfig", PUSH, "POST", "/tasks/t-1/pushNotificationConfigs", ""),
    (
        "GetTaskPushNotificationConfig",
        {"taskId": "t-1", "id": "p-1"},
        "GET",
        "/tasks/t-1/pushNotificationConfigs/p-1",
        "",
    ),
    (
        "ListTaskPushNotificationConfigs",
        {"taskId": "t-1", "pageSize": 2},
        "GET",
        "/tasks/t-1/pushNotificationConfigs",
        "pageSize=2",
    ),
    (
        "DeleteTaskPushNotificationConfig",
        {"taskId": "t-1", "id": "p-1"},
        "DELETE",
        "/tasks/t-1/pushNotificationConfigs/p-1",
        "",
    ),
    ("GetExtendedAgentCard", {}, "GET", "/extendedAgentCard", ""),
]


@pytest.mark.parametrize(("method", "params", "http", "path", "query"), V10_ROUTES)
@pytest.mark.parametrize("tenant", [None, "acme"])
def test_v10_route_round_trip(
    method: str, params: dict[str, Any], http: str, path: str, query: str, tenant: str | None
) -> None:
    if tenant:
        params = {**params, "tenant": tenant}
        path = f"/{tenant}{path}"
    got_http, got_path, got_query, body = rest_request("1.0", method, params)
    assert (got_http, got_path, got_query) == (http, path, query)
    assert parse_rest("1.0", got_http, got_path, got_query, body) == (method, params)


V03_ROUTES: list[tuple[str, dict[str, Any], str, str]] = [
    ("GetTask", {"id": "t-1", "historyLength": 3}, "GET", "/v1/tasks/t-1"),
    ("CancelTask", {"id": "t-1"}, "POST", "/v1/tasks/t-1:cancel"),
    ("SubscribeToTask", {"id": "t-1"}, "POST", "/v1/tasks/t-1:subscribe"),
    (
        "GetTaskPushNotificationConfig",
        {"taskId": "t-1", "id": "p-1"},
        "GET",
        "/v1/tasks/t-1/pushNotificationConfigs/p-1",
    ),
    (
        "ListTaskPushNotificationConfigs",
        {"taskId": "t-1"},
        "GET",
        "/v1/tasks/t-1/pushNotificationConfigs",
    ),
    (
        "DeleteTaskPushNotificationConfig",
        {"taskId": "t-1", "id": "p-1"},
        "DELETE",
        "/v1/tasks/t-1/pushNotificationConfigs/p-1",
    ),
    ("GetExtendedAgentCard", {}, "GET", "/v1/card"),
]


@pytest.mark.parametrize(("method", "params", "http", "path"), V03_ROUTES)
def test_v03_route_round_trip(method: str, params: dict[str, Any], http: str, path: str) -> None:
    got_http, got_path, query, body = rest_request("0.3", method, params)
    assert (got_http, got_path) == (http, path)
    assert parse_rest("0.3", got_http, got_path, query, body) == (method, params)


def test_v03_bodies_are_v03_protobuf_json_and_round_trip() -> None:
    http, path, _, body = rest_request("0.3", "SendMessage", {"message": MESSAGE})
    wire = orjson.loads(body)
    assert (http, path) == ("POST", "/v1/message:send")
    assert wire["message"]["messageId"] == "m-1"  # proto field "request", JSON name "message"
    assert wire["message"]["content"] == [{"text": "hello"}]  # v0.3 proto: parts are "content"
    method, params = parse_rest("0.3", http, path, b"", body)
    assert method == "SendMessage"
    assert params["message"] == MESSAGE

    _, path, _, body = rest_request("0.3", "CreateTaskPushNotificationConfig", PUSH)
    assert orjson.loads(body)["parent"] == "tasks/t-1"
    method, params = parse_rest("0.3", "POST", path, b"", body)
    assert (method, params) == ("CreateTaskPushNotificationConfig", PUSH)


def test_v03_results_and_events_round_trip() -> None:
    for method, result in [
        ("SendMessage", {"task": TASK}),
        ("SendMessage", {"message": {**MESSAGE, "role": "ROLE_AGENT"}}),
        ("GetTask", TASK),
        ("CancelTask", TASK),
        ("GetTaskPushNotificationConfig", PUSH),
        ("ListTaskPushNotificationConfigs", {"configs": [PUSH]}),
    ]:
        status, body = rest_result(method, result, "0.3")
        assert status == 200
        assert rest_response_to_canonical("0.3", method, status, body) == result, method
    v03_message = orjson.loads(rest_result("SendMessage", {"message": MESSAGE}, "0.3")[1])[
        "message"
    ]
    assert v03_message["content"] == [{"text": "hello"}]  # v0.3 protobuf JSON, not v1.0
    event = {
        "statusUpdate": {
            "taskId": "t-1",
            "contextId": "c-1",
            "status": {"state": "TASK_STATE_WORKING"},
        }
    }
    frame = rest_event(event, "0.3")
    data = frame.removeprefix(b"data: ").removesuffix(b"\n\n")
    assert rest_event_to_canonical("0.3", "message", data) == event


def test_query_values_are_typed_and_checked() -> None:
    method, params = parse_rest(
        "1.0", "GET", "/tasks", b"pageSize=5&includeArtifacts=false&pageToken=x&unknown=1", b""
    )
    assert (method, params) == (
        "ListTasks",
        {"pageSize": 5, "includeArtifacts": False, "pageToken": "x"},
    )
    with pytest.raises(A2aError) as err:
        parse_rest("1.0", "GET", "/tasks", "pageSize=many", b"")
    assert (err.value.code, err.value.status) == (codes.INVALID_PARAMS, 400)


def test_subscribe_accepts_get_and_post_and_ids_may_hold_colons() -> None:
    assert parse_rest("1.0", "GET", "/tasks/a:b:subscribe", b"", b"") == (
        "SubscribeToTask",
        {"id": "a:b"},
    )
    assert parse_rest("1.0", "POST", "/tasks/t-1:subscribe", b"", b"{}") == (
        "SubscribeToTask",
        {"id": "t-1"},
    )
    assert parse_rest("1.0", "GET", "/tasks/a:b", b"", b"") == ("GetTask", {"id": "a:b"})
    assert is_streaming("SubscribeToTask") and is_streaming("SendStreamingMessage")
    assert not is_streaming("SendMessage")


def test_path_params_win_over_the_body() -> None:
    body = orjson.dumps({"id": "other", "metadata": {"why": "x"}})
    assert parse_rest("1.0", "POST", "/tasks/t-1:cancel", b"", body) == (
        "CancelTask",
        {"id": "t-1", "metadata": {"why": "x"}},
    )


@pytest.mark.parametrize(
    ("http", "path", "allow"),
    [
        ("GET", "/message:send", ("POST",)),
        ("DELETE", "/tasks/t-1", ("GET",)),
        ("GET", "/tasks/t-1:cancel", ("POST",)),
        ("PUT", "/tasks/t-1/pushNotificationConfigs", ("GET", "POST")),
        ("POST", "/v1/card", ("GET",)),
    ],
)
def test_wrong_method_is_405_with_allow(http: str, path: str, allow: tuple[str, ...]) -> None:
    version = "0.3" if path.startswith("/v1/") else "1.0"
    with pytest.raises(RestMethodNotAllowed) as err:
        parse_rest(version, http, path, b"", b"{}")
    assert err.value.status == 405
    assert err.value.allow == allow
    assert (b"allow", ", ".join(allow).encode()) in error_headers(err.value)
    status, body = rest_error(err.value)
    assert (
        status == 405 and orjson.loads(body)["error"]["details"][0]["reason"] == "METHOD_NOT_FOUND"
    )


@pytest.mark.parametrize(
    ("version", "path"),
    [
        ("1.0", "/nope"),
        ("1.0", "/tasks/t-1/artifacts"),
        ("1.0", "/"),
        ("0.3", "/v1/tasks"),
        ("0.3", "/message:send"),
    ],
)
def test_unknown_path_is_404_method_not_found(version: str, path: str) -> None:
    with pytest.raises(A2aError) as err:
        parse_rest(version, "GET", path, b"", b"")
    assert (err.value.code, err.value.status) == (codes.METHOD_NOT_FOUND, 404)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", codes.PARSE_ERROR),
        (b"[1, 2]", codes.INVALID_REQUEST),
        (b"", codes.INVALID_REQUEST),
    ],
)
def test_bad_bodies_are_400(body: bytes, code: int) -> None:
    with pytest.raises(A2aError) as err:
        parse_rest("1.0", "POST", "/message:send", b"", body)
    assert (err.value.code, err.value.status) == (code, 400)
    status, rendered = rest_error(err.value)
    assert status == 400 and orjson.loads(rendered)["error"]["status"] == "INVALID_ARGUMENT"


def test_v03_malformed_body_is_invalid_params() -> None:
    with pytest.raises(A2aError) as err:
        parse_rest(
            "0.3", "POST", "/v1/message:send", b"", b'{"message": {"content": "not a list"}}'
        )
    assert (err.value.code, err.value.status) == (codes.INVALID_PARAMS, 400)


def test_rest_error_shape_and_back() -> None:
    error = A2aError(codes.TASK_NOT_FOUND, "no task t-9", {"taskId": "t-9"})
    status, body = rest_error(error)
    assert status == 404
    assert orjson.loads(body) == {
        "error": {
            "code": 404,
            "status": "NOT_FOUND",
            "message": "no task t-9",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "TASK_NOT_FOUND",
                    "domain": "a2a-protocol.org",
                    "metadata": {"taskId": "t-9"},
                }
            ],
        }
    }
    with pytest.raises(A2aError) as err:
        rest_response_to_canonical("1.0", "GetTask", status, body)
    assert (err.value.code, err.value.message, err.value.data) == (
        codes.TASK_NOT_FOUND,
        "no task t-9",
        {"taskId": "t-9"},
    )
    v03 = orjson.loads(rest_error(error, "0.3")[1])
    assert (v03["type"], v03["message"]) == ("TaskNotFoundError", "no task t-9")
    frame = rest_error_event(error)
    assert frame.startswith(b"event: error\ndata: ")
    with pytest.raises(A2aError) as err:
        rest_event_to_canonical("1.0", "error", frame.split(b"data: ", 1)[1])
    assert err.value.code == codes.TASK_NOT_FOUND


@pytest.mark.parametrize(
    ("status", "body", "code", "http"),
    [
        (404, b"Not Found", codes.METHOD_NOT_FOUND, 404),
        (500, b"<html>oops</html>", codes.INTERNAL_ERROR, 502),
        (
            409,
            b'{"type": "TaskNotCancelableError", "message": "done"}',
            codes.TASK_NOT_CANCELABLE,
            409,
        ),
        (200, b"not json", codes.INVALID_AGENT_RESPONSE, 502),
        (200, b"[]", codes.INVALID_AGENT_RESPONSE, 502),
    ],
)
def test_agent_error_answers(status: int, body: bytes, code: int, http: int) -> None:
    with pytest.raises(A2aError) as err:
        rest_response_to_canonical("1.0", "GetTask", status, body)
    assert (err.value.code, err.value.status) == (code, http)


def test_client_side_refuses_what_rest_cannot_say() -> None:
    with pytest.raises(A2aError) as err:
        rest_request("0.3", "ListTasks", {})
    assert err.value.code == codes.UNSUPPORTED_OPERATION
    with pytest.raises(A2aError) as err:
        rest_request("1.0", "GetTask", {})
    assert err.value.code == codes.INVALID_PARAMS
    assert rest_request("1.0", "GetTask", {"id": "a/b c"})[1] == "/tasks/a%2Fb%20c"


# ---------------------------------------------------------------------------------------------
# a2a-sdk's REST client against parse_rest + rest_result (Crossway as the REST server)

CANNED: dict[str, Any] = {
    "SendMessage": {"task": TASK},
    "GetTask": TASK,
    "ListTasks": {"tasks": [TASK], "nextPageToken": "", "pageSize": 1, "totalSize": 1},
    "CancelTask": TASK,
    "CreateTaskPushNotificationConfig": PUSH,
    "GetTaskPushNotificationConfig": PUSH,
    "ListTaskPushNotificationConfigs": {"configs": [PUSH]},
    "DeleteTaskPushNotificationConfig": None,
    "GetExtendedAgentCard": {
        "name": "echo",
        "description": "d",
        "version": "1",
        "supportedInterfaces": [
            {
                "url": "http://agent.test/agent",
                "protocolBinding": "HTTP+JSON",
                "protocolVersion": "0.3",
            }
        ],
    },
}
STREAM_EVENTS = [
    {"task": {**TASK, "status": {"state": "TASK_STATE_WORKING"}}},
    {
        "statusUpdate": {
            "taskId": "t-1",
            "contextId": "c-1",
            "status": {"state": "TASK_STATE_COMPLETED"},
        }
    },
]


def crossway_like(version: str, seen: list[tuple[str, dict[str, Any]]]) -> httpx.MockTransport:
    """A REST server made of parse_rest and the renderers, answering canned canonical results."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/agent")
        try:
            method, params = parse_rest(
                version, request.method, path, request.url.query, request.content
            )
            seen.append((method, params))
            if params.get("id") == "missing":
                raise A2aError(codes.TASK_NOT_FOUND, "no such task")
        except A2aError as exc:
            status, body = rest_error(exc, version)
            headers = {k.decode(): v.decode() for k, v in error_headers(exc)}
            return httpx.Response(status, content=body, headers=headers)
        if is_streaming(method):
            frames = b"".join(rest_event(e, version) for e in STREAM_EVENTS)
            return httpx.Response(
                200, content=frames, headers={"content-type": "text/event-stream"}
            )
        status, body = rest_result(method, CANNED[method], version)
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    return httpx.MockTransport(handle)


async def test_a2a_sdk_rest_client_through_parse_rest() -> None:
    from a2a.client.transports.rest import RestTransport
    from a2a.types import a2a_pb2
    from a2a.utils.errors import TaskNotFoundError
    from google.protobuf.json_format import MessageToDict, ParseDict

    seen: list[tuple[str, dict[str, Any]]] = []
    card = a2a_pb2.AgentCard(
        name="echo", capabilities=a2a_pb2.AgentCapabilities(extended_agent_card=True)
    )
    async with httpx.AsyncClient(transport=crossway_like("1.0", seen)) as http:
        t = RestTransport(http, card, "http://agent.test/agent")
        message = ParseDict(MESSAGE, a2a_pb2.Message())
        sent = await t.send_message(a2a_pb2.SendMessageRequest(message=message, tenant="acme"))
        assert MessageToDict(sent) == {"task": TASK}
        events = [
            MessageToDict(e)
            async for e in t.send_message_streaming(a2a_pb2.SendMessageRequest(message=message))
        ]
        assert events == STREAM_EVENTS
        assert (
            MessageToDict(await t.get_task(a2a_pb2.GetTaskRequest(id="t-1", history_length=2)))
            == TASK
        )
        listed = await t.list_tasks(
            a2a_pb2.ListTasksRequest(
                context_id="c-1",
                page_size=5,
                include_artifacts=True,
                status=a2a_pb2.TASK_STATE_WORKING,
            )
        )
        assert listed.tasks[0].id == "t-1"
        await t.cancel_task(a2a_pb2.CancelTaskRequest(id="t-1"))
        assert [
            MessageToDict(e) async for e in t.subscribe(a2a_pb2.SubscribeToTaskRequest(id="t-1"))
        ] == STREAM_EVENTS
        push = ParseDict(PUSH, a2a_pb2.TaskPushNotificationConfig())
        assert MessageToDict(await t.create_task_push_notification_config(push)) == PUSH
        await t.get_task_push_notification_config(
            a2a_pb2.GetTaskPushNotificationConfigRequest(task_id="t-1", id="p-1")
        )
        await t.list_task_push_notification_configs(
            a2a_pb2.ListTaskPushNotificationConfigsRequest(task_id="t-1")
        )
        await t.delete_task_push_notification_config(
            a2a_pb2.DeleteTaskPushNotificationConfigRequest(task_id="t-1", id="p-1")
        )
        assert (
            await t.get_extended_agent_card(a2a_pb2.GetExtendedAgentCardRequest())
        ).name == "echo"
        with pytest.raises(TaskNotFoundError, match="no such task"):
            await t.get_task(a2a_pb2.GetTaskRequest(id="missing"))
    assert seen == [
        ("SendMessage", {"message": MESSAGE, "tenant": "acme"}),
        ("SendStreamingMessage", {"message": MESSAGE}),
        ("GetTask", {"id": "t-1", "historyLength": 2}),
        (
            "ListTasks",
            {
                "contextId": "c-1",
                "status": "TASK_STATE_WORKING",
                "pageSize": 5,
                "includeArtifacts": True,
            },
        ),
        ("CancelTask", {"id": "t-1"}),
        ("SubscribeToTask", {"id": "t-1"}),
        ("CreateTaskPushNotificationConfig", PUSH),
        ("GetTaskPushNotificationConfig", {"taskId": "t-1", "id": "p-1"}),
        ("ListTaskPushNotificationConfigs", {"taskId": "t-1"}),
        ("DeleteTaskPushNotificationConfig", {"taskId": "t-1", "id": "p-1"}),
        ("GetExtendedAgentCard", {}),
        ("GetTask", {"id": "missing"}),
    ]


async def test_a2a_sdk_v03_rest_client_through_parse_rest() -> None:
    from a2a.compat.v0_3.rest_transport import CompatRestTransport
    from a2a.types import a2a_pb2
    from a2a.utils.errors import TaskNotFoundError
    from google.protobuf.json_format import MessageToDict, ParseDict

    seen: list[tuple[str, dict[str, Any]]] = []
    async with httpx.AsyncClient(transport=crossway_like("0.3", seen)) as http:
        t = CompatRestTransport(http, None, "http://agent.test/agent")
        message = ParseDict(MESSAGE, a2a_pb2.Message())
        sent = await t.send_message(a2a_pb2.SendMessageRequest(message=message))
        assert MessageToDict(sent) == {"task": TASK}
        events = [
            MessageToDict(e)
            async for e in t.send_message_streaming(a2a_pb2.SendMessageRequest(message=message))
        ]
        assert events == STREAM_EVENTS
        assert (
            MessageToDict(await t.get_task(a2a_pb2.GetTaskRequest(id="t-1", history_length=2)))
            == TASK
        )
        await t.cancel_task(a2a_pb2.CancelTaskRequest(id="t-1"))
        assert [
            MessageToDict(e) async for e in t.subscribe(a2a_pb2.SubscribeToTaskRequest(id="t-1"))
        ] == STREAM_EVENTS
        push = ParseDict(PUSH, a2a_pb2.TaskPushNotificationConfig())
        assert MessageToDict(await t.create_task_push_notification_config(push)) == PUSH
        got = await t.get_task_push_notification_config(
            a2a_pb2.GetTaskPushNotificationConfigRequest(task_id="t-1", id="p-1")
        )
        assert MessageToDict(got) == PUSH
        assert (
            await t.get_extended_agent_card(a2a_pb2.GetExtendedAgentCardRequest())
        ).name == "echo"
        with pytest.raises(TaskNotFoundError, match="no such task"):
            await t.get_task(a2a_pb2.GetTaskRequest(id="missing"))
    assert [m for m, _ in seen] == [
        "SendMessage",
        "SendStreamingMessage",
        "GetTask",
        "CancelTask",
        "SubscribeToTask",
        "CreateTaskPushNotificationConfig",
        "GetTaskPushNotificationConfig",
        "GetExtendedAgentCard",
        "GetTask",
    ]
    # a2a-sdk's v0.3 client sends `"configuration": {}`: in v0.3 protobuf `blocking` is then
    # false, which a2a-sdk's own v0.3 server reads as non-blocking too.
    assert seen[0] == (
        "SendMessage",
        {"message": MESSAGE, "configuration": {"returnImmediately": True}},
    )
    assert seen[5] == ("CreateTaskPushNotificationConfig", PUSH)


# ---------------------------------------------------------------------------------------------
# rest_request against a2a-sdk's REST server (Crossway as the REST client)


@pytest.fixture
def a2a_sdk_app() -> Any:
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.events import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes.rest_routes import create_rest_routes
    from a2a.server.tasks import InMemoryPushNotificationConfigStore, InMemoryTaskStore, TaskUpdater
    from a2a.types import a2a_pb2
    from starlette.applications import Starlette

    class Echo(AgentExecutor):
        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            assert context.task_id and context.context_id
            updater = TaskUpdater(event_queue, context.task_id, context.context_id)
            task = a2a_pb2.Task(
                id=context.task_id,
                context_id=context.context_id,
                status=a2a_pb2.TaskStatus(state=a2a_pb2.TASK_STATE_SUBMITTED),
            )
            await event_queue.enqueue_event(task)
            await updater.complete(
                new_text_message("echo", context_id=context.context_id, task_id=context.task_id)
            )

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            raise NotImplementedError

    card = a2a_pb2.AgentCard(
        name="echo",
        description="echoes",
        version="1",
        capabilities=a2a_pb2.AgentCapabilities(
            streaming=True, push_notifications=True, extended_agent_card=True
        ),
        supported_interfaces=[
            a2a_pb2.AgentInterface(
                url="http://agent.test", protocol_binding="HTTP+JSON", protocol_version=v
            )
            for v in ("1.0", "0.3")
        ],
    )
    handler = DefaultRequestHandler(
        agent_executor=Echo(),
        task_store=InMemoryTaskStore(),
        agent_card=card,
        push_config_store=InMemoryPushNotificationConfigStore(),
        extended_agent_card=card,
    )
    return Starlette(routes=create_rest_routes(handler, enable_v0_3_compat=True))


async def call(http: httpx.AsyncClient, version: str, method: str, params: dict[str, Any]) -> Any:
    verb, path, query, body = rest_request(version, method, params)
    headers = {"A2A-Version": version, "content-type": "application/json"}
    if is_streaming(method):
        headers["accept"] = "text/event-stream"
    url = f"http://agent.test{path}" + (f"?{query}" if query else "")
    response = await http.request(verb, url, content=body or None, headers=headers)
    if is_streaming(method) and response.headers.get("content-type", "").startswith(
        "text/event-stream"
    ):
        events = []
        for block in response.text.replace("\r\n", "\n").split("\n\n"):
            lines = [ln for ln in block.split("\n") if ln]
            if not lines:
                continue
            name = next((ln[6:].strip() for ln in lines if ln.startswith("event:")), "message")
            data = "\n".join(ln[5:].lstrip() for ln in lines if ln.startswith("data:"))
            events.append(rest_event_to_canonical(version, name, data))
        return events
    return rest_response_to_canonical(version, method, response.status_code, response.content)


@pytest.mark.parametrize("version", ["1.0", "0.3"])
async def test_rest_request_is_accepted_by_a2a_sdk_rest_server(
    version: str, a2a_sdk_app: Any
) -> None:
    transport = httpx.ASGITransport(app=a2a_sdk_app)
    async with httpx.AsyncClient(transport=transport) as http:
        sent = await call(http, version, "SendMessage", {"message": MESSAGE})
        task = sent["task"]
        assert task["status"]["state"] == "TASK_STATE_COMPLETED"
        got = await call(http, version, "GetTask", {"id": task["id"], "historyLength": 1})
        assert got["id"] == task["id"]
        events = await call(
            http, version, "SendStreamingMessage", {"message": {**MESSAGE, "messageId": "m-2"}}
        )
        assert events and all(
            set(e) <= {"task", "message", "statusUpdate", "artifactUpdate"} for e in events
        )
        assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
        push = {"taskId": task["id"], "id": "p-1", "url": "https://hooks.example/a2a"}
        created = await call(http, version, "CreateTaskPushNotificationConfig", push)
        assert (created["taskId"], created["url"]) == (task["id"], push["url"])
        fetched = await call(
            http, version, "GetTaskPushNotificationConfig", {"taskId": task["id"], "id": "p-1"}
        )
        assert fetched["url"] == push["url"]
        listed = await call(
            http, version, "ListTaskPushNotificationConfigs", {"taskId": task["id"]}
        )
        assert [c["id"] for c in listed["configs"]] == ["p-1"]
        card = await call(http, version, "GetExtendedAgentCard", {})
        assert card["name"] == "echo"
        if version == "1.0":
            tasks = await call(http, version, "ListTasks", {"pageSize": 10})
            assert task["id"] in [t["id"] for t in tasks["tasks"]]
            deleted = await call(
                http,
                version,
                "DeleteTaskPushNotificationConfig",
                {"taskId": task["id"], "id": "p-1"},
            )
            assert deleted is None
        with pytest.raises(A2aError) as err:
            await call(http, version, "GetTask", {"id": "no-such-task"})
        assert err.value.code == codes.TASK_NOT_FOUND
        with pytest.raises(A2aError) as err:
            await call(http, version, "CancelTask", {"id": task["id"]})
        assert err.value.code == codes.TASK_NOT_CANCELABLE
