"""A mock of Azure OpenAI: deployment URLs with a required `api-version`, the `api-key` header,
and OpenAI's wire format with Azure's additions (content-filter annotations, and in streams a
leading chunk with no choices that carries `prompt_filter_results`). Records which deployment
served each request (`RecordedRequest.path`)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from tests.llm import openai_mock
from tests.mocks.base import (
    MockServer,
    RecordedRequest,
    Reply,
    injected_fault,
    json_response,
    running,
    send_stream,
    sse_data,
)

API_KEY = "azure-mock-key"
_PATH = re.compile(
    r"^/openai/(?:deployments/(?P<deployment>[^/]+)|v1)/(?P<op>chat/completions|embeddings)$"
)
_FILTERS = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(status, {"error": {"code": code, "message": message}}, headers)


def _injected_error(reply: Reply) -> web.Response:
    code = "429" if reply.status == 429 else "InternalServerError"
    return error(reply.status, reply.error_type or code, reply.error_text, reply.retry_headers)


class AzureMock(MockServer):
    """The mock plus the deployments that exist on the mocked resource."""

    def __init__(self, deployments: set[str]) -> None:
        super().__init__(handle)
        self.deployments = deployments


async def handle(
    server: MockServer, request: web.Request, recorded: RecordedRequest
) -> web.StreamResponse:
    assert isinstance(server, AzureMock)
    m = _PATH.match(recorded.path)
    if recorded.method != "POST" or m is None:
        return error(404, "404", "Resource not found")
    key = recorded.headers.get("api-key")
    if key != API_KEY:
        return error(
            401,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
            "key for an active subscription and use a correct regional API endpoint for your resource.",
        )
    deployment = m["deployment"]
    if deployment is not None and "api-version" not in recorded.query:
        return error(404, "404", "Resource not found")
    try:
        body = orjson.loads(recorded.body)
    except orjson.JSONDecodeError:
        return error(400, "BadRequest", "We could not parse the JSON body of your request.")
    if deployment is None:
        deployment = body.get("model") if isinstance(body, dict) else None
    if deployment not in server.deployments:
        return error(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last "
            "5 minutes, please wait a moment and try again.",
        )
    if m["op"] == "embeddings":
        return await openai_mock.embeddings(server, request, body)
    problem = openai_mock.validate_chat(body)
    if problem is not None:
        return error(400, "BadRequest", problem[0])
    reply = server.next_reply()
    faulted = await injected_fault(request, reply, _injected_error)
    if faulted is not None:
        return faulted
    if not body.get("stream"):
        answer: dict[str, Any] = openai_mock.completion(reply, deployment, int(body.get("n") or 1))
        answer["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _FILTERS}]
        for choice in answer["choices"]:
            choice["content_filter_results"] = _FILTERS
        return json_response(200, answer)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    filters_only = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTERS}],
    }
    events = [sse_data(filters_only)]
    events += openai_mock.stream_events(reply, deployment, include_usage)
    headers = {"content-type": "text/event-stream; charset=utf-8"}
    return await send_stream(request, reply, events, headers)


@asynccontextmanager
async def start_azure_mock(deployments: set[str] | None = None) -> AsyncIterator[AzureMock]:
    """A running Azure OpenAI mock; `url` is the resource endpoint (`base_url`)."""
    async with running(
        AzureMock(deployments or {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"})
    ) as server:
        yield server
