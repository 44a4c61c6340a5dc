"""Crossway as an OAuth protected resource (RFC 9728) and per-upstream credentials."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from crossway.config.mcp_security import JwtConfig, McpAuthConfig, UpstreamCredentialsConfig
from crossway.errors import Forbidden, GatewayError, Unauthenticated, UpstreamError
from crossway.mcp.auth import BEARER_ATTR, ProtectedResource, UpstreamCredentials
from crossway.server.backend import render_json_error
from crossway.server.context import RequestContext
from crossway.types import Message

AS = "https://auth.test"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWK = {**jwt.get_algorithm_by_name("RS256").to_jwk(KEY.public_key(), as_dict=True), "kid": "k1"}


def _token(**claims: Any) -> str:
    body = {"iss": AS, "aud": "http://gw.test/mcp", "sub": "alice", "exp": int(time.time()) + 60}
    body.update(claims)
    return jwt.encode(body, KEY, algorithm="RS256", headers={"kid": "k1"})


def _scope(
    path: str, method: str = "POST", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    raw = [(b"host", b"gw.test")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "method": method, "path": path, "scheme": "http", "headers": raw}


def _gate(**overrides: Any) -> ProtectedResource:
    config = {
        "authorization_servers": [AS],
        "jwt": JwtConfig(jwks={"keys": [JWK]}, issuer=AS, audiences=["http://gw.test/mcp"]),
        "scopes_supported": ["mcp:tools"],
        **overrides,
    }
    return ProtectedResource(McpAuthConfig(**config))


async def _run(
    gate: ProtectedResource, scope: dict[str, Any]
) -> tuple[bool, list[Message], RequestContext]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    ctx = RequestContext("r", "b", "1", scope["path"])
    answered = await gate(scope, receive, send, ctx)
    return answered, sent, ctx


@pytest.mark.parametrize(
    "path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]
)
async def test_metadata_documents(path: str) -> None:
    answered, sent, _ = await _run(_gate(resource_name="Tools"), _scope(path, "GET"))
    assert answered and sent[0]["status"] == 200
    document = orjson.loads(sent[1]["body"])
    assert document == {
        "resource": "http://gw.test/mcp",
        "authorization_servers": [AS],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["mcp:tools"],
        "resource_signing_alg_values_supported": list(JwtConfig(secret="x").algorithms),
        "resource_name": "Tools",
    }


async def test_configured_resource_is_used() -> None:
    gate = _gate(resource="https://public.example/tools/mcp")
    _, sent, _ = await _run(gate, _scope("/.well-known/oauth-protected-resource/tools/mcp", "GET"))
    assert orjson.loads(sent[1]["body"])["resource"] == "https://public.example/tools/mcp"
    with pytest.raises(Unauthenticated) as info:
        await _run(gate, _scope("/mcp"))
    assert (
        'resource_metadata="https://public.example/.well-known/oauth-protected-resource/tools/mcp"'
        in info.value.headers["www-authenticate"]
    )


async def test_missing_token_gets_401_with_resource_metadata() -> None:
    with pytest.raises(Unauthenticated) as info:
        await _run(_gate(), _scope("/mcp"))
    status, headers, _ = render_json_error(info.value)
    assert status == 401
    challenge = dict(headers)[b"www-authenticate"].decode()
    assert (
        challenge
        == 'Bearer resource_metadata="http://gw.test/.well-known/oauth-protected-resource/mcp", scope="mcp:tools"'
    )


async def test_bad_token_gets_invalid_token() -> None:
    for token in ("garbage", _token(exp=int(time.time()) - 3600), _token(aud="http://other/mcp")):
        with pytest.raises(Unauthenticated) as info:
            await _run(_gate(), _scope("/mcp", headers={"authorization": f"Bearer {token}"}))
        assert 'error="invalid_token"' in info.value.headers["www-authenticate"]
        assert "resource_metadata=" in info.value.headers["www-authenticate"]


async def test_valid_token_sets_identity() -> None:
    token = _token(groups=["eng"])
    answered, sent, ctx = await _run(
        _gate(), _scope("/mcp", headers={"authorization": f"Bearer {token}"})
    )
    assert not answered and not sent
    assert ctx.identity is not None and ctx.identity["sub"] == "alice"
    assert ctx.attrs[BEARER_ATTR] == token


async def test_required_scopes() -> None:
    gate = _gate(required_scopes=["mcp:tools"])
    with pytest.raises(Forbidden) as info:
        await _run(
            gate, _scope("/mcp", headers={"authorization": f"Bearer {_token(scope='other')}"})
        )
    assert 'error="insufficient_scope"' in info.value.headers["www-authenticate"]
    answered, _, ctx = await _run(
        gate, _scope("/mcp", headers={"authorization": f"Bearer {_token(scope='a mcp:tools')}"})
    )
    assert not answered and ctx.identity is not None


async def test_metadata_is_read_only() -> None:
    with pytest.raises(GatewayError) as info:
        await _run(_gate(), _scope("/.well-known/oauth-protected-resource", "POST"))
    assert info.value.status_code == 405


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


@pytest.mark.parametrize(
    "value",
    ["Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "bearer", "Token abc"],
)
async def test_malformed_authorization_is_a_missing_token(value: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        await _run(_gate(), _scope("/mcp", headers={"authorization": value}))
    assert "error=" not in info.value.headers["www-authenticate"]


async def test_oversized_or_garbage_tokens_are_invalid() -> None:
    for token in ("x" * 100_000, "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.", "\u00e9\u00e9\u00e9"):
        with pytest.raises(Unauthenticated) as info:
            await _run(_gate(), _scope("/mcp", headers={"authorization": f"Bearer {token}"}))
        assert 'error="invalid_token"' in info.value.headers["www-authenticate"]
