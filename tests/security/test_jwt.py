"""Forged, stale and misdirected JWTs against LLM, MCP and plain HTTP routes behind the `jwt`
policy (keys from a real JWKS endpoint, RSA and EC): each is refused with 401 in the route's
own format, and the upstream never sees the request. Tokens beyond their scope get 403; a key
dropped from the JWKS stops working while its successor works."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import free_port, start_gateway
from tests.security.support import (
    AUDIENCE,
    BACKENDS,
    ISSUER,
    Answer,
    Servers,
    alg_none_token,
    assert_anthropic_error,
    assert_challenge,
    assert_openai_error,
    assert_rpc_error,
    hs256_with_public_key,
    mcp_call,
    mcp_session,
    rpc_message,
    send,
    tampered,
    tool_call,
)

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {**CHAT, "max_tokens": 16}


def _jwt_policy(servers: Servers, extra: str = "") -> str:
    return (
        f"{{type: jwt, jwks_url: '{servers.idp.url}', issuer: '{ISSUER}', "
        f"audiences: ['{AUDIENCE}'], jwks_min_refresh: 0{extra}}}"
    )


CONFIG = (
    """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
      - {jwt}
      - type: authorization
        allow: ['llm.model == "gpt-4o-mini"', 'jwt.role == "admin"']
  - name: mcp
    match: {{path: {{prefix: /mcp}}}}
    backend: tools
    policies:
      - {jwt_mcp}
      - type: authorization
        allow: ['mcp.kind != "tool" || mcp.tool.name == "alpha_add" || jwt.role == "admin"']
  - name: api
    match: {{path: {{prefix: /api}}}}
    backend: web
    policies:
      - {jwt}
      - type: authorization
        allow: ['request.method == "GET" || jwt.role == "admin"']
"""
    + BACKENDS
)


@dataclass
class Target:
    """The gateway of this module and a valid MCP session to attack with."""

    servers: Servers
    url: str
    port: int
    session: str

    @property
    def metadata_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/oauth-protected-resource/mcp"


@pytest.fixture(scope="module")
def gw(servers: Servers) -> Iterator[Target]:
    port = free_port()
    resource = (
        f", protected_resource: {{resource: 'http://127.0.0.1:{port}/mcp', "
        f"authorization_servers: ['{ISSUER}']}}"
    )
    config = CONFIG.format(
        jwt=_jwt_policy(servers),
        jwt_mcp=_jwt_policy(servers, resource),
        upstream=servers.upstream.url,
        mcp=servers.mcp.url,
    )
    with start_gateway(config, port=port) as gateway:
        valid = {"authorization": "Bearer " + servers.idp.token()}
        session = asyncio.run(mcp_session(gateway.url + "/mcp", valid))
        yield Target(servers, gateway.url, port, session)


_markers = itertools.count(1000)


def _marker() -> str:
    return f"marker-{next(_markers)}-{uuid.uuid4().hex[:8]}"


# -- forged and stale tokens ------------------------------------------------------------------


def _forged(servers: Servers) -> dict[str, Callable[[], str]]:
    idp = servers.idp
    return {
        "alg_none": lambda: alg_none_token(role="admin"),
        "alg_none_no_kid": lambda: alg_none_token(kid="", role="admin"),
        "hs256_with_rsa_public_key": lambda: hs256_with_public_key(idp.public_pem("rsa-1")),
        "expired": lambda: idp.token(exp=_now() - 600, iat=_now() - 900),
        "not_yet_valid": lambda: idp.token(nbf=_now() + 600),
        "wrong_issuer": lambda: idp.token(iss="https://evil.example"),
        "no_issuer": lambda: idp.token(iss=None),
        "wrong_audience": lambda: idp.token(aud="https://someone-else.example"),
        "no_audience": lambda: idp.token(aud=None),
        "no_exp": lambda: idp.token(exp=None),
        "unknown_kid": lambda: idp.token("unpublished"),
        "kid_of_another_key": lambda: _resigned_with_kid(servers, "unpublished", "rsa-1"),
        "tampered_role": lambda: tampered(idp.token(), role="admin"),
        "tampered_sub_ec": lambda: tampered(idp.token("ec-1"), sub="root"),
        "tampered_exp": lambda: tampered(idp.token(exp=_now() - 600), exp=_now() + 600),
        "garbage": lambda: "not-a-jwt",
        "three_dots_garbage": lambda: "eyJhbGciOiJSUzI1NiJ9.e30.AAAA",
    }


def _now() -> int:
    return int(time.time())


def _resigned_with_kid(servers: Servers, signer: str, kid: str) -> str:
    """A token signed by an unpublished key that names a published key's `kid`."""
    return servers.idp.token(signer, headers={"kid": kid})


