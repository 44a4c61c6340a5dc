"""MCP's outbound clients never leak credentials or cookies (security issue #7, hole 5).

Each test runs real aiohttp servers on loopback: an upstream that redirects (or announces an
endpoint) to a second origin, and that second origin recording whatever reaches it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from crossway.config.mcp import (
    McpTimeouts,
    OpenApiServerConfig,
    SseServerConfig,
    StreamableHttpServerConfig,
)
from crossway.config.mcp_security import ClientCredentialsConfig, UpstreamCredentialsConfig
from crossway.errors import GatewayError, UpstreamError, UpstreamUnreachable
from crossway.mcp.auth import UpstreamCredentials
from crossway.mcp.openapi import OpenApiUpstream
from crossway.mcp.upstream.base import ClientHello, JsonObject, RequestOptions, UpstreamRpcError
from crossway.mcp.upstream.http import StreamableHttpUpstream
from crossway.mcp.upstream.sse import SseUpstream

SECRET = "sekrit-api-key"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    """What one request carried."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Origin:
    """A running loopback server; `url` uses `localhost` so cookie jars would accept its
    cookies (aiohttp's default jar ignores cookies from IP addresses)."""

    url: str
    seen: list[Recorded] = field(default_factory=list)


@asynccontextmanager
async def serving(handler: Handler | None = None) -> AsyncIterator[Origin]:
    """A server that records every request, then answers with `handler` (default: 404)."""
    origin = Origin("")

    async def record(request: web.Request) -> web.StreamResponse:
        origin.seen.append(
            Recorded(request.method, request.raw_path, dict(request.headers), await request.read())
        )
        if handler is None:
            return web.Response(status=404, text="nothing here")
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    origin.url = f"http://localhost:{port}"
    try:
        yield origin
    finally:
        await runner.cleanup()


def redirect_to(target: Origin, status: int = 307) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": target.url + request.raw_path})

    return handler


def carried_secret(origin: Origin) -> bool:
    return any(SECRET in str(r.headers) or SECRET.encode() in r.body for r in origin.seen)


class _Events:
    async def on_notification(self, server: str, message: JsonObject) -> None:
        return None

    async def on_request(self, server: str, message: JsonObject) -> JsonObject:
        return {"result": {}}

    async def on_closed(self, server: str) -> None:
        return None


HELLO = ClientHello("2025-06-18")
OPTIONS = RequestOptions(timeout=5)


# -- Streamable HTTP ---------------------------------------------------------------------------


def _streamable(url: str) -> StreamableHttpUpstream:
    cfg = StreamableHttpServerConfig.model_validate(
        {
            "type": "streamable_http",
            "url": url,
            "headers": {"x-api-key": SECRET, "authorization": f"Bearer {SECRET}"},
        }
    )
    return StreamableHttpUpstream("remote", cfg, McpTimeouts(connect=3), 1 << 20)


async def test_streamable_http_redirect_never_carries_credentials_elsewhere() -> None:
    async with serving() as other, serving(redirect_to(other)) as server:
        upstream = _streamable(server.url + "/mcp")
        try:
            with pytest.raises(GatewayError):
                await upstream.open_session(HELLO, _Events())
        finally:
            await upstream.close()
        assert server.seen, "the configured server was asked"
        assert other.seen == [], "the redirect was followed to another origin"


async def _mini_mcp(request: web.Request) -> web.StreamResponse:
    """Just enough of a Streamable HTTP server; every answer sets a cookie."""
    if request.method != "POST":
        return web.Response(status=405)
    message = json.loads(await request.read())  # the body is cached: read again
    if "id" not in message:
        response = web.Response(status=202)
    elif message["method"] == "initialize":
        result = {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "mini", "version": "1"},
        }
        response = web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})
    else:
        response = web.json_response(
            {"jsonrpc": "2.0", "id": message["id"], "result": {"tools": []}}
        )
    response.set_cookie("session", "belongs-to-the-first-caller")
    return response


async def test_streamable_http_cookies_are_never_sent_back() -> None:
    async with serving(_mini_mcp) as server:
        upstream = _streamable(server.url + "/mcp")
        try:
            first = await upstream.open_session(HELLO, _Events())
            await first.request("tools/list", None, OPTIONS)
            second = await upstream.open_session(HELLO, _Events())  # another caller
            await second.request("tools/list", None, OPTIONS)
            await first.close()
            await second.close()
        finally:
            await upstream.close()
        posts = [r for r in server.seen if r.method == "POST"]
        assert len(posts) >= 4
        assert all("Cookie" not in r.headers for r in server.seen), "a cookie was sent back"


# -- legacy SSE --------------------------------------------------------------------------------


@asynccontextmanager
async def sse_server(endpoint: Callable[[], str]) -> AsyncIterator[Origin]:
    """A legacy SSE server whose stream announces `endpoint()` and stays open."""
    stop = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(f"event: endpoint\ndata: {endpoint()}\n\n".encode())
            await stop.wait()
            return resp
        return web.Response(status=202)

    try:
        async with serving(handler) as origin:
            yield origin
    finally:
        stop.set()


def _sse(url: str) -> SseUpstream:
    cfg = SseServerConfig.model_validate(
        {"type": "sse", "url": url, "headers": {"x-api-key": SECRET}}
    )
    return SseUpstream("legacy", cfg, McpTimeouts(connect=2), 1 << 20)


