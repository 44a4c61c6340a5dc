"""examples/secure.yaml runs as its header says: JWT from a JWKS URL, CEL rules per model and
tool, with the official `openai` SDK and the `mcp` SDK client against the sample upstreams."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import jwt
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from mcp import Client
from tests.helpers import ROOT, free_port, http_status, start_gateway, wait_for
from tests.mcp.conftest import spawn, stop

ISSUER = "https://idp.example.test"
AUDIENCE = "crossway-secure-example"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWK = {
    **jwt.get_algorithm_by_name("RS256").to_jwk(KEY.public_key(), as_dict=True),
    "kid": "secure-1",
    "use": "sig",
}


def _token(role: str | None = None, **claims: Any) -> str:
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "someone",
        "exp": int(time.time()) + 600,
        **claims,
    }
    if role is not None:
        body["role"] = role
    return jwt.encode(body, KEY, algorithm="RS256", headers={"kid": "secure-1"})


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    document = json.dumps({"keys": [JWK]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def gateway(jwks_url: str, sample_openai_module: str) -> Iterator[str]:
    mcp_port = free_port()
    mcp = spawn(
        [sys.executable, "-m", "crossway.samples.mcp_server", "--port", str(mcp_port)], mcp_port
    )
    env = {
        "OPENAI_BASE_URL": sample_openai_module,
        "MCP_URL": f"http://127.0.0.1:{mcp_port}/mcp",
        "CROSSWAY_JWKS_URL": jwks_url,
        "CROSSWAY_ISSUER": ISSUER,
        "CROSSWAY_AUDIENCE": AUDIENCE,
    }
    text = (ROOT / "examples" / "secure.yaml").read_text()
    try:
        with start_gateway(text, env=env) as gw:
            wait_for(lambda: http_status(gw.url + "/v1/models") == 401, what="gateway")
            yield gw.url
    finally:
        stop(mcp)


def _openai(url: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0)


def test_any_valid_token_may_use_gpt_4o_mini(gateway: str) -> None:
    answer = _openai(gateway, _token()).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content


def test_only_admins_may_use_gpt_4o(gateway: str) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        _openai(gateway, _token(role="user")).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 403
    assert info.value.body["code"] == "forbidden"  # type: ignore[index]
    answer = _openai(gateway, _token(role="admin")).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices)


def test_no_token_gets_401_in_openai_format(gateway: str) -> None:
    request = urllib.request.Request(
        gateway + "/v1/chat/completions",
        data=b'{"model": "gpt-4o-mini", "messages": []}',
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 401
    body = json.loads(info.value.read())
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "unauthorized"
    assert info.value.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "expired",
        "wrong-audience",
    ],
)
def test_requests_without_a_valid_token_get_401(gateway: str, token: str) -> None:
    bearer = {
        "not-a-jwt": "not-a-jwt",
        "expired": _token(exp=int(time.time()) - 3600),
        "wrong-audience": _token(aud="someone-else"),
    }[token]
    with pytest.raises(openai.AuthenticationError) as info:
        _openai(gateway, bearer).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 401


def _mcp(url: str, token: str) -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    return Client(streamable_http_client(url + "/mcp", http_client=http), mode="legacy")


async def test_any_valid_token_sees_and_calls_only_echo(gateway: str) -> None:
    async with _mcp(gateway, _token(role="user")) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"echo"}
        echoed = await client.call_tool("echo", {"text": "hello"})
        assert "hello" in echoed.content[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="tool 'add' is not allowed"):
            await client.call_tool("add", {"a": 1, "b": 2})


async def test_admins_see_and_call_every_tool(gateway: str) -> None:
    async with _mcp(gateway, _token(role="admin")) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "add", "word_count"} <= names
        added = await client.call_tool("add", {"a": 1, "b": 2})
        assert added.content[0].text in ("3", "3.0")  # type: ignore[union-attr]
