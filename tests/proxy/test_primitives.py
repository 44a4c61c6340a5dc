"""The one copy of each primitive the LLM, MCP and A2A paths share: the SSE parser
(`crossway.proxy.sse`), the request-body reader and the header helper (`crossway.server.asgi`).

The parser must give the same events however the bytes are cut (one byte at a time included),
with every line end, comments, multi-line data, `id` and `retry`, and must refuse an event past
its cap without holding more than the cap. The body reader has one disconnect rule: a client
that leaves (or a body the server reports cut short) mid-body ends the request with a 400 in
the route's format and nothing reaches the upstream; oversize is 413. The last test drives a
real gateway with truncated bodies on the LLM, MCP and plain HTTP routes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from crossway.errors import BadRequest, PayloadTooLarge
from crossway.proxy.sse import EventTooLarge, SSEEvent, SSEParser, iter_events
from crossway.server.asgi import header, header_text, read_body
from crossway.types import Message
from tests.helpers import Gateway, start_gateway, wait_for
from tests.security.support import BACKENDS, Servers, mcp_session, tool_call

# -- the SSE parser -------------------------------------------------------------------------------

STREAM = (
    b": a comment, then a named event\n"
    b"event: first\n"
    b"data: one\n"
    b"\n"
    b"data: multi\n"
    b"data:line\n"
    b"data\n"
    b"\n"
    b"id: 7\n"
    b"retry: 1500\n"
    b"event: with-id\n"
    b"data:  two spaces keep one\n"
    b"\n"
    b"id: 8\n"
    b"\n"
    b": only a comment\n"
    b"\n"
    b'data: {"json": true}\n'
    b"\n"
    b"data: last, no blank line"
)
PAIRS = [
    (b"first", b"one"),
    (b"message", b"multi\nline\n"),
    (b"with-id", b" two spaces keep one"),
    (b"message", b'{"json": true}'),
    (b"message", b"last, no blank line"),
]
EVENTS = [
    SSEEvent("first", b"one", None, None),
    SSEEvent("message", b"multi\nline\n", None, None),
    SSEEvent("with-id", b" two spaces keep one", "7", 1500),
    SSEEvent("message", b'{"json": true}', "8", 1500),  # the id-only event still set the id
    SSEEvent("message", b"last, no blank line", "8", 1500),
]
LINE_ENDS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def _with_line_end(stream: bytes, end: bytes) -> bytes:
    return stream.replace(b"\n", end)


def _pairs(chunks: list[bytes], limit: int = 1 << 20) -> list[tuple[bytes, bytes]]:
    parser = SSEParser(limit)
    out: list[tuple[bytes, bytes]] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out + parser.close()


def _events(chunks: list[bytes], limit: int = 1 << 20) -> list[SSEEvent]:
    parser = SSEParser(limit)
    out: list[SSEEvent] = []
    for chunk in chunks:
        out += parser.feed_events(chunk)
    return out + parser.close_events()


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("end", list(LINE_ENDS))
def test_every_line_end_gives_the_same_events(end: str) -> None:
    stream = _with_line_end(STREAM, LINE_ENDS[end])
    assert _pairs([stream]) == PAIRS
    assert _events([stream]) == EVENTS


@pytest.mark.parametrize("end", list(LINE_ENDS))
def test_one_byte_at_a_time(end: str) -> None:
    stream = _with_line_end(STREAM, LINE_ENDS[end])
    assert _pairs(_bytewise(stream)) == PAIRS
    assert _events(_bytewise(stream)) == EVENTS


@pytest.mark.parametrize("end", list(LINE_ENDS))
def test_every_cut_in_two(end: str) -> None:
    stream = _with_line_end(STREAM, LINE_ENDS[end])
    for cut in range(len(stream) + 1):
        chunks = [stream[:cut], stream[cut:]]
        assert _pairs(chunks) == PAIRS, cut
        assert _events(chunks) == EVENTS, cut


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    # `\r` ends one chunk and `\n` opens the next: one line end, not a blank line.
    assert _pairs([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [(b"message", b"a\nb")]
    # Two CRs are two line ends: the event ends there.
    assert _pairs([b"data: a\r", b"\rdata: b\r\r"]) == [(b"message", b"a"), (b"message", b"b")]


def test_a_leading_bom_is_dropped_even_when_split() -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    assert _pairs([stream]) == [(b"message", b"x")]
    assert _pairs(_bytewise(stream)) == [(b"message", b"x")]
    # Only at the very start: later it is part of the data.
    assert _pairs([b"data: x\n\n", b"data: \xef\xbb\xbfy\n\n"])[1] == (b"message", b"\xef\xbb\xbfy")


def test_fields_follow_the_grammar() -> None:
    stream = (
        b"event:\ndata: nameless\n\n"  # an empty name is "message"
        b"retry: soon\ndata: a\n\n"  # a retry that is not digits is ignored
        b"id: a\0b\ndata: b\n\n"  # an id with NUL is ignored
        b"id\ndata: c\n\n"  # a bare `id` resets the id
        b"unknown: field\ndata: d\n\n"
        b"data:\n\n"  # empty data is still an event
        b"\n\n\n"  # blank lines alone dispatch nothing
    )
    events = _events([stream])
    assert [(e.event, e.data, e.id, e.retry) for e in events] == [
        ("message", b"nameless", None, None),
        ("message", b"a", None, None),
        ("message", b"b", None, None),
        ("message", b"c", None, None),
        ("message", b"d", None, None),
        ("message", b"", None, None),
    ]


def test_state_is_kept_between_events() -> None:
    parser = SSEParser(1024)
    assert parser.feed(b"id: 41\nretry: 250\ndata: a\n\n") == [(b"message", b"a")]
    assert (parser.last_event_id, parser.retry) == (b"41", 250)
    assert parser.feed(b"data: b\n\n") == [(b"message", b"b")]
    assert (parser.last_event_id, parser.retry) == (b"41", 250)


def test_an_event_that_never_ends_is_refused_at_the_cap() -> None:
    parser = SSEParser(100)
    parser.feed(b"data: ")
    with pytest.raises(EventTooLarge) as caught:
        for _ in range(1000):
            parser.feed(b"x" * 10)
            assert len(parser._held) <= 100  # never holds more than the cap
    assert caught.value.code == "upstream_event_too_large"
    # Line by line too (each chunk has a line end but no blank line).
    parser = SSEParser(100)
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            parser.feed(b"data: x\n")
            assert len(parser._held) <= 100


def test_one_large_chunk_is_refused_without_being_held() -> None:
    parser = SSEParser(100)
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: " + b"x" * 10_000)
    assert not parser._held


@pytest.mark.parametrize("framing", ["whole", "bytewise"])
def test_a_finished_event_past_the_cap_is_refused_too(framing: str) -> None:
    stream = b"data: ok\n\ndata: " + b"x" * 200 + b"\n\n"
    chunks = [stream] if framing == "whole" else _bytewise(stream)
    parser = SSEParser(100)
    with pytest.raises(EventTooLarge):
        for chunk in chunks:
            parser.feed(chunk)
    assert _pairs([stream], limit=300)[1] == (b"message", b"x" * 200)


def test_events_up_to_the_cap_pass() -> None:
    event = b"data: " + b"y" * 94  # exactly 100 bytes before the blank line
    assert _pairs([event + b"\n\n"], limit=100) == [(b"message", b"y" * 94)]
    assert _pairs(_bytewise(event + b"\n\n"), limit=100) == [(b"message", b"y" * 94)]


async def test_iter_events_reads_a_chunk_stream() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in _bytewise(_with_line_end(STREAM, b"\r\n")):
            yield chunk

    assert [event async for event in iter_events(chunks(), 1 << 20)] == EVENTS


# -- the request body reader and the header helper ------------------------------------------------


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


def _receiver(*messages: Message) -> tuple[list[Message], object]:
    queue = list(messages)
    taken: list[Message] = []

    async def receive() -> Message:
        message = queue.pop(0) if queue else {"type": "http.disconnect"}
        taken.append(message)
        return message

    return taken, receive


def _part(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_body_in_one_or_many_messages() -> None:
    _, receive = _receiver(_part(b'{"a":', True), _part(b"", True), _part(b"1}", False))
    assert await read_body(_scope(), receive, 100) == b'{"a":1}'  # type: ignore[arg-type]
    _, receive = _receiver(_part(b"whole", False))
    assert await read_body(_scope(), receive, 5) == b"whole"  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["before_any_body", "mid_body"])
async def test_a_disconnect_before_the_body_ends_is_a_400(where: str) -> None:
    first = [] if where == "before_any_body" else [_part(b'{"complete": "json"}', True)]
    _, receive = _receiver(*first, {"type": "http.disconnect"})
    with pytest.raises(BadRequest) as caught:
        await read_body(_scope(), receive, 1000)  # type: ignore[arg-type]
    assert caught.value.status_code == 400


async def test_a_failing_receive_is_a_400() -> None:
    async def receive() -> Message:
        raise OSError("connection reset")

    with pytest.raises(BadRequest):
        await read_body(_scope(), receive, 1000)  # type: ignore[arg-type]


async def test_oversize_is_413_and_stops_reading() -> None:
    taken, receive = _receiver(*[_part(b"x" * 40, True) for _ in range(10)], _part(b"", False))
    with pytest.raises(PayloadTooLarge) as caught:
        await read_body(_scope(), receive, 100)  # type: ignore[arg-type]
    assert caught.value.status_code == 413
    assert len(taken) == 3  # the third part crossed the limit: nothing more was read
    # A declared length over the limit is refused before anything is read.
    taken, receive = _receiver(_part(b"x", False))
    with pytest.raises(PayloadTooLarge):
        await read_body(_scope((b"content-length", b"101")), receive, 100)  # type: ignore[arg-type]
    assert taken == []


def test_header_helper() -> None:
    scope = _scope((b"host", b"a.test"), (b"x-v", b"caf\xe9"), (b"x-v", b"second"))
    assert header(scope, b"x-v") == b"caf\xe9"  # type: ignore[arg-type]
    assert header_text(scope, b"x-v") == "café"  # type: ignore[arg-type]
    assert header(scope, b"absent") is None  # type: ignore[arg-type]
    assert header_text(scope, b"absent") is None  # type: ignore[arg-type]


# -- a real gateway: truncated bodies never reach the upstream -----------------------------------

LIMIT = 4096
CONFIG = (
    """