FORGED = [
    "alg_none",
    "alg_none_no_kid",
    "hs256_with_rsa_public_key",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "no_issuer",
    "wrong_audience",
    "no_audience",
    "no_exp",
    "unknown_kid",
    "kid_of_another_key",
    "tampered_role",
    "tampered_sub_ec",
    "tampered_exp",
    "garbage",
    "three_dots_garbage",
]
ROUTES = ["llm", "anthropic", "mcp", "http"]


async def _attack(
    gw: Target, route: str, auth: dict[str, str]
) -> tuple[Answer, Callable[[], bool]]:
    """Send the route's request with `auth`; return the answer and "did the upstream see it"."""
    servers = gw.servers
    if route == "mcp":
        marker = _marker()
        message = tool_call("alpha_add", {"a": 1, "b": 2, "note": marker})
        answer = await mcp_call(gw.url + "/mcp", auth, message, gw.session)
        return answer, lambda: servers.mcp.saw_marker(marker)
    before = servers.upstream.count()
    if route == "llm":
        answer = await send("POST", gw.url + "/v1/chat/completions", headers=auth, json_body=CHAT)
    elif route == "anthropic":
        answer = await send("POST", gw.url + "/v1/messages", headers=auth, json_body=MESSAGES)
    else:
        answer = await send("GET", gw.url + "/api/things", headers=auth)
    return answer, lambda: servers.upstream.count() != before


def _assert_refused_401(gw: Target, route: str, answer: Answer, code: str) -> None:
    if route == "mcp":
        assert_rpc_error(answer, 401, request_id=7)
        challenge = assert_challenge(answer, resource_metadata=gw.metadata_url)
        if code == "invalid_token":
            assert 'error="invalid_token"' in challenge, answer
    elif route == "anthropic":
        assert_anthropic_error(answer, 401, "authentication_error")
        challenge = assert_challenge(answer)
        if code == "invalid_token":
            assert 'error="invalid_token"' in challenge, answer
    else:
        assert_openai_error(answer, 401, "authentication_error", code)
        challenge = assert_challenge(answer)
        if code == "invalid_token":
            assert 'error="invalid_token"' in challenge, answer


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("forgery", FORGED)
async def test_forged_or_stale_token_is_refused(gw: Target, route: str, forgery: str) -> None:
    token = _forged(gw.servers)[forgery]()
    answer, reached = await _attack(gw, route, {"authorization": f"Bearer {token}"})
    _assert_refused_401(gw, route, answer, "invalid_token")
    assert not reached(), "the upstream saw a request with a forged token"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer "},
        {"authorization": "Bearer"},
        {"authorization": ""},
        {"authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"x-api-key": ""},
    ],
    ids=[
        "none",
        "bearer_empty",
        "bearer_no_space",
        "authorization_empty",
        "basic",
        "x_api_key_empty",
    ],
)
async def test_missing_or_empty_credentials_are_refused(
    gw: Target, route: str, headers: dict[str, str]
) -> None:
    answer, reached = await _attack(gw, route, headers)
    _assert_refused_401(gw, route, answer, "unauthorized")
    assert not reached()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
async def test_valid_rsa_and_ec_tokens_pass(gw: Target, route: str, kid: str) -> None:
    """The control: the same requests with a valid token reach the upstream."""
    answer, reached = await _attack(
        gw, route, {"authorization": "Bearer " + gw.servers.idp.token(kid)}
    )
    assert answer.status == 200, answer
    assert reached()
    if route == "mcp":
        assert rpc_message(answer)["result"]["content"][0]["text"] == "3"
        seen = gw.servers.mcp.seen[-1]
    else:
        seen = gw.servers.upstream.seen[-1]
    assert "authorization" not in seen.headers, "the caller's token went upstream"


async def test_mcp_challenge_names_the_configured_resource_not_the_host(gw: Target) -> None:
    """The metadata URL in a 401 comes from the configured resource, never the `Host` header."""
    for host in ("evil.example", "127.0.0.1:1"):
        answer, reached = await _attack(gw, "mcp", {"host": host})
        assert_challenge(answer, resource_metadata=gw.metadata_url)
        assert host not in answer.headers["www-authenticate"], answer
        assert not reached()


# -- beyond its scope -------------------------------------------------------------------------


async def test_llm_token_for_the_small_model_cannot_use_the_big_one(gw: Target) -> None:
    idp, upstream = gw.servers.idp, gw.servers.upstream
    url = gw.url + "/v1/chat/completions"
    user = {"authorization": "Bearer " + idp.token(role="user")}
    before = upstream.count()
    answer = await send("POST", url, headers=user, json_body={**CHAT, "model": "gpt-4o"})
    error = assert_openai_error(answer, 403, "permission_error", "forbidden")
    assert "gpt-4o" in error["message"]
    assert upstream.count() == before

    ok = await send("POST", url, headers=user, json_body=CHAT)
    assert ok.status == 200, ok
    admin = {"authorization": "Bearer " + idp.token(role="admin")}
    ok = await send("POST", url, headers=admin, json_body={**CHAT, "model": "gpt-4o"})
    assert ok.status == 200 and ok.json()["model"] == "gpt-4o", ok
    assert upstream.count() == before + 2


