"""HTTP hygiene on a real `crossway serve`: path normalisation before routing (no dot-segment
bypass of a guarded route), malformed framing refused with 400, X-Forwarded-* never taken from
an untrusted peer, x-request-id both ways, hop-by-hop headers stripped, per-route body limits.

Requests are written on raw sockets: HTTP clients normalise paths and framing themselves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import free_port, start_gateway

SECRET = "some-long-secret-value"


@dataclass
class Seen:
    """What the test upstream received."""

    path: str
    headers: dict[str, str]
    all_headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Upstream:
    url: str
    seen: list[Seen] = field(default_factory=list)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """An HTTP upstream that records every request (raw path, headers, body)."""
    up = Upstream("")

    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        up.seen.append(
            Seen(
                request.raw_path,
                {k.lower(): v for k, v in request.headers.items()},
                [(k.lower(), v) for k, v in request.headers.items()],
                body,
            )
        )
        if request.path.endswith("/chat/completions"):
            return web.json_response(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "hi"},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )
        resp = web.Response(text="ok")
        # Hop-by-hop headers from the upstream must not reach the client either.
        resp.headers["connection"] = "x-upstream-hop"
        resp.headers["x-upstream-hop"] = "secret"
        resp.headers["keep-alive"] = "timeout=5"
        resp.headers["x-upstream-kept"] = "1"
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    up.url = f"http://127.0.0.1:{port}"
    try:
        yield up
    finally:
        await runner.cleanup()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    header_names: list[str]
    body: bytes

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.body)  # type: ignore[no-any-return]


async def raw_request(port: int, head: bytes, body: bytes = b"") -> Reply:
    """Send bytes exactly as given (the request line and headers up to, not including, the
    blank line; `Connection: close` is added) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    head_part, _, rest = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    names: list[str] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        names.append(name.strip().lower())
        headers[name.strip().lower()] = value.strip()
    return Reply(status, headers, names, rest)


async def get(port: int, path: bytes, *extra: bytes) -> Reply:
    return await raw_request(
        port, b"GET " + path + b" HTTP/1.1\r\nHost: gw.test\r\n" + b"".join(extra)
    )


PATHS_CONFIG = """
routes:
  - name: admin
    match:
      path:
        prefix: /admin
    backend: web
    policies:
      - type: api_key
        keys:
          k: {secret}
  - name: strip
    match:
      path:
        prefix: /strip
    strip_prefix: true
    backend: web
  - name: public
    match:
      path:
        prefix: /public
    backend: web
backends:
  web:
    type: http
    url: {upstream}
"""


async def test_dot_segments_cannot_reach_a_guarded_route(upstream: Upstream) -> None:
    with start_gateway(PATHS_CONFIG.format(upstream=upstream.url, secret=SECRET)) as gw:
        # Each of these is /admin/users after normalisation: the admin route takes it and
        # wants a key; nothing reaches the upstream.
        for path in (
            b"/public/../admin/users",
            b"/public/%2e%2e/admin/users",
            b"/public/%2E%2e/admin/users",
            b"/public/.%2e/admin/users",
            b"/public/./../admin/users",
            b"/public/../../../../admin/users",
            b"/public//..//admin/users",
            b"/public/x/../../admin/users",
        ):
            reply = await get(gw.port, path)
            assert reply.status == 401, (path, reply)
            assert reply.json()["error"]["type"] == "authentication_error"
        assert upstream.seen == []
        # With the key it is served, and the upstream sees the normalised path.
        reply = await get(
            gw.port,
            b"/public/%2e%2e/admin/users?x=1",
            f"Authorization: Bearer {SECRET}\r\n".encode(),
        )
        assert reply.status == 200
        assert upstream.seen[-1].path == "/admin/users?x=1"


