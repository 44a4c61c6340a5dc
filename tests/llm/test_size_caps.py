"""Security issue #7, hole 9: upstream answers on the LLM path are size-capped.

An upstream that floods a stream without ever ending an event must not grow the gateway's
memory: the client's stream ends with an error event in its own format and the upstream
connection is closed. A non-streamed answer over `max_response_bytes` is a 502, never read
whole. Both are tested in process (memory measured with tracemalloc) and through a real
`crossway serve` with the official SDKs.
"""

from __future__ import annotations

import asyncio
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from crossway.config.llm import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    LlmBackendConfig,
)
from crossway.llm.backend import LlmBackend
from crossway.llm.providers.eventstream import encode_message
from crossway.proxy import client
from crossway.server.context import RequestContext
from tests.helpers import http_status, start_gateway
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.llm.sse import parse_sse
from tests.mocks.base import MockServer, RecordedRequest, running

FLOOD_LIMIT = 32 * 1024 * 1024
"""The flooding upstream stops by itself after this much (well past both caps)."""
HUGE_BODY = 48 * 1024 * 1024
"""Size of the non-streamed answers over `max_response_bytes` (32 MiB by default)."""
PIECE = b"x" * 65536
MESSAGES = [{"role": "user", "content": "hi"}]

_CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}
    ],
}
_ANTHROPIC_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    },
}
_GEMINI_FIRST = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "index": 0}],
}

# Each flood: the valid first event(s), then the start of an event that never ends.
FLOODS: dict[str, tuple[bytes, bytes, str]] = {
    "openai": (b"data: " + orjson.dumps(_CHUNK) + b"\n\n", b"data: ", "text/event-stream"),
    "anthropic": (
        b"event: message_start\ndata: " + orjson.dumps(_ANTHROPIC_START) + b"\n\n",
        b"event: content_block_delta\ndata: ",
        "text/event-stream",
    ),
    "responses": (
        b'event: response.created\ndata: {"type":"response.created","response":{"id":"r"}}\n\n',
        b"event: response.output_text.delta\ndata: ",
        "text/event-stream",
    ),
    "gemini": (
        b"data: " + orjson.dumps(_GEMINI_FIRST) + b"\r\n\r\n",
        b"data: ",
        "text/event-stream",
    ),
    "bedrock": (
        encode_message(
            {":message-type": "event", ":event-type": "messageStart"}, b'{"role":"assistant"}'
        ),
        b"",  # then a frame announcing 8 MiB (over the 4 MiB cap), its bytes never ending
        "application/vnd.amazon.eventstream",
    ),
}


def _huge_frame_head() -> bytes:
    prelude = struct.pack(">II", 8 * 1024 * 1024, 0)
    return prelude + struct.pack(">I", zlib.crc32(prelude))


class FloodServer(MockServer):
    """An upstream that floods: streams (`FLOODS`) or non-streamed bodies over the caps."""

    def __init__(self) -> None:
        super().__init__(_flood)
        self.mode = "openai"
        self.sent = 0
        self.outcome = ""  # "cut" once the gateway closed the connection, "completed" if not
        self.done = asyncio.Event()


async def _flood(
    server: MockServer, request: web.Request, _: RecordedRequest
) -> web.StreamResponse:
    assert isinstance(server, FloodServer)
    server.sent, server.outcome = 0, ""
    server.done = asyncio.Event()
    mode = server.mode
    limit = FLOOD_LIMIT
    if mode.startswith("huge-json"):
        limit = HUGE_BODY
        response = web.StreamResponse(status=200, headers={"content-type": "application/json"})
        if mode == "huge-json-length":
            response.content_length = HUGE_BODY
        head = b'{"id":"x","choices":[],"filler":"'
    else:
        first, opening, content_type = FLOODS[mode]
        response = web.StreamResponse(status=200, headers={"content-type": content_type})
        head = first + (opening if mode != "bedrock" else _huge_frame_head())
    try:
        await response.prepare(request)
        await response.write(head)
        server.sent = len(head)
        while server.sent < limit:
            piece = PIECE[: limit - server.sent]
            await response.write(piece)
            server.sent += len(piece)
        server.outcome = "completed"
        await response.write_eof()
    except (ConnectionError, RuntimeError, asyncio.CancelledError):
        server.outcome = "cut"
        raise
    finally:
        server.outcome = server.outcome or "cut"
        server.done.set()
    return response