async def test_http_token_without_the_role_cannot_write(gw: Target) -> None:
    upstream = gw.servers.upstream
    user = {"authorization": "Bearer " + gw.servers.idp.token(role="user")}
    before = upstream.count()
    answer = await send("DELETE", gw.url + "/api/things/1", headers=user)
    assert_openai_error(answer, 403, "permission_error", "forbidden")
    assert upstream.count() == before
    ok = await send("GET", gw.url + "/api/things/1", headers=user)
    assert ok.status == 200, ok
    assert upstream.count() == before + 1


async def test_mcp_tool_beyond_the_token_scope_is_hidden_and_refused(gw: Target) -> None:
    mcp = gw.servers.mcp
    url = gw.url + "/mcp"
    user = {"authorization": "Bearer " + gw.servers.idp.token(role="user")}
    session = await mcp_session(url, user)
    listed = await mcp_call(url, user, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, session)
    assert listed.status == 200, listed
    names = {t["name"] for t in rpc_message(listed)["result"]["tools"]}
    assert names == {"alpha_add"}, names

    marker = _marker()
    answer = await mcp_call(url, user, tool_call("alpha_outcome", {"key": marker}), session)
    error = assert_rpc_error(answer, 200, -32003, request_id=7)
    assert "not allowed" in error["message"]
    assert not mcp.saw_marker(marker)

    admin = {"authorization": "Bearer " + gw.servers.idp.token(role="admin")}
    session = await mcp_session(url, admin)
    answer = await mcp_call(url, admin, tool_call("alpha_outcome", {"key": marker}), session)
    assert rpc_message(answer)["result"]["content"][0]["text"] == "unknown", answer
    assert mcp.saw_marker(marker)


async def test_mcp_session_of_one_token_is_not_usable_with_another(gw: Target) -> None:
    """The session id a user's token opened does not carry that user's rights to someone else
    (here: another user's valid token), and a valid token cannot ride an admin's session."""
    idp, mcp = gw.servers.idp, gw.servers.mcp
    url = gw.url + "/mcp"
    admin = {"authorization": "Bearer " + idp.token(sub="root", role="admin")}
    admin_session = await mcp_session(url, admin)
    mallory = {"authorization": "Bearer " + idp.token(sub="mallory", role="user")}
    marker = _marker()
    answer = await mcp_call(
        url, mallory, tool_call("alpha_outcome", {"key": marker}), admin_session
    )
    assert_rpc_error(answer, 404, request_id=7)
    assert not mcp.saw_marker(marker)


# -- key rotation -----------------------------------------------------------------------------


async def test_key_rotated_out_of_the_jwks_stops_working(gw: Target) -> None:
    idp, upstream = gw.servers.idp, gw.servers.upstream
    url = gw.url + "/v1/chat/completions"
    old = {"authorization": "Bearer " + idp.token("rot-old", sub="rotating")}
    assert (await send("POST", url, headers=old, json_body=CHAT)).status == 200

    idp.rotate("rot-old", "rot-new")
    new = {"authorization": "Bearer " + idp.token("rot-new", sub="rotating")}
    answer = await send("POST", url, headers=new, json_body=CHAT)
    assert answer.status == 200, answer  # the unknown kid made the gateway fetch the JWKS again

    before = upstream.count()
    fresh_old = {"authorization": "Bearer " + idp.token("rot-old", sub="rotating-2")}
    answer = await send("POST", url, headers=fresh_old, json_body=CHAT)
    _assert_refused_401(gw, "llm", answer, "invalid_token")
    # The token accepted before the rotation is no better than a new one of the dropped key:
    # no cache of validated tokens may outlive the key that signed them.
    answer = await send("POST", url, headers=old, json_body=CHAT)
    _assert_refused_401(gw, "llm", answer, "invalid_token")
    assert upstream.count() == before


def test_jwks_document_is_real(servers: Servers) -> None:
    """The fixture's sanity: the JWKS has RSA and EC keys with kids, and no private parts."""
    document = servers.idp.jwks()
    kinds = {k["kid"]: k["kty"] for k in document["keys"]}
    assert kinds["rsa-1"] == "RSA" and kinds["ec-1"] == "EC"
    assert "unpublished" not in kinds
    assert all("d" not in k for k in document["keys"])
    assert json.dumps(document)  # serialisable as served