async def test_ambiguous_paths_are_refused(upstream: Upstream) -> None:
    with start_gateway(PATHS_CONFIG.format(upstream=upstream.url, secret=SECRET)) as gw:
        for path in (
            b"/public/%2fadmin",
            b"/public/..%2Fadmin/users",
            b"/public/%5c..%5cadmin",
            b"/public\\..\\admin/users",
            b"/public/a%00b",
            b"/public/%c0%ae%c0%ae/admin/users",  # overlong UTF-8 for '.'
            b"/public/%c0%af",  # overlong UTF-8 for '/'
            b"/public/%ff",  # not UTF-8 at all
            b"/public/%zz",  # not a percent-escape
            b"/public/..;/admin/users",  # Tomcat-style path parameter on a dot segment
        ):
            reply = await get(gw.port, path)
            assert reply.status == 400, (path, reply)
            assert reply.json()["error"]["type"] == "invalid_request_error", path
        assert upstream.seen == []


async def test_normalised_path_forwarded_and_decoded_once(upstream: Upstream) -> None:
    with start_gateway(PATHS_CONFIG.format(upstream=upstream.url, secret=SECRET)) as gw:
        assert (await get(gw.port, b"/public//x/./y/../z")).status == 200
        assert upstream.seen[-1].path == "/public/x/z"
        # A literal '%' stays a literal: `%252e` is "%2e" to Crossway and must reach the
        # upstream as `%252e`, never as `%2e` (which it would decode to '.').
        assert (await get(gw.port, b"/public/%252e%252e/admin")).status == 200
        assert upstream.seen[-1].path == "/public/%252e%252e/admin"
        assert (await get(gw.port, b"/strip/%252e%252e/admin")).status == 200
        assert upstream.seen[-1].path == "/%252e%252e/admin"
        assert (await get(gw.port, b"/strip/./a/%2e%2e/b%20c")).status == 200
        assert upstream.seen[-1].path == "/b%20c"
        # A clean path keeps the client's own encoding.
        assert (await get(gw.port, b"/public/a%40b")).status == 200
        assert upstream.seen[-1].path == "/public/a%40b"


FRAMING_CONFIG = """
routes:
  - name: llm
    match:
      path:
        prefix: /v1
    backend: llm
  - name: web
    backend: web
backends:
  llm:
    type: llm
    providers:
      up:
        type: openai_compatible
        base_url: {upstream}/v1
    models:
      - name: m
        targets:
          - provider: up
  web:
    type: http
    url: {upstream}
"""


async def test_malformed_framing_is_a_400_in_the_route_format(upstream: Upstream) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    with start_gateway(FRAMING_CONFIG.format(upstream=upstream.url)) as gw:
        for path in (b"/v1/chat/completions", b"/v1/embeddings", b"/v1/responses", b"/web"):
            for te in (b"chunked", b"gzip, chunked"):
                head = (
                    b"POST " + path + b" HTTP/1.1\r\nHost: gw.test\r\n"
                    b"Content-Type: application/json\r\nTransfer-Encoding: " + te + b"\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                )
                reply = await raw_request(gw.port, head, body)
                assert reply.status == 400, (path, te, reply)
                assert reply.json()["error"]["type"] == "invalid_request_error"
        assert upstream.seen == []
        # A well-formed chunked body still goes through.
        chunked = hex(len(body))[2:].encode() + b"\r\n" + body + b"\r\n0\r\n\r\n"
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw.test\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        )
        reply = await raw_request(gw.port, head, chunked)
        assert reply.status == 200, reply
        assert len(upstream.seen) == 1


HEADERS_CONFIG = """
listen:
  port: {port}
  trusted_proxies: {trusted}
routes:
  - name: small
    match:
      path:
        prefix: /small
    max_body_bytes: 10
    backend: web
  - name: big
    match:
      path:
        prefix: /big
    max_body_bytes: 64
    backend: web
  - name: web
    backend: web
backends:
  web:
    type: http
    url: {upstream}
"""


