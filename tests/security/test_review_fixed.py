"""Findings of the policy-chain pentest (issue 7) whose fixes are outside `crossway.policy`;
each test failed before its fix:

- path parameters (`/admin;x/users`) slip past a guarded prefix route and a CEL path rule to
  an open catch-all route, and are forwarded as sent (Tomcat, Jetty and Spring drop `;x`);
- 2026-07-28 `subscriptions/listen` subscribes to resources the caller may not read;
- `/v1/models`, `/v1/models/{id}` and `/v1/messages/count_tokens` never run the parsed phase;
- RFC 9728 metadata routes are keyed by path only: two resources on two hosts share one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.helpers import free_port, start_gateway
from tests.security.support import (
    BACKENDS,
    ISSUER,
    MCP_ACCEPT,
    Servers,
    assert_openai_error,
    send,
)

KEY_A = "sk-team-a-6f1c0e9b2d7a4c58"
KEY_B = "sk-team-b-93d2a7f04b1e6c2d"
KEYS = f"{{team-a: '{KEY_A}', team-b: '{KEY_B}'}}"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "attacker", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}

CONFIG = (
    """
listen:
  port: {port}
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
      - {{type: api_key, keys: {keys}}}
      - type: authorization
        allow: ['llm.model == "gpt-4o-mini"', 'key.name == "team-b"']
  - name: mcp
    match: {{path: {{prefix: /mcp}}}}
    backend: tools
    policies:
      - {{type: api_key, keys: {keys}}}
      - type: authorization
        allow: ['key.name == "team-b" || (mcp.kind == "tool" && mcp.tool.name == "alpha_add")']
  - name: guarded
    match: {{path: {{prefix: /api}}}}
    backend: web
    policies:
      - {{type: api_key, keys: {keys}}}
  - name: pr-a
    match: {{host: a.test, path: {{prefix: /tools}}}}
    backend: web
    policies:
      - type: jwt
        jwks_url: '{jwks}'
        protected_resource: {{resource: 'https://a.test/tools', authorization_servers: ['{issuer}']}}
  - name: pr-b
    match: {{host: b.test, path: {{prefix: /tools}}}}
    backend: web
    policies:
      - type: jwt
        jwks_url: '{jwks}'
        protected_resource: {{resource: 'https://b.test/tools', authorization_servers: ['{issuer}']}}
  - name: open
    match: {{path: {{prefix: /}}}}
    backend: web
    policies:
      - type: authorization
        deny: ['request.path.startsWith("/admin/")']
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
    config = CONFIG.format(
        port=port,
        keys=KEYS,
        jwks=servers.idp.url,
        issuer=ISSUER,
        upstream=servers.upstream.url,
        mcp=servers.mcp.url,
    )
    with start_gateway(config, port=port) as gateway:
        yield Target(servers, gateway.url)


# -- path parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api;jsessionid=x/things",
        "/api%3bx/things",
        "/admin;x/users",
        "/admin;/users",
        "/admin%3B/users",
    ],
)
async def test_path_parameters_never_reach_a_guarded_resource(gw: Target, path: str) -> None:
    before = gw.servers.upstream.count()
    answer = await send("GET", gw.url + path)
    assert answer.status in (400, 401, 403), answer
    assert gw.servers.upstream.count() == before, gw.servers.upstream.seen[before:]


# -- 2026-07-28 subscriptions/listen --------------------------------------------------------------


async def test_listen_never_subscribes_a_resource_the_caller_may_not_read(gw: Target) -> None:
    forbidden = "crossway://alpha/notes://first"
    headers = {
        "x-api-key": KEY_A,
        "accept": MCP_ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "subscriptions/listen",
    }
    message = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "subscriptions/listen",
        "params": {"notifications": {"resourceSubscriptions": [forbidden]}, "_meta": MODERN_META},
    }
    before = len(gw.servers.mcp.seen)
    ack: dict[str, object] | None = None
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/mcp", headers=headers, json=message) as resp:
            if resp.status == 200:
                while ack is None:
                    line = await asyncio.wait_for(resp.content.readline(), 10)
                    if line.startswith(b"data:"):
                        ack = json.loads(line[5:])
    upstream_listens = [
        m
        for seen in gw.servers.mcp.seen[before:]
        for m in [seen.json()]
        if isinstance(m, dict)
        and m.get("method") in ("subscriptions/listen", "resources/subscribe")
    ]
    assert "notes://first" not in json.dumps(upstream_listens), upstream_listens
    if ack is not None and "params" in ack:
        assert forbidden not in json.dumps(ack), ack


# -- LLM endpoints without a parsed phase ---------------------------------------------------------


async def test_models_list_shows_only_allowed_models(gw: Target) -> None:
    answer = await send("GET", gw.url + "/v1/models", headers={"x-api-key": KEY_A})
    assert answer.status == 200, answer
    assert [m["id"] for m in answer.json()["data"]] == ["gpt-4o-mini"], answer


async def test_model_lookup_of_a_forbidden_model_is_refused(gw: Target) -> None:
    answer = await send("GET", gw.url + "/v1/models/gpt-4o", headers={"x-api-key": KEY_A})
    assert answer.status in (403, 404), answer


async def test_count_tokens_runs_the_parsed_phase(gw: Target) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    answer = await send(
        "POST", gw.url + "/v1/messages/count_tokens", headers={"x-api-key": KEY_A}, json_body=body
    )
    assert answer.status == 403, answer


# -- RFC 9728 metadata of two hosts ---------------------------------------------------------------


@pytest.mark.parametrize("host", ["a.test", "b.test"])
async def test_metadata_names_the_resource_of_the_host_asked(gw: Target, host: str) -> None:
    answer = await send(
        "GET", gw.url + "/.well-known/oauth-protected-resource/tools", headers={"host": host}
    )
    assert answer.status == 200, answer
    assert answer.json()["resource"] == f"https://{host}/tools", answer
    # ...and the challenge of that host points at it.
    challenge = await send("GET", gw.url + "/tools/x", headers={"host": host})
    assert_openai_error(challenge, 401, "authentication_error")
    assert f"https://{host}/.well-known/" in challenge.headers["www-authenticate"], challenge
