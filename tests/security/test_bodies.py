"""Oversized and malformed bodies on LLM, MCP and plain HTTP routes (with a valid key, so the
body is what is judged): over the route's limit -> 413, invalid JSON -> 400, ambiguous framing
(`Transfer-Encoding` with `Content-Length`, two lengths, a bad chunk) -> 400, each in the
route's own format, and none of them handed upstream. Sent on raw sockets."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import start_gateway
from tests.security.support import (
    BACKENDS,
    Answer,
    Servers,
    assert_openai_error,
    assert_rpc_error,
    mcp_session,
    raw,
    tool_call,
)

KEY = "sk-bodies-0c8e2a6f4b1d9e37"
LIMIT = 4096

CONFIG = """
routes:
  - name: llm
    match: {path: {prefix: /v1}}
    backend: llm
    max_body_bytes: @LIMIT@
    policies: [{type: api_key, keys: {ops: '@KEY@'}}]
  - name: mcp
    match: {path: {prefix: /mcp}}
    backend: tools
    max_body_bytes: @LIMIT@
    policies: [{type: api_key, keys: {ops: '@KEY@'}}]
  - name: api
    match: {path: {prefix: /api}}
    backend: web
    max_body_bytes: @LIMIT@
    policies: [{type: api_key, keys: {ops: '@KEY@'}}]
""" + BACKENDS.format(upstream="@UP@", mcp="@MCP@")

PATHS = {"llm": b"/v1/chat/completions", "mcp": b"/mcp", "http": b"/api/things"}
ROUTES = list(PATHS)


@dataclass
class Target:
    servers: Servers
    port: int
    session: str


@pytest.fixture(scope="module")
def gw(servers: Servers) -> Iterator[Target]:
    config = (
        CONFIG.replace("@KEY@", KEY)
        .replace("@LIMIT@", str(LIMIT))
        .replace("@UP@", servers.upstream.url)
        .replace("@MCP@", servers.mcp.url)
    )
    with start_gateway(config) as gateway:
        session = asyncio.run(mcp_session(gateway.url + "/mcp", {"x-api-key": KEY}))
        yield Target(servers, gateway.port, session)


_ids = itertools.count(1)


def _marker() -> str:
    return f"body-marker-{next(_ids)}"


def _valid_body(route: str, marker: str, pad: int = 0) -> bytes:
    if route == "mcp":
        message = tool_call("alpha_add", {"a": 1, "b": 2, "note": marker + "x" * pad})
    else:
        message = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": marker + "x" * pad}],
        }
    return json.dumps(message).encode()


def _head(gw: Target, route: str, *framing: bytes) -> bytes:
    lines = [
        b"POST " + PATHS[route] + b" HTTP/1.1",
        b"Host: gw.test",
        b"x-api-key: " + KEY.encode(),
        b"content-type: application/json",
        b"accept: application/json, text/event-stream",
    ]
    if route == "mcp":
        lines += [b"mcp-protocol-version: 2025-06-18", b"mcp-session-id: " + gw.session.encode()]
    return b"\r\n".join(lines + list(framing))


def _reached(gw: Target, route: str, marker: str) -> Callable[[], bool]:
    servers = gw.servers
    if route == "mcp":
        return lambda: servers.mcp.saw_marker(marker)
    return lambda: any(marker.encode() in s.body for s in list(servers.upstream.seen))


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def _assert_error(
    route: str, answer: Answer, status: int, error_type: str, rpc_code: int | None = None
) -> None:
    if route == "mcp":
        assert_rpc_error(answer, status, rpc_code, request_id=7)
    else:
        assert_openai_error(answer, status, error_type)


@pytest.mark.parametrize("route", ROUTES)
async def test_valid_body_passes(gw: Target, route: str) -> None:
    """The control: a body within the limit, framed both ways, reaches the upstream."""
    for chunked in (False, True):
        marker = _marker()
        body = _valid_body(route, marker)
        if chunked:
            answer = await raw(
                gw.port, _head(gw, route, b"transfer-encoding: chunked"), _chunked(body)
            )
        else:
            answer = await raw(gw.port, _head(gw, route, b"content-length: %d" % len(body)), body)
        assert answer.status == 200, answer
        assert _reached(gw, route, marker)()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("framing", ["content_length", "chunked"])
async def test_oversized_body_is_413(gw: Target, route: str, framing: str) -> None:
    marker = _marker()
    body = _valid_body(route, marker, pad=LIMIT + 1)
    if framing == "chunked":
        answer = await raw(gw.port, _head(gw, route, b"transfer-encoding: chunked"), _chunked(body))
    else:
        answer = await raw(gw.port, _head(gw, route, b"content-length: %d" % len(body)), body)
    if route == "mcp":
        assert_rpc_error(answer, 413, request_id=None)
    else:
        assert_openai_error(answer, 413, "request_too_large")
    assert not _reached(gw, route, marker)()


async def test_oversized_declared_length_is_refused_unread(gw: Target) -> None:
    """A Content-Length over the limit is refused from the header: no need to send the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(_head(gw, "llm", b"content-length: %d" % (100 * LIMIT)) + b"\r\n\r\n" + b"{")
    await writer.drain()
    data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert data.split(b" ")[1] == b"413", data