async def test_spoofed_forwarded_headers_from_an_untrusted_peer_are_replaced(
    upstream: Upstream,
) -> None:
    port = free_port()
    config = HEADERS_CONFIG.format(port=port, upstream=upstream.url, trusted="[]")
    with start_gateway(config, port=port) as gw:
        reply = await get(
            gw.port,
            b"/x",
            b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n",
            b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: bank.example\r\n",
            b"Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n",
        )
        assert reply.status == 200
    seen = upstream.seen[-1]
    assert [v for k, v in seen.all_headers if k == "x-forwarded-for"] == ["127.0.0.1"]
    assert seen.headers["x-forwarded-proto"] == "http"
    assert seen.headers["x-forwarded-host"] == "gw.test"
    assert "forwarded" not in seen.headers and "x-real-ip" not in seen.headers


async def test_forwarded_headers_from_a_trusted_proxy_are_kept(upstream: Upstream) -> None:
    port = free_port()
    config = HEADERS_CONFIG.format(port=port, upstream=upstream.url, trusted="[127.0.0.0/8]")
    with start_gateway(config, port=port) as gw:
        reply = await get(
            gw.port,
            b"/x",
            # 9.9.9.9 was written by the client itself (left of the first untrusted hop).
            b"X-Forwarded-For: 9.9.9.9, 1.2.3.4\r\nX-Forwarded-For: 127.0.0.5\r\n",
            b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: api.example\r\n",
        )
        assert reply.status == 200
    seen = upstream.seen[-1]
    assert seen.headers["x-forwarded-for"] == "1.2.3.4, 127.0.0.5, 127.0.0.1"
    assert seen.headers["x-forwarded-proto"] == "https"
    assert seen.headers["x-forwarded-host"] == "api.example"


async def test_request_id_and_hop_by_hop_headers(upstream: Upstream) -> None:
    port = free_port()
    config = HEADERS_CONFIG.format(port=port, upstream=upstream.url, trusted="[]")
    with start_gateway(config, port=port) as gw:
        reply = await get(
            gw.port,
            b"/x",
            b"Connection: x-client-hop\r\nX-Client-Hop: secret\r\nKeep-Alive: 1\r\n",
            b"TE: trailers\r\nProxy-Connection: keep-alive\r\nX-Client-Kept: 1\r\n",
        )
        assert reply.status == 200
        generated = reply.headers["x-request-id"]
        assert generated
        seen = upstream.seen[-1]
        assert seen.headers["x-request-id"] == generated
        for name in ("x-client-hop", "keep-alive", "te", "proxy-connection"):
            assert name not in seen.headers, name
        assert seen.headers["x-client-kept"] == "1"
        assert "x-upstream-hop" not in reply.headers and "keep-alive" not in reply.headers
        assert reply.headers["x-upstream-kept"] == "1"

        # A well-formed id from the client is kept, both ways.
        reply = await get(gw.port, b"/x", b"X-Request-Id: trace-42.a_B\r\n")
        assert reply.headers["x-request-id"] == "trace-42.a_B"
        assert upstream.seen[-1].headers["x-request-id"] == "trace-42.a_B"
        # A malformed one is replaced (and never echoed).
        for bad in (b"a b", b"x" * 129, b"<script>"):
            reply = await get(gw.port, b"/x", b"X-Request-Id: " + bad + b"\r\n")
            assert reply.headers["x-request-id"] not in ("", bad.decode())
            assert reply.header_names.count("x-request-id") == 1
            assert upstream.seen[-1].headers["x-request-id"] == reply.headers["x-request-id"]
        # Error responses made by Crossway carry it too.
        reply = await get(gw.port, b"/x/%2f")
        assert reply.status == 400 and reply.headers["x-request-id"]