# --- in process: the backend itself, memory measured -----------------------------------------


class Sink:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )


def _receiver(body: bytes):  # type: ignore[no-untyped-def]
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


@pytest.fixture
async def flood() -> AsyncIterator[tuple[FloodServer, LlmBackend]]:
    async with running(FloodServer()) as server:
        url = server.url
        config = LlmBackendConfig.model_validate(
            {
                "type": "llm",
                "providers": {
                    "oai": {"type": "openai", "base_url": url + "/v1", "api_key": "k"},
                    "ant": {"type": "anthropic", "base_url": url, "api_key": "k"},
                    "gem": {"type": "gemini", "base_url": url + "/v1beta", "api_key": "k"},
                    "bed": {
                        "type": "bedrock",
                        "base_url": url,
                        "region": "us-east-1",
                        "aws_access_key_id": "AKIDEXAMPLE",
                        "aws_secret_access_key": "secret",
                    },
                },
                "models": [
                    {"name": "gpt-4o", "targets": [{"provider": "oai"}]},
                    {"name": "claude", "targets": [{"provider": "ant", "model": "claude-x"}]},
                    {"name": "gemini", "targets": [{"provider": "gem", "model": "gemini-x"}]},
                    {"name": "bedrock", "targets": [{"provider": "bed", "model": "anthropic.x"}]},
                ],
            }
        )
        backend = LlmBackend("llm", config, 1 << 20)
        await backend.start()
        try:
            yield server, backend
        finally:
            await backend.close()
            await client.close_session()  # the pool belongs to this test's event loop


async def _call(backend: LlmBackend, path: str, body: dict[str, Any]) -> tuple[Sink, int]:
    """One request through the backend; the peak of Python memory allocated meanwhile."""
    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    ctx = RequestContext("r", "llm", "1", path)
    sink = Sink()
    tracemalloc.start()
    try:
        async with asyncio.timeout(60):
            try:
                await backend(scope, _receiver(orjson.dumps(body)), sink, ctx)
            except Exception as exc:  # errors before the answer are the server's to render
                from crossway.errors import GatewayError

                assert isinstance(exc, GatewayError), exc
                status, _, err_body = backend.render_error(exc, scope, ctx)
                await sink({"type": "http.response.start", "status": status, "headers": []})
                await sink({"type": "http.response.body", "body": err_body})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return sink, peak


