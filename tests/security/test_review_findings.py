"""Findings of a pentest of the policy chain (issue 7), each reproduced against a real
`crossway serve` and fixed in `crossway.policy`:

- an authorization rule mixing `request` with `llm`/`mcp` decided in the parsed phase with an
  empty `request` map, so it never allowed anything (fail closed, but unusable);
- `[jwt optional, api_key strict]` and `[api_key optional forward, jwt strict]` refused a
  Bearer API key as a "malformed token";
- a valid gateway key sent in both `x-api-key` and `Authorization: Bearer` was consumed from
  one header only and forwarded upstream in the other;
- a token whose `alg`/`kid` holds non-Latin-1 text made the RFC 9728 challenge unencodable:
  a plain-text 500 instead of a 401.

Every case asserts the status and error body, and what the upstream saw.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import free_port, start_gateway
from tests.security.support import (
    AUDIENCE,
    BACKENDS,
    ISSUER,
    Servers,
    assert_challenge,
    assert_openai_error,
    mcp_call,
    mcp_session,
    rpc_message,
    send,
)

KEY_A = "sk-team-a-6f1c0e9b2d7a4c58"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

CONFIG = (
    """
listen:
  port: {port}
routes:
  - name: mixed-llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
      - {{type: api_key, keys: {{team-a: '{key}'}}}}
      - type: authorization
        allow: ['llm.model == "gpt-4o-mini" && request.method == "POST"']
  - name: mixed-mcp
    match: {{path: {{prefix: /mcp}}}}
    backend: tools
    policies:
      - {{type: api_key, keys: {{team-a: '{key}'}}}}
      - type: authorization
        allow: ['request.method == "POST" && mcp.tool.name == "alpha_add"']
  - name: jwt-then-key
    match: {{path: {{prefix: /combo}}}}
    backend: web
    policies:
      - {{type: jwt, mode: optional, {jwt}}}
      - {{type: api_key, keys: {{team-a: '{key}'}}}}
  - name: forwarded-key-then-jwt
    match: {{path: {{prefix: /fwd}}}}
    backend: web
    policies:
      - {{type: api_key, mode: optional, forward: true, keys: {{team-a: '{key}'}}}}
      - {{type: jwt, {jwt}}}
  - name: key
    match: {{path: {{prefix: /keyed}}}}
    backend: web
    policies:
      - {{type: api_key, keys: {{team-a: '{key}'}}}}
  - name: protected
    match: {{path: {{prefix: /pr}}}}
    backend: web
    policies:
      - type: jwt
        jwks_url: '{jwks}'
        issuer: '{issuer}'
        protected_resource:
          resource: 'http://127.0.0.1:{port}/pr'
          authorization_servers: ['{issuer}']
