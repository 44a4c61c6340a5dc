"""API keys against LLM, MCP and plain HTTP routes: no, empty and wrong keys are refused with
401 in the route's format; a key's scope (model, tool, method) holds; one caller's MCP session
is useless to another; the upstream never sees a refused request nor the caller's key."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import start_gateway
from tests.security.support import (
    BACKENDS,
    Answer,
    Servers,
    assert_challenge,
    assert_openai_error,
    assert_rpc_error,
    mcp_call,
    mcp_headers,
    mcp_session,
    rpc_message,
    send,
    tool_call,
)

KEY_A = "sk-team-a-6f1c0e9b2d7a4c58"
KEY_B = "sk-team-b-93d2a7f04b1e6c2d"
DIGEST_B = "sha256:" + hashlib.sha256(KEY_B.encode()).hexdigest()
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
KEYS = f"{{team-a: '{KEY_A}', team-b: '{DIGEST_B}'}}"

CONFIG = """
routes:
  - name: llm
    match: {path: {prefix: /v1}}
    backend: llm
    policies:
      - {type: api_key, keys: @KEYS@}
      - type: authorization
        allow: ['llm.model == "gpt-4o-mini"', 'key.name == "team-b"']
  - name: mcp
    match: {path: {prefix: /mcp}}
    backend: tools
    policies:
      - {type: api_key, keys: @KEYS@}
      - type: authorization
        allow: ['mcp.kind != "tool" || mcp.tool.name == "alpha_add" || key.name == "team-b"']
  - name: api
    match: {path: {prefix: /api}}
    backend: web
    policies:
      - {type: api_key, keys: @KEYS@}
      - type: authorization
        allow: ['request.method == "GET" || identity.sub == "team-b"']