INVALID_JSON = {
    "not_json": b"this is not json",
    "truncated": b'{"model": "gpt-4o-mini", "messages": [',
    "bad_utf8": b'{"model": "gpt-4o-mini\xff\xfe", "messages": []}',
    "trailing_garbage": b'{"model": "gpt-4o-mini", "messages": []} xyz',
    "nan": b'{"model": "gpt-4o-mini", "messages": [], "temperature": NaN}',
}


@pytest.mark.parametrize("route", ["llm", "mcp"])
@pytest.mark.parametrize("case", list(INVALID_JSON))
async def test_invalid_json_is_400(gw: Target, route: str, case: str) -> None:
    body = INVALID_JSON[case]
    before = gw.servers.upstream.count(), len(gw.servers.mcp.tool_calls())
    answer = await raw(gw.port, _head(gw, route, b"content-length: %d" % len(body)), body)
    if route == "mcp":
        assert_rpc_error(answer, 400, -32700, request_id=None)
    else:
        assert_openai_error(answer, 400, "invalid_request_error")
    assert (gw.servers.upstream.count(), len(gw.servers.mcp.tool_calls())) == before


@pytest.mark.parametrize(
    ("route", "body", "rpc_code"),
    [
        ("llm", b"[1, 2]", None),
        ("llm", b'"gpt-4o-mini"', None),
        ("llm", b"null", None),
        ("llm", b'{"model": 42, "messages": []}', None),
        ("mcp", b"42", -32600),
        ("mcp", b'{"jsonrpc": "2.0", "id": 7}', -32600),
        ("mcp", b'{"jsonrpc": "1.0", "id": 7, "method": "tools/call"}', -32600),
    ],
    ids=[
        "llm_list",
        "llm_string",
        "llm_null",
        "llm_model_number",
        "mcp_number",
        "mcp_no_method",
        "mcp_bad_version",
    ],
)
async def test_json_of_the_wrong_shape_is_400(
    gw: Target, route: str, body: bytes, rpc_code: int | None
) -> None:
    before = gw.servers.upstream.count(), len(gw.servers.mcp.tool_calls())
    answer = await raw(gw.port, _head(gw, route, b"content-length: %d" % len(body)), body)
    if route == "mcp":
        assert answer.status == 400, answer
        error = assert_rpc_error(answer, 400, rpc_code, request_id=7)
        assert error
    else:
        assert_openai_error(answer, 400, "invalid_request_error")
    assert (gw.servers.upstream.count(), len(gw.servers.mcp.tool_calls())) == before


def _framings(body: bytes) -> dict[str, tuple[tuple[bytes, ...], bytes]]:
    return {
        "te_and_cl_body_not_chunked": (
            (b"transfer-encoding: chunked", b"content-length: %d" % len(body)),
            body,
        ),
        "cl_and_te_body_not_chunked": (
            (b"content-length: %d" % len(body), b"transfer-encoding: chunked"),
            body,
        ),
        "two_different_lengths": (
            (b"content-length: %d" % len(body), b"content-length: %d" % (len(body) - 5)),
            body,
        ),
        "bad_chunk_size": ((b"transfer-encoding: chunked",), b"zz\r\n" + body + b"\r\n0\r\n\r\n"),
        "negative_length": ((b"content-length: -1",), body),
        "length_not_a_number": ((b"content-length: 12abc",), body),
    }


# granian's HTTP/1 parser answers these itself, with an empty 400, before any application code
# runs (it cannot be rendered in the route's format from the app): they are checked below for
# the status, the process staying up and nothing reaching the upstream.
PARSER_REFUSED = ("two_different_lengths", "negative_length", "length_not_a_number")
FRAMINGS = [f for f in _framings(b"x") if f not in PARSER_REFUSED]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_malformed_framing_is_400_and_never_forwarded(
    gw: Target, route: str, framing: str
) -> None:
    marker = _marker()
    body = _valid_body(route, marker)
    headers, payload = _framings(body)[framing]
    answer = await raw(gw.port, _head(gw, route, *headers), payload)
    assert answer.status == 400, answer
    if route == "mcp":
        assert_rpc_error(answer, 400, request_id=None)
    else:
        assert_openai_error(answer, 400, "invalid_request_error")
    assert not _reached(gw, route, marker)()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("framing", PARSER_REFUSED)
async def test_framing_the_http_parser_refuses_is_400_and_never_forwarded(
    gw: Target, route: str, framing: str
) -> None:
    marker = _marker()
    body = _valid_body(route, marker)
    headers, payload = _framings(body)[framing]
    answer = await raw(gw.port, _head(gw, route, *headers), payload)
    assert answer.status == 400, answer
    assert not _reached(gw, route, marker)()
    # The gateway is unharmed: a well-formed request right after is served.
    good = _valid_body(route, _marker())
    again = await raw(gw.port, _head(gw, route, b"content-length: %d" % len(good)), good)
    assert again.status < 500, again