"""
    + BACKENDS
)


@dataclass
class Target:
    servers: Servers
    url: str


@pytest.fixture(scope="module")
def gw(servers: Servers) -> Iterator[Target]:
    port = free_port()
    jwt = f"jwks_url: '{servers.idp.url}', issuer: '{ISSUER}', audiences: ['{AUDIENCE}']"
    config = CONFIG.format(
        port=port,
        key=KEY_A,
        jwt=jwt,
        jwks=servers.idp.url,
        issuer=ISSUER,
        upstream=servers.upstream.url,
        mcp=servers.mcp.url,
    )
    with start_gateway(config, port=port) as gateway:
        yield Target(servers, gateway.url)


def _key_leaks(servers: Servers, since: int) -> list[str]:
    """Headers of upstream requests since `since` that carry the gateway key."""
    return [
        name
        for seen in servers.upstream.seen[since:]
        for name, value in seen.headers.items()
        if KEY_A in value
    ]


# -- a rule mixing `request` with `llm` / `mcp` ---------------------------------------------------


async def test_rule_mixing_request_and_llm_allows_what_it_says(gw: Target) -> None:
    before = gw.servers.upstream.count()
    answer = await send(
        "POST", gw.url + "/v1/chat/completions", headers={"x-api-key": KEY_A}, json_body=CHAT
    )
    assert answer.status == 200, answer
    assert gw.servers.upstream.count() == before + 1
    # ...and still refuses the model the rule does not name.
    denied = await send(
        "POST",
        gw.url + "/v1/chat/completions",
        headers={"x-api-key": KEY_A},
        json_body={**CHAT, "model": "gpt-4o"},
    )
    assert_openai_error(denied, 403, "permission_error", "forbidden")
    assert gw.servers.upstream.count() == before + 1


async def test_rule_mixing_request_and_mcp_allows_and_lists(gw: Target) -> None:
    url, auth = gw.url + "/mcp", {"x-api-key": KEY_A}
    session = await mcp_session(url, auth)
    listed = rpc_message(
        await mcp_call(url, auth, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session)
    )
    names = [tool["name"] for tool in listed["result"]["tools"]]
    assert names == ["alpha_add"], listed
    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "alpha_add", "arguments": {"a": 2, "b": 3}},
    }
    result = rpc_message(await mcp_call(url, auth, call, session))
    assert result.get("result", {}).get("structuredContent") == {"result": 5}, result
    other = {**call, "id": 4, "params": {"name": "alpha_whoami", "arguments": {}}}
    refused = rpc_message(await mcp_call(url, auth, other, session))
    assert refused["error"]["message"] == "tool 'alpha_whoami' is not allowed", refused


# -- authentication mode combinations -------------------------------------------------------------


async def test_optional_jwt_before_api_key_accepts_a_bearer_key(gw: Target) -> None:
    before = gw.servers.upstream.count()
    answer = await send("GET", gw.url + "/combo/x", headers={"authorization": f"Bearer {KEY_A}"})
    assert answer.status == 200, answer
    assert gw.servers.upstream.count() == before + 1
    assert _key_leaks(gw.servers, before) == []
    # A real but invalid JWT is still refused by the optional JWT policy.
    forged = gw.servers.idp.token("unpublished")
    refused = await send("GET", gw.url + "/combo/x", headers={"authorization": f"Bearer {forged}"})
    assert_openai_error(refused, 401, "authentication_error", "invalid_token")
    assert gw.servers.upstream.count() == before + 1


async def test_forwarded_api_key_before_strict_jwt_is_accepted(gw: Target) -> None:
    before = gw.servers.upstream.count()
    answer = await send("GET", gw.url + "/fwd/x", headers={"authorization": f"Bearer {KEY_A}"})
    assert answer.status == 200, answer
    assert gw.servers.upstream.seen[-1].headers.get("authorization") == f"Bearer {KEY_A}"
    # Without any credential the strict JWT policy still refuses.
    refused = await send("GET", gw.url + "/fwd/x")
    assert_openai_error(refused, 401, "authentication_error", "unauthorized")
    assert_challenge(refused)
    assert gw.servers.upstream.count() == before + 1


# -- a gateway key never goes upstream ------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": KEY_A, "authorization": f"Bearer {KEY_A}"},
        {"authorization": f"Bearer {KEY_A}", "x-api-key": KEY_A},
    ],
    ids=["x_api_key_first", "authorization_first"],
)
async def test_key_in_two_headers_is_consumed_from_both(
    gw: Target, headers: dict[str, str]
) -> None:
    before = gw.servers.upstream.count()
    answer = await send("GET", gw.url + "/keyed/things", headers=headers)
    assert answer.status == 200, answer
    assert gw.servers.upstream.count() == before + 1
    assert _key_leaks(gw.servers, before) == []


async def test_upstream_credential_beside_the_key_is_still_forwarded(gw: Target) -> None:
    # Consuming is about the gateway's keys: the upstream's own token goes on.
    before = gw.servers.upstream.count()
    answer = await send(
        "GET",
        gw.url + "/keyed/things",
        headers={"x-api-key": KEY_A, "authorization": "Bearer upstream-own-token-123"},
    )
    assert answer.status == 200, answer
    seen = gw.servers.upstream.seen[before:]
    assert [s.headers.get("authorization") for s in seen] == ["Bearer upstream-own-token-123"]
    assert _key_leaks(gw.servers, before) == []


# -- an unencodable challenge ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "\u4e2d", "typ": "JWT"},
        {"alg": "RS256", "kid": "\u4e2d\u6587", "typ": "JWT"},
        {"alg": "RS256", "kid": 'quote" and \\ backslash', "typ": "JWT"},
    ],
    ids=["cjk_alg", "cjk_kid", "quote_kid"],
)
async def test_token_header_text_never_breaks_the_challenge(
    gw: Target, header: dict[str, str]
) -> None:
    token = (
        _b64(json.dumps(header).encode())
        + "."
        + _b64(json.dumps({"iss": ISSUER, "sub": "x", "exp": 2**31}).encode())
        + "."
        + _b64(b"sig")
    )
    before = gw.servers.upstream.count()
    answer = await send("GET", gw.url + "/pr/x", headers={"authorization": f"Bearer {token}"})
    assert_openai_error(answer, 401, "authentication_error", "invalid_token")
    challenge = assert_challenge(answer)
    assert 'error="invalid_token"' in challenge, answer
    assert challenge.isascii(), challenge
    description = challenge.partition('error_description="')[2].partition('"')[0]
    assert description and "\\" not in description, challenge
    assert gw.servers.upstream.count() == before