routes:
  - {name: llm, match: {path: {prefix: /v1}}, backend: llm, max_body_bytes: @LIMIT@}
  - {name: mcp, match: {path: {prefix: /mcp}}, backend: tools, max_body_bytes: @LIMIT@}
  - {name: api, match: {path: {prefix: /api}}, backend: web, max_body_bytes: @LIMIT@}
""".replace("@LIMIT@", str(LIMIT))
    + BACKENDS.format(upstream="@UP@", mcp="@MCP@")
)

PATHS = {"llm": b"/v1/chat/completions", "mcp": b"/mcp", "api": b"/api/things"}
_ids = itertools.count(1)


@dataclass
class Target:
    servers: Servers
    gateway: Gateway
    session: str


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    servers = Servers.start()
    try:
        config = CONFIG.replace("@UP@", servers.upstream.url).replace("@MCP@", servers.mcp.url)
        with start_gateway(config) as gateway:
            session = asyncio.run(mcp_session(gateway.url + "/mcp", {}))
            yield Target(servers, gateway, session)
    finally:
        servers.stop()


def _requests_on(gateway: Gateway, route: str) -> dict[str, float]:
    with urllib.request.urlopen(gateway.admin_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = rf'crossway_requests_total\{{route="{route}",status="(\d+)"\}} (\S+)'
    return {status: float(value) for status, value in re.findall(pattern, text)}


def _body(route: str, marker: str) -> bytes:
    if route == "mcp":
        return json.dumps(tool_call("alpha_add", {"a": 1, "b": 2, "note": marker})).encode()
    message = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": marker}]}
    return json.dumps(message).encode()


def _headers(target: Target, route: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if route == "mcp":
        headers |= {"mcp-protocol-version": "2025-06-18", "mcp-session-id": target.session}
    return headers


async def _send_then_leave(port: int, head: bytes, body: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b"\r\n\r\n" + body)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("route", list(PATHS))
@pytest.mark.parametrize("framing", ["content_length", "chunked"])
def test_a_client_leaving_mid_body_reaches_no_upstream(
    target: Target, route: str, framing: str
) -> None:
    """The body sent so far is complete JSON (the MCP transport used to hand exactly that on),
    but the request said more was coming: the request ends at the gateway."""
    marker = f"left-mid-body-{next(_ids)}"
    body = _body(route, marker)
    lines = [
        b"POST " + PATHS[route] + b" HTTP/1.1",
        b"host: gw.test",
        b"content-type: application/json",
        b"accept: application/json, text/event-stream",
    ]
    if route == "mcp":
        lines += [
            b"mcp-protocol-version: 2025-06-18",
            b"mcp-session-id: " + target.session.encode(),
        ]
    if framing == "chunked":
        lines.append(b"transfer-encoding: chunked")
        sent = b"%x\r\n%s\r\n" % (len(body), body)  # no last chunk
    else:
        lines.append(b"content-length: %d" % (len(body) + 100))
        sent = body
    gateway = target.gateway
    before = sum(_requests_on(gateway, route).values())
    asyncio.run(_send_then_leave(gateway.port, b"\r\n".join(lines), sent))
    wait_for(
        lambda: sum(_requests_on(gateway, route).values()) > before,
        what="the gateway to finish the request",
    )
    servers = target.servers
    if route == "mcp":
        assert not servers.mcp.saw_marker(marker)
    else:
        assert not any(marker.encode() in seen.body for seen in list(servers.upstream.seen))
    counts = _requests_on(gateway, route)
    assert counts.get("400", 0) >= 1, counts
    assert "Traceback" not in gateway.log()


@pytest.mark.parametrize("route", list(PATHS))
async def test_a_refused_body_closes_the_connection(target: Target, route: str) -> None:
    """A 413 is sent before the body is read: the answer says `Connection: close`, so a pooled
    client opens a new connection for its next request instead of losing it on this one
    (before, about one in two next requests failed with "server disconnected")."""
    url = target.gateway.url + PATHS[route].decode()
    headers = _headers(target, route)
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            big = _body(route, "x" * (4 * LIMIT))
            async with http.post(url, data=big, headers=headers) as resp:
                await resp.read()
                assert resp.status == 413
                assert resp.headers.get("connection", "").lower() == "close"
                error = await resp.json(content_type=None)
                assert "error" in error
                if route == "mcp":
                    assert error["error"]["code"] == -32005 and error["jsonrpc"] == "2.0"
                else:
                    assert error["error"]["type"] == "request_too_large"
            async with http.post(url, data=_body(route, "small"), headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status


async def test_a_declared_body_in_hand_is_not_waited_on() -> None:
    """granian sends the whole body, then an empty last message: with `Content-Length` met by
    the first message, the reader returns without a second `receive()`."""
    taken, receive = _receiver(_part(b"abc", True), _part(b"", False))
    scope = _scope((b"content-length", b"3"))
    assert await read_body(scope, receive, 100) == b"abc"  # type: ignore[arg-type]
    assert len(taken) == 1
