"""The `jwt` policy as an OAuth protected resource (RFC 9728), as MCP requires."""

from __future__ import annotations

import time
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from crossway.config.policy import DEFAULT_JWT_ALGORITHMS, JwtPolicyConfig
from crossway.errors import Forbidden, GatewayError, Unauthenticated
from crossway.policy.jwt_policy import BEARER_ATTR, JwtPolicy
from crossway.policy.protected_resource import MetadataBackend
from crossway.server.backend import render_json_error
from crossway.server.context import RequestContext
from crossway.types import Message

AS = "https://auth.test"
RESOURCE = "http://gw.test/mcp"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWK = {**jwt.get_algorithm_by_name("RS256").to_jwk(KEY.public_key(), as_dict=True), "kid": "k1"}


def _token(**claims: Any) -> str:
    body = {"iss": AS, "aud": RESOURCE, "sub": "alice", "exp": int(time.time()) + 60}
    body.update(claims)
    return jwt.encode(body, KEY, algorithm="RS256", headers={"kid": "k1"})


def _scope(
    path: str, method: str = "POST", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    raw = [(b"host", b"evil.test")]  # the Host header never shapes the resource URI
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "method": method, "path": path, "scheme": "http", "headers": raw}


def _gate(resource: str = RESOURCE, **overrides: Any) -> JwtPolicy:
    protected = {
        "resource": resource,
        "authorization_servers": [AS],
        "scopes_supported": ["mcp:tools"],
    }
    protected.update({k: overrides.pop(k) for k in list(overrides) if k.startswith("resource_")})
    config = {
        "type": "jwt",
        "jwks": {"keys": [JWK]},
        "issuer": AS,
        "protected_resource": protected,
        **overrides,
    }
    return JwtPolicy(JwtPolicyConfig.model_validate(config))


async def _run(gate: JwtPolicy, scope: dict[str, Any]) -> RequestContext:
    ctx = RequestContext("r", "b", "1", scope["path"])
    assert await gate.on_request(scope, ctx) is None
    return ctx


async def _metadata(gate: JwtPolicy, method: str = "GET") -> list[Message]:
    assert gate.resource is not None
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope = _scope(gate.resource.metadata_path, method)
    await MetadataBackend(gate.resource)(scope, receive, send, RequestContext("m", "m", "1", "/"))
    return sent


async def test_metadata_document() -> None:
    gate = _gate(resource_name="Tools")
    assert gate.resource is not None
    assert gate.resource.metadata_path == "/.well-known/oauth-protected-resource/mcp"
    sent = await _metadata(gate)
    assert sent[0]["status"] == 200
    document = orjson.loads(sent[1]["body"])
    assert document == {
        "resource": RESOURCE,
        "authorization_servers": [AS],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["mcp:tools"],
        "resource_signing_alg_values_supported": list(DEFAULT_JWT_ALGORITHMS),
        "resource_name": "Tools",
    }


async def test_configured_resource_is_used_never_the_host_header() -> None:
    gate = _gate(resource="https://public.example/tools/mcp")
    assert gate.resource is not None
    assert gate.resource.metadata_path == "/.well-known/oauth-protected-resource/tools/mcp"
    with pytest.raises(Unauthenticated) as info:
        await _run(gate, _scope("/mcp"))
    challenge = info.value.headers["www-authenticate"]
    assert (
        'resource_metadata="https://public.example/.well-known/oauth-protected-resource/tools/mcp"'
        in challenge
    )
    assert "evil.test" not in challenge


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


async def test_the_resource_is_a_required_audience() -> None:
    """Hole 6: without `audiences`, the protected resource's URI is the audience."""
    with pytest.raises(Unauthenticated, match="audience"):
        await _run(_gate(), _scope("/mcp", headers={"authorization": f"Bearer {_token(aud='x')}"}))
    ctx = await _run(_gate(), _scope("/mcp", headers={"authorization": f"Bearer {_token()}"}))
    assert ctx.jwt is not None and ctx.jwt["aud"] == RESOURCE


async def test_valid_token_sets_identity_and_verified_claims() -> None:
    token = _token(groups=["eng"])
    ctx = await _run(_gate(), _scope("/mcp", headers={"authorization": f"Bearer {token}"}))
    assert ctx.identity == {"sub": "alice", "method": "jwt", "iss": AS}
    assert ctx.jwt is not None and ctx.jwt["groups"] == ["eng"]
    assert ctx.attrs[BEARER_ATTR] == token


async def test_required_scopes() -> None:
    gate = _gate(required_scopes=["mcp:tools"])
    with pytest.raises(Forbidden) as info:
        await _run(
            gate, _scope("/mcp", headers={"authorization": f"Bearer {_token(scope='other')}"})
        )
    assert 'error="insufficient_scope"' in info.value.headers["www-authenticate"]
    ctx = await _run(
        gate, _scope("/mcp", headers={"authorization": f"Bearer {_token(scope='a mcp:tools')}"})
    )
    assert ctx.identity is not None


async def test_metadata_is_read_only() -> None:
    with pytest.raises(GatewayError) as info:
        await _metadata(_gate(), "POST")
    assert info.value.status_code == 405


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


def test_a_resource_uri_is_never_taken_from_the_host_header() -> None:
    """Hole 6: with `resource` unset, the old MCP `auth:` built the resource URI (the audience
    and the metadata URL) from the client's `Host` header; now it must be configured."""
    from pydantic import ValidationError

    from crossway.config.mcp import McpBackendConfig

    backend = {
        "type": "mcp",
        "servers": {"s": {"type": "streamable_http", "url": "http://127.0.0.1:1/mcp"}},
        "auth": {"authorization_servers": [AS], "jwt": {"jwks": {"keys": [JWK]}, "issuer": AS}},
    }
    with pytest.raises(ValidationError, match=r"auth\.resource is required"):
        McpBackendConfig.model_validate(backend)
    backend["auth"]["resource"] = RESOURCE  # type: ignore[index]
    migrated = McpBackendConfig.model_validate(backend)
    assert migrated.auth is None and migrated.policies[0].type == "jwt"
    with pytest.raises(ValidationError, match="protected_resource"):
        JwtPolicyConfig.model_validate(
            {
                "type": "jwt",
                "jwks": {"keys": [JWK]},
                "protected_resource": {"authorization_servers": [AS]},
            }
        )