async def test_sse_endpoint_on_another_origin_is_refused() -> None:
    async with serving() as other:
        async with sse_server(lambda: other.url + "/messages?session=1") as server:
            upstream = _sse(server.url + "/sse")
            try:
                with pytest.raises(UpstreamUnreachable, match="another origin"):
                    await upstream.open_session(HELLO, _Events())
            finally:
                await upstream.close()
        assert [r.method for r in server.seen] == ["GET"]
        assert other.seen == [], "a message was posted to another origin"


async def test_sse_same_origin_other_port_is_another_origin() -> None:
    # Same host, another port: still another origin (scheme + host + port must match).
    async with serving() as other:
        port = other.url.rsplit(":", 1)[1]
        async with sse_server(lambda: f"//localhost:{port}/messages") as server:
            upstream = _sse(server.url + "/sse")
            try:
                with pytest.raises(UpstreamUnreachable, match="another origin"):
                    await upstream.open_session(HELLO, _Events())
            finally:
                await upstream.close()
        assert other.seen == []


# -- OpenAPI -----------------------------------------------------------------------------------

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Leaks", "version": "1"},
    "paths": {
        "/orgs/{org}/repos/{repo}/issues": {
            "get": {
                "operationId": "listRepoIssues",
                "parameters": [
                    {"name": "org", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "repo", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/issues": {
            "get": {"operationId": "listAllIssues", "responses": {"200": {"description": "ok"}}}
        },
    },
}


async def _json_ok(request: web.Request) -> web.StreamResponse:
    response = web.json_response({"path": request.path, "match": request.raw_path})
    response.set_cookie("session", "belongs-to-the-first-caller")
    return response


async def _openapi(spec: str, **cfg: Any) -> OpenApiUpstream:
    config = OpenApiServerConfig.model_validate({"type": "openapi", "spec": spec, **cfg})
    upstream = OpenApiUpstream("api", config, McpTimeouts(call=5, connect=3))
    await upstream.start()
    return upstream


def _spec_file(tmp_path: Path) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    return str(path)


async def _call(upstream: OpenApiUpstream, name: str, arguments: dict[str, Any]) -> JsonObject:
    session = await upstream.open_session(HELLO, _Events())
    return await session.request("tools/call", {"name": name, "arguments": arguments}, OPTIONS)


async def test_openapi_cookies_are_never_sent_back(tmp_path: Path) -> None:
    async with serving(_json_ok) as api:
        upstream = await _openapi(_spec_file(tmp_path), base_url=api.url)
        try:
            for _ in range(3):
                result = await _call(upstream, "listAllIssues", {})
                assert result["isError"] is False
        finally:
            await upstream.close()
        assert len(api.seen) == 3
        assert all("Cookie" not in r.headers for r in api.seen), "a cookie was sent back"


async def test_openapi_spec_redirect_is_not_followed(tmp_path: Path) -> None:
    async def spec(_: web.Request) -> web.Response:
        return web.json_response(SPEC)

    async with serving(spec) as other, serving(redirect_to(other, 302)) as server:
        upstream = await _openapi(server.url + "/openapi.json", base_url=server.url)
        try:
            with pytest.raises(UpstreamUnreachable, match="302"):
                await upstream.open_session(HELLO, _Events())
        finally:
            await upstream.close()
        assert server.seen and other.seen == []


@pytest.mark.parametrize("values", [("..", ".."), (".", "x"), ("x", "..")])
async def test_openapi_dot_segments_are_refused(tmp_path: Path, values: tuple[str, str]) -> None:
    async with serving(_json_ok) as api:
        upstream = await _openapi(_spec_file(tmp_path), base_url=api.url + "/api")
        try:
            with pytest.raises(UpstreamRpcError) as info:
                await _call(upstream, "listRepoIssues", {"org": values[0], "repo": values[1]})
            assert info.value.code == -32602
        finally:
            await upstream.close()
        assert api.seen == [], "the call reached the API"


async def test_openapi_path_parameters_stay_one_segment(tmp_path: Path) -> None:
    async with serving(_json_ok) as api:
        upstream = await _openapi(_spec_file(tmp_path), base_url=api.url + "/api")
        try:
            for org, repo in [("a.b", "..."), ("../x", "%2e%2e"), ("a/../../issues", "./")]:
                result = await _call(upstream, "listRepoIssues", {"org": org, "repo": repo})
                assert result["isError"] is False, result
        finally:
            await upstream.close()
        paths = [r.path for r in api.seen]
        assert paths == [
            "/api/orgs/a%2Eb/repos/%2E%2E%2E/issues",
            "/api/orgs/%2E%2E%2Fx/repos/%252e%252e/issues",
            "/api/orgs/a%2F%2E%2E%2F%2E%2E%2Fissues/repos/%2E%2F/issues",
        ]


# -- OAuth token endpoint ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
async def test_token_endpoint_redirect_never_carries_the_client_secret(method: str) -> None:
    async def token(_: web.Request) -> web.Response:
        return web.json_response({"access_token": "stolen", "expires_in": 60})

    async with serving(token) as other, serving(redirect_to(other)) as server:
        config = UpstreamCredentialsConfig(
            client_credentials=ClientCredentialsConfig(
                token_url=server.url + "/token",
                client_id="crossway",
                client_secret=SECRET,  # type: ignore[arg-type]
                auth_method=method,  # type: ignore[arg-type]
            )
        )
        credentials = UpstreamCredentials(config)
        try:
            with pytest.raises(UpstreamError, match="307"):
                await credentials.token_headers()
        finally:
            await credentials.close()
        assert server.seen
        assert other.seen == [] and not carried_secret(other)