async def test_per_route_body_limit(upstream: Upstream) -> None:
    port = free_port()
    config = HEADERS_CONFIG.format(port=port, upstream=upstream.url, trusted="[]").replace(
        "  trusted_proxies:", "  max_body_bytes: 32\n  trusted_proxies:"
    )
    with start_gateway(config, port=port) as gw:

        async def post(path: bytes, size: int) -> int:
            head = (
                b"POST " + path + b" HTTP/1.1\r\nHost: gw.test\r\n"
                b"Content-Length: " + str(size).encode() + b"\r\n"
            )
            return (await raw_request(gw.port, head, b"x" * size)).status

        assert await post(b"/small", 10) == 200
        assert await post(b"/small", 11) == 413
        assert await post(b"/other", 32) == 200
        assert await post(b"/other", 33) == 413
        # A route may also allow more than the listener's default.
        assert await post(b"/big", 64) == 200
        assert await post(b"/big", 65) == 413


def _client(peer: str, xff: list[bytes], trusted: list[str]) -> tuple[str, str | None]:
    from ipaddress import ip_network

    from crossway.server.context import RequestContext
    from crossway.server.forwarded import FORWARDED, set_client

    scope = {"client": (peer, 1234), "headers": [(b"x-forwarded-for", v) for v in xff]}
    ctx = RequestContext("r", "b", "id", "/")
    set_client(scope, ctx, [ip_network(t) for t in trusted])
    forwarded = ctx.attrs.get(FORWARDED)
    return ctx.client_ip, forwarded.chain if forwarded is not None else None


def test_client_address_rules() -> None:
    # No trusted proxies: the peer, whatever the headers say.
    assert _client("10.0.0.1", [b"1.2.3.4"], []) == ("10.0.0.1", None)
    # An untrusted peer's headers are ignored.
    assert _client("8.8.8.8", [b"1.2.3.4"], ["10.0.0.0/8"]) == ("8.8.8.8", None)
    # Right-most untrusted hop; what is left of it is dropped.
    assert _client("10.0.0.1", [b"6.6.6.6, 1.2.3.4, 10.0.0.7"], ["10.0.0.0/8"]) == (
        "1.2.3.4",
        "1.2.3.4, 10.0.0.7, 10.0.0.1",
    )
    # Every hop trusted: the left-most one is the client.
    assert _client("10.0.0.1", [b"10.0.0.2"], ["10.0.0.0/8"]) == (
        "10.0.0.2",
        "10.0.0.2, 10.0.0.1",
    )
    # Garbage stops the walk: nothing left of it is believed.
    assert _client("10.0.0.1", [b"1.2.3.4, nonsense"], ["10.0.0.0/8"]) == (
        "10.0.0.1",
        "10.0.0.1",
    )
    # Ports and brackets; IPv6; IPv4-mapped peers.
    assert _client("10.0.0.1", [b"[2001:db8::1]:443"], ["10.0.0.0/8"])[0] == "2001:db8::1"
    assert _client("10.0.0.1", [b"1.2.3.4:5678"], ["10.0.0.0/8"])[0] == "1.2.3.4"
    assert _client("::ffff:10.0.0.1", [b"1.2.3.4"], ["10.0.0.0/8"])[0] == "1.2.3.4"
    assert _client("fd00::1", [b"1.2.3.4"], ["fd00::/8"])[0] == "1.2.3.4"


async def test_request_id_reaches_the_llm_upstream(upstream: Upstream) -> None:
    config = f"""
routes:
  - {{name: llm, backend: llm, match: {{path: {{prefix: /v1}}}}}}
backends:
  llm:
    type: llm
    providers:
      up: {{type: openai_compatible, base_url: "{upstream.url}/v1"}}
"""
    with start_gateway(config) as gw:
        body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        async with aiohttp.ClientSession() as http:
            async with http.post(
                gw.url + "/v1/chat/completions",
                data=body,
                headers={"content-type": "application/json", "x-request-id": "llm-trace-7"},
            ) as resp:
                assert resp.status == 200
                assert resp.headers["x-request-id"] == "llm-trace-7"
            async with http.post(
                gw.url + "/v1/chat/completions",
                data=body,
                headers={"content-type": "application/json"},
            ) as resp:
                generated = resp.headers["x-request-id"]
    assert [s.headers["x-request-id"] for s in upstream.seen] == ["llm-trace-7", generated]