STREAM_CASES = {
    # name: (flood mode, client path, request body)
    "chat-passthrough": (
        "openai",
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": MESSAGES, "stream": True},
    ),
    "chat-passthrough-with-usage": (
        "openai",
        "/v1/chat/completions",
        {
            "model": "gpt-4o",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    "responses-passthrough": (
        "responses",
        "/v1/responses",
        {"model": "gpt-4o", "input": "hi", "stream": True},
    ),
    "messages-passthrough": (
        "anthropic",
        "/v1/messages",
        {"model": "claude", "max_tokens": 5, "messages": MESSAGES, "stream": True},
    ),
    "chat-to-anthropic": (
        "anthropic",
        "/v1/chat/completions",
        {"model": "claude", "messages": MESSAGES, "stream": True},
    ),
    "messages-to-openai": (
        "openai",
        "/v1/messages",
        {"model": "gpt-4o", "max_tokens": 5, "messages": MESSAGES, "stream": True},
    ),
    "chat-to-gemini": (
        "gemini",
        "/v1/chat/completions",
        {"model": "gemini", "messages": MESSAGES, "stream": True},
    ),
    "chat-to-bedrock": (
        "bedrock",
        "/v1/chat/completions",
        {"model": "bedrock", "messages": MESSAGES, "stream": True},
    ),
}


def _stream_error(path: str, sink: Sink) -> dict[str, Any]:
    """The error the client was told about: the last event of its stream, or a JSON error."""
    body = sink.body
    if sink.status != 200:
        data = orjson.loads(body)
        return dict(data["error"])
    last = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    ((name, data),) = parse_sse(last + b"\n\n")
    if path == "/v1/messages":
        assert name == "error" and data["type"] == "error"
        return dict(data["error"])
    if path == "/v1/responses":
        assert name == "error"
        return dict(data)
    return dict(data["error"])


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
async def test_flooded_stream_ends_with_an_error_and_bounded_memory(
    flood: tuple[FloodServer, LlmBackend], case: str
) -> None:
    server, backend = flood
    mode, path, body = STREAM_CASES[case]
    server.mode = mode
    sink, peak = await _call(backend, path, body)
    error = _stream_error(path, sink)
    assert "larger than" in error["message"], error
    if path != "/v1/messages":
        assert error.get("code") == "upstream_event_too_large", error
    # Nothing like the flood was held: the cap plus a copy and the forwarded part at most.
    assert peak < 3 * DEFAULT_MAX_EVENT_BYTES, peak
    async with asyncio.timeout(10):
        await server.done.wait()
    assert server.outcome == "cut" and server.sent < FLOOD_LIMIT  # the upstream was closed
    assert sink.messages[-1].get("more_body") is not True  # the client's stream ended


@pytest.mark.parametrize("mode", ["huge-json", "huge-json-length"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_huge_answer_is_a_502_never_read_whole(
    flood: tuple[FloodServer, LlmBackend], mode: str, path: str
) -> None:
    server, backend = flood
    server.mode = mode
    model = "gpt-4o" if path.endswith("completions") else "claude"
    sink, peak = await _call(backend, path, {"model": model, "max_tokens": 5, "messages": MESSAGES})
    assert sink.status == 502
    answer = orjson.loads(sink.body)
    if path == "/v1/messages":
        assert answer["type"] == "error" and answer["error"]["type"] == "api_error"
    else:
        assert answer["error"]["type"] == "upstream_error"
        assert answer["error"]["code"] == "upstream_response_too_large"
    assert peak < DEFAULT_MAX_RESPONSE_BYTES + 4 * 1024 * 1024 < HUGE_BODY, peak
    assert len(server.requests) == 1  # not retried: it would be paid for again
    async with asyncio.timeout(10):
        await server.done.wait()
    assert server.outcome == "cut"


# --- through `crossway serve`, with the official SDKs ----------------------------------------

CONFIG = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    providers:
      flood: {{type: openai, base_url: "{flood}/v1", api_key: k}}
      flood_ant: {{type: anthropic, base_url: "{flood}", api_key: k}}
      good: {{type: openai, base_url: "{good}/v1", api_key: {key}}}
    models:
      - name: flooded
        targets: [{{provider: flood}}]
      - name: flooded-claude
        targets: [{{provider: flood_ant, model: claude-x}}]
      - name: fine
        targets: [{{provider: good, model: gpt-4o}}]
"""


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Any, FloodServer]]:
    loop = MockLoop()
    try:
        flood_server = loop.start(FloodServer())
        good = loop.start(openai_mock())
        config = CONFIG.format(flood=flood_server.url, good=good.url, key=API_KEY)
        with start_gateway(config) as gateway:
            yield gateway, flood_server
    finally:
        loop.close()


def test_sdk_stream_flood_then_the_gateway_still_serves(served: tuple[Any, FloodServer]) -> None:
    gateway, server = served
    server.mode = "openai"
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=60)
    stream = c.chat.completions.create(model="flooded", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.APIError, match="larger than"):
        for _ in stream:
            pass
    answer = c.chat.completions.create(model="fine", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    assert http_status(gateway.admin_url + "/healthz") == 200


def test_sdk_huge_answers_are_502_in_each_format(served: tuple[Any, FloodServer]) -> None:
    gateway, server = served
    server.mode = "huge-json"
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as caught:
        c.chat.completions.create(model="flooded", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_response_too_large"
    a = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0, timeout=60)
    with pytest.raises(anthropic.APIStatusError) as caught_a:
        a.messages.create(model="flooded-claude", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught_a.value.status_code == 502
    assert c.chat.completions.create(model="fine", messages=MESSAGES).choices  # type: ignore[arg-type]
