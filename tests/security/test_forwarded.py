"""Spoofed client addresses against `ip` rules on LLM, MCP and plain HTTP routes: the caller is
127.0.0.1, which is not a trusted proxy (`listen.trusted_proxies` is empty), so whatever
`X-Forwarded-For`, `X-Real-IP` or `Forwarded` claims, the rule judges 127.0.0.1 — refused with
403 in the route's format, the upstream never reached."""

from __future__ import annotations

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
    mcp_headers,
    send,
    tool_call,
)

CONFIG = """
routes:
  - name: llm
    match: {host: allow.test, path: {prefix: /v1}}
    backend: llm
    policies: [{type: ip, allow: [10.0.0.0/8]}]
  - name: mcp
    match: {host: allow.test, path: {prefix: /mcp}}
    backend: tools
    policies: [{type: ip, allow: [10.0.0.0/8]}]
  - name: http
    match: {host: allow.test, path: {prefix: /}}
    backend: web
    policies: [{type: ip, allow: [10.0.0.0/8]}]
  - name: denied
    match: {host: deny.test, path: {prefix: /}}
    backend: web
    policies: [{type: ip, deny: [127.0.0.0/8, "::1/128"]}]
  - name: open
    match: {path: {prefix: /}}
    backend: web
""" + BACKENDS.format(upstream="@UP@", mcp="@MCP@")


@dataclass
class Target:
    servers: Servers
    url: str


@pytest.fixture(scope="module")
def gw(servers: Servers) -> Iterator[Target]:
    config = CONFIG.replace("@UP@", servers.upstream.url).replace("@MCP@", servers.mcp.url)
    with start_gateway(config) as gateway:
        yield Target(servers, gateway.url)


SPOOFS = {
    "none": {},
    "xff": {"x-forwarded-for": "10.1.2.3"},
    "xff_chain": {"x-forwarded-for": "10.1.2.3, 10.0.0.1"},
    "xff_last_hop_inside": {"x-forwarded-for": "127.0.0.1, 10.9.9.9"},
    "x_real_ip": {"x-real-ip": "10.1.2.3"},
    "forwarded": {"forwarded": "for=10.1.2.3;proto=https"},
    "forwarded_v6_mapped": {"forwarded": 'for="[::ffff:10.1.2.3]"'},
    "x_client_ip": {"x-client-ip": "10.1.2.3"},
    "true_client_ip": {"true-client-ip": "10.1.2.3"},
}

_ids = itertools.count(1)


async def _attack(
    gw: Target, route: str, host: str, spoof: dict[str, str]
) -> tuple[Answer, Callable[[], bool]]:
    servers = gw.servers
    headers = {"host": host, **spoof}
    if route == "mcp":
        marker = f"xff-marker-{next(_ids)}"
        message = tool_call("alpha_add", {"a": 1, "b": 2, "note": marker})
        answer = await send(
            "POST", gw.url + "/mcp", headers=mcp_headers(headers), json_body=message
        )
        return answer, lambda: servers.mcp.saw_marker(marker)
    before = servers.upstream.count()
    if route == "llm":
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        answer = await send(
            "POST", gw.url + "/v1/chat/completions", headers=headers, json_body=chat
        )
    else:
        answer = await send("GET", gw.url + "/internal/report", headers=headers)
    return answer, lambda: servers.upstream.count() != before


def _assert_403(route: str, answer: Answer) -> None:
    if route == "mcp":
        error = assert_rpc_error(answer, 403, request_id=None)
        assert "not allowed" in error["message"], answer
    else:
        assert_openai_error(answer, 403, "permission_error", "ip_not_allowed")


@pytest.mark.parametrize("route", ["llm", "mcp", "http"])
@pytest.mark.parametrize("spoof", list(SPOOFS))
async def test_spoofed_address_does_not_pass_an_allow_rule(
    gw: Target, route: str, spoof: str
) -> None:
    answer, reached = await _attack(gw, route, "allow.test", SPOOFS[spoof])
    _assert_403(route, answer)
    assert not reached(), "the upstream saw a request from outside the allowed network"


@pytest.mark.parametrize("spoof", ["xff", "x_real_ip", "forwarded"])
async def test_spoofed_address_does_not_escape_a_deny_rule(gw: Target, spoof: str) -> None:
    claim = {k: v.replace("10.1.2.3", "8.8.8.8") for k, v in SPOOFS[spoof].items()}
    answer, reached = await _attack(gw, "http", "deny.test", claim)
    _assert_403("http", answer)
    assert not reached()


async def test_open_route_gets_the_real_address_not_the_claim(gw: Target) -> None:
    """The control: an open route serves the same caller, and the upstream learns the real
    peer address in `X-Forwarded-For`, never the spoofed one."""
    upstream = gw.servers.upstream
    answer = await send("GET", gw.url + "/status", headers={"x-forwarded-for": "10.1.2.3"})
    assert answer.status == 200, answer
    seen = upstream.seen[-1]
    assert "10.1.2.3" not in json.dumps(seen.headers), seen.headers