""" + BACKENDS.format(upstream="@UP@", mcp="@MCP@")


@dataclass
class Target:
    servers: Servers
    url: str
    session_a: str


@pytest.fixture(scope="module")
def gw(servers: Servers) -> Iterator[Target]:
    config = (
        CONFIG.replace("@KEYS@", KEYS)
        .replace("@UP@", servers.upstream.url)
        .replace("@MCP@", servers.mcp.url)
    )
    with start_gateway(config) as gateway:
        session = asyncio.run(mcp_session(gateway.url + "/mcp", {"x-api-key": KEY_A}))
        yield Target(servers, gateway.url, session)


_markers = itertools.count(1)


def _marker() -> str:
    return f"key-marker-{next(_markers)}-{uuid.uuid4().hex[:8]}"


async def _attack(
    gw: Target, route: str, auth: dict[str, str]
) -> tuple[Answer, Callable[[], bool]]:
    servers = gw.servers
    if route == "mcp":
        marker = _marker()
        message = tool_call("alpha_add", {"a": 1, "b": 2, "note": marker})
        answer = await mcp_call(gw.url + "/mcp", auth, message, gw.session_a)
        return answer, lambda: servers.mcp.saw_marker(marker)
    before = servers.upstream.count()
    if route == "llm":
        answer = await send("POST", gw.url + "/v1/chat/completions", headers=auth, json_body=CHAT)
    else:
        answer = await send("GET", gw.url + "/api/things", headers=auth)
    return answer, lambda: servers.upstream.count() != before


def _assert_401(route: str, answer: Answer, codes: set[str]) -> None:
    if route == "mcp":
        assert_rpc_error(answer, 401, request_id=7)
    else:
        assert_openai_error(answer, 401, "authentication_error", codes)
    assert_challenge(answer)  # RFC 9110: a 401 carries a challenge


ROUTES = ["llm", "mcp", "http"]
MISSING = {"missing_api_key"}
INVALID = {"invalid_api_key"}
EMPTY = MISSING | INVALID

BAD_CREDENTIALS = {
    "none": ({}, MISSING),
    "x_api_key_empty": ({"x-api-key": ""}, EMPTY),
    "x_api_key_blank": ({"x-api-key": "   "}, EMPTY),
    "bearer_empty": ({"authorization": "Bearer "}, EMPTY),
    "bearer_no_space": ({"authorization": "Bearer"}, EMPTY),
    "authorization_empty": ({"authorization": ""}, EMPTY),
    "wrong_x_api_key": ({"x-api-key": "sk-team-a-0000000000000000"}, INVALID),
    "wrong_bearer": ({"authorization": "Bearer sk-nobody-00000000000000"}, INVALID),
    "key_with_suffix": ({"x-api-key": KEY_A + "x"}, INVALID),
    "key_truncated": ({"x-api-key": KEY_A[:-1]}, INVALID),
    "key_upper_case": ({"x-api-key": KEY_A.upper()}, INVALID),
    "configured_digest_presented": ({"x-api-key": DIGEST_B}, INVALID),
    "bare_hex_digest_presented": ({"x-api-key": DIGEST_B[7:]}, INVALID),
    "key_in_basic_auth": ({"authorization": "Basic " + "dGVhbS1hOnNr"}, MISSING),
    "key_name_as_key": ({"x-api-key": "team-a"}, INVALID),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
async def test_missing_empty_or_wrong_key_is_refused(gw: Target, route: str, case: str) -> None:
    headers, codes = BAD_CREDENTIALS[case]
    answer, reached = await _attack(gw, route, headers)
    _assert_401(route, answer, codes)
    assert not reached(), "the upstream saw a request without a valid key"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "auth",
    [{"x-api-key": KEY_A}, {"authorization": f"Bearer {KEY_A}"}],
    ids=["x_api_key", "bearer"],
)
async def test_valid_key_passes_and_is_not_forwarded(
    gw: Target, route: str, auth: dict[str, str]
) -> None:
    """The control: the same requests with a valid key reach the upstream, without the key."""
    answer, reached = await _attack(gw, route, auth)
    assert answer.status == 200, answer
    assert reached()
    if route == "mcp":
        assert rpc_message(answer)["result"]["content"][0]["text"] == "3"
        seen = gw.servers.mcp.seen
    else:
        seen = gw.servers.upstream.seen
    assert not any(KEY_A in str(s.headers) for s in seen), "the caller's key went upstream"


async def test_sha256_configured_key_works(gw: Target) -> None:
    answer, reached = await _attack(gw, "llm", {"x-api-key": KEY_B})
    assert answer.status == 200, answer
    assert reached()


# -- beyond its scope -------------------------------------------------------------------------


async def test_key_for_the_small_model_cannot_use_the_big_one(gw: Target) -> None:
    upstream = gw.servers.upstream
    url = gw.url + "/v1/chat/completions"
    before = upstream.count()
    for body in ({**CHAT, "model": "gpt-4o"}, {**CHAT, "model": "gpt-4o", "stream": True}):
        answer = await send("POST", url, headers={"x-api-key": KEY_A}, json_body=body)
        error = assert_openai_error(answer, 403, "permission_error", "forbidden")
        assert "gpt-4o" in error["message"]
    assert upstream.count() == before
    ok = await send(
        "POST", url, headers={"x-api-key": KEY_B}, json_body={**CHAT, "model": "gpt-4o"}
    )
    assert ok.status == 200 and ok.json()["model"] == "gpt-4o", ok


async def test_key_without_write_rights_cannot_write_over_http(gw: Target) -> None:
    upstream = gw.servers.upstream
    before = upstream.count()
    for method in ("POST", "DELETE", "PUT", "PATCH"):
        answer = await send(method, gw.url + "/api/things/1", headers={"x-api-key": KEY_A})
        assert_openai_error(answer, 403, "permission_error", "forbidden")
    assert upstream.count() == before


async def test_tool_beyond_the_key_scope_is_hidden_and_refused(gw: Target) -> None:
    mcp, url = gw.servers.mcp, gw.url + "/mcp"
    auth = {"x-api-key": KEY_A}
    listing = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    listed = await mcp_call(url, auth, listing, gw.session_a)
    names = {t["name"] for t in rpc_message(listed)["result"]["tools"]}
    assert names == {"alpha_add"}, names

    # A hidden tool and one that does not exist look the same to the caller.
    for name in ("alpha_outcome", "alpha_crash", "alpha_nonexistent"):
        marker = _marker()
        answer = await mcp_call(url, auth, tool_call(name, {"key": marker}), gw.session_a)
        error = assert_rpc_error(answer, 200, -32003, request_id=7)
        assert "not allowed" in error["message"], answer
        assert not mcp.saw_marker(marker)

    session_b = await mcp_session(url, {"x-api-key": KEY_B})
    listed = await mcp_call(url, {"x-api-key": KEY_B}, listing, session_b)
    assert "alpha_outcome" in {t["name"] for t in rpc_message(listed)["result"]["tools"]}


# -- MCP sessions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [{"x-api-key": KEY_B}, {"authorization": f"Bearer {KEY_B}"}],
    ids=["x_api_key", "bearer"],
)
async def test_another_callers_session_is_not_found(gw: Target, auth: dict[str, str]) -> None:
    marker = _marker()
    message = tool_call("alpha_add", {"a": 1, "b": 2, "note": marker})
    answer = await mcp_call(gw.url + "/mcp", auth, message, gw.session_a)
    assert_rpc_error(answer, 404, request_id=7)
    assert not gw.servers.mcp.saw_marker(marker)


async def test_another_callers_session_cannot_be_listened_to_or_ended(gw: Target) -> None:
    """Caller B can neither open A's event stream nor DELETE A's session."""
    url = gw.url + "/mcp"
    stream = await send(
        "GET",
        url,
        headers={**mcp_headers({"x-api-key": KEY_B}, gw.session_a), "accept": "text/event-stream"},
    )
    assert stream.status == 404, stream
    ended = await send("DELETE", url, headers=mcp_headers({"x-api-key": KEY_B}, gw.session_a))
    assert ended.status == 404, ended
    # A's session still works for A.
    message = tool_call("alpha_add", {"a": 2, "b": 2})
    answer = await mcp_call(url, {"x-api-key": KEY_A}, message, gw.session_a)
    assert rpc_message(answer)["result"]["content"][0]["text"] == "4", answer


async def test_ended_session_cannot_be_used_again(gw: Target) -> None:
    url, auth = gw.url + "/mcp", {"x-api-key": KEY_A}
    session = await mcp_session(url, auth)
    ended = await send("DELETE", url, headers=mcp_headers(auth, session))
    assert ended.status in (200, 204), ended
    marker = _marker()
    answer = await mcp_call(
        url, auth, tool_call("alpha_add", {"a": 1, "b": 1, "n": marker}), session
    )
    assert_rpc_error(answer, 404, request_id=7)
    assert not gw.servers.mcp.saw_marker(marker)


@pytest.mark.parametrize(
    "session",
    ["", "not-a-session", "A" * 200, "../../etc/passwd"],
    ids=["empty", "garbage", "long", "path"],
)
async def test_forged_session_id_is_not_found(gw: Target, session: str) -> None:
    marker = _marker()
    message = tool_call("alpha_add", {"a": 1, "b": 1, "n": marker})
    headers = mcp_headers({"x-api-key": KEY_A})
    headers["mcp-session-id"] = session
    answer = await send("POST", gw.url + "/mcp", headers=headers, json_body=message)
    assert_rpc_error(answer, 404, request_id=7)
    assert not gw.servers.mcp.saw_marker(marker)


# -- a key that is not there ------------------------------------------------------------------

UNSET_CONFIG = """
routes:
  - name: api
    backend: web
    policies: [{type: api_key, keys: {team-a: '${@VAR@}'}}]
backends:
  web: {type: http, url: 'http://127.0.0.1:9'}
"""


@pytest.mark.parametrize("reference", ["${VAR}", "${VAR:-}"], ids=["unset", "empty_default"])
def test_key_from_an_unset_variable_does_not_switch_auth_off(
    reference: str, tmp_path: Path
) -> None:
    """`keys: {team-a: ${TEAM_A_KEY}}` with the variable unset must not validate, nor serve
    (it would accept an empty `x-api-key:` as team-a)."""
    var = "CROSSWAY_SECURITY_TEST_UNSET_KEY"
    text = UNSET_CONFIG.replace("${@VAR@}", reference.replace("VAR", var))
    path = tmp_path / "config.yaml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != var}
    result = subprocess.run(
        [sys.executable, "-m", "crossway", "validate", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert var in result.stdout + result.stderr or "empty" in result.stdout + result.stderr
    with pytest.raises(RuntimeError, match="exited"):
        with start_gateway(text, env={}):
            pass
