"""Per-upstream credentials of MCP servers (OAuth client credentials, token exchange).

(Downstream OAuth — RFC 9728 — is the `jwt` policy's protected-resource mode:
tests/policy/test_protected_resource.py.)"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from crossway.config.mcp_security import UpstreamCredentialsConfig
from crossway.errors import Unauthenticated, UpstreamError
from crossway.mcp.auth import UpstreamCredentials

# -- upstream credentials ------------------------------------------------------------------------


@dataclass
class TokenServer:
    url: str
    requests: list[dict[str, str]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    lifetime: int = 3600
    fail: bool = False


@pytest.fixture
async def token_server() -> AsyncIterator[TokenServer]:
    state: dict[str, TokenServer] = {}

    async def token(request: web.Request) -> web.Response:
        server = state["s"]
        form = dict(await request.post())
        server.requests.append({k: str(v) for k, v in form.items()})
        server.auth.append(request.headers.get("authorization"))
        if server.fail:
            return web.json_response({"error": "invalid_client"}, status=401)
        await asyncio.sleep(0)
        n = len(server.requests)
        if form["grant_type"] == "client_credentials":
            issued = f"cc-{n}"
        else:
            issued = f"xchg-{form['subject_token']}-{n}"
        return web.json_response(
            {"access_token": issued, "token_type": "Bearer", "expires_in": server.lifetime}
        )

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["s"] = TokenServer(url=f"http://127.0.0.1:{port}/token")
    yield state["s"]
    await runner.cleanup()


async def test_static_headers_only() -> None:
    from pydantic import SecretStr

    creds = UpstreamCredentials(None, {"X-Api-Key": SecretStr("k1"), "X-Team": "a"})
    assert await creds.headers("caller-token") == {"X-Api-Key": "k1", "X-Team": "a"}
    assert not creds.dynamic


async def test_client_credentials_token_is_cached_and_renewed(token_server: TokenServer) -> None:
    config = UpstreamCredentialsConfig.model_validate(
        {
            "client_credentials": {
                "token_url": token_server.url,
                "client_id": "crossway",
                "client_secret": "s3cret",
                "scopes": ["read", "write"],
                "resource": "http://upstream.test/mcp",
            },
            "refresh_margin": 30,
        }
    )
    creds = UpstreamCredentials(config, {"X-Static": "1"})
    results = await asyncio.gather(*(creds.headers("caller") for _ in range(10)))
    assert all(r == {"X-Static": "1", "Authorization": "Bearer cc-1"} for r in results)
    assert len(token_server.requests) == 1
    request = token_server.requests[0]
    assert request == {
        "grant_type": "client_credentials",
        "scope": "read write",
        "resource": "http://upstream.test/mcp",
    }
    assert token_server.auth[0] == "Basic " + base64.b64encode(b"crossway:s3cret").decode()
    # The caller's token went nowhere near the token endpoint.
    assert "caller" not in str(token_server.requests)

    # A token about to expire (within the refresh margin) is renewed.
    token_server.lifetime = 10
    creds._token = None
    assert (await creds.headers())["Authorization"] == "Bearer cc-2"
    assert (await creds.headers())["Authorization"] == "Bearer cc-3"
    await creds.close()


async def test_token_exchange_per_caller(token_server: TokenServer) -> None:
    config = UpstreamCredentialsConfig.model_validate(
        {
            "token_exchange": {
                "token_url": token_server.url,
                "client_id": "crossway",
                "client_secret": "x",
                "audience": "upstream",
            }
        }
    )
    creds = UpstreamCredentials(config)
    assert creds.needs_caller_token
    a1 = await creds.headers("alice-token")
    a2 = await creds.headers("alice-token")
    b1 = await creds.headers("bob-token")
    assert a1 == a2 == {"Authorization": "Bearer xchg-alice-token-1"}
    assert b1 == {"Authorization": "Bearer xchg-bob-token-2"}
    first = token_server.requests[0]
    assert first["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert first["subject_token"] == "alice-token"
    assert first["subject_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert first["audience"] == "upstream"
    with pytest.raises(Unauthenticated):
        await creds.headers(None)
    await creds.close()


async def test_token_endpoint_failure_is_an_upstream_error(token_server: TokenServer) -> None:
    token_server.fail = True
    config = UpstreamCredentialsConfig.model_validate(
        {
            "client_credentials": {
                "token_url": token_server.url,
                "client_id": "c",
                "client_secret": "s",
                "auth_method": "client_secret_post",
            }
        }
    )
    creds = UpstreamCredentials(config)
    with pytest.raises(UpstreamError, match="invalid_client"):
        await creds.headers()
    assert token_server.requests[0]["client_id"] == "c"
    await creds.close()
