"""The admin plane under attack: `/config` (and `/metrics`, and the gateway's log) never show a
secret of the config, field kind by field kind; every admin route that changes something
refuses a caller without the admin token (none, empty, wrong, in the query string)."""

from __future__ import annotations

import json
import re
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import ROOT, free_port, start_gateway
from tests.security.support import Servers, assert_challenge, assert_openai_error, send


def _secret(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


_PRIVATE_JWK = jwt.get_algorithm_by_name("RS256").to_jwk(
    rsa.generate_private_key(public_exponent=65537, key_size=2048), as_dict=True
)

SECRETS = {
    "api_key_policy_key": _secret("sk-policy"),
    "provider_api_key": _secret("sk-provider"),
    "provider_header": _secret("org-header"),
    "http_backend_header": _secret("http-header"),
    "http_backend_url_password": _secret("urlpass"),
    "mcp_server_header": _secret("mcp-header"),
    "stdio_env_value": _secret("stdio-env"),
    "stdio_flag_value": _secret("stdio-flag"),
    "stdio_separate_flag_value": _secret("stdio-sep"),
    "mcp_session_key": _secret("session-key"),
    "jwt_hmac_secret": _secret("hmac-secret-0123456789"),
    "route_match_header": _secret("match-key"),
    "admin_token": _secret("admin-token"),
    "jwk_private_exponent": str(_PRIVATE_JWK["d"]),
    "jwk_private_prime": str(_PRIVATE_JWK["p"]),
}
WRONG_KEY = _secret("sk-presented-wrong")


def _config(servers: Servers, admin_port: int) -> str:
    s = SECRETS
    up = servers.upstream.url
    userinfo_url = up.replace("http://", f"http://ops:{s['http_backend_url_password']}@")
    jwk = {**_PRIVATE_JWK, "kid": "inline", "use": "sig"}
    jwk.pop("key_ops", None)
    jwk_yaml = json.dumps(jwk)
    notes = (
        f"{{type: stdio, command: '{sys.executable}', cwd: '{ROOT}', "
        f"args: ['-m', 'tests.mcp.servers.notes', 'stdio', '--name', 'beta', "
        f"'--token={s['stdio_flag_value']}', '--api-key', '{s['stdio_separate_flag_value']}'], "
        f"env: {{NOTES_TOKEN: '{s['stdio_env_value']}'}}}}"
    )
    return f"""
admin:
  port: {admin_port}
  token: '{s["admin_token"]}'
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies: [{{type: api_key, keys: {{ops: '{s["api_key_policy_key"]}'}}}}]
  - name: mcp
    match: {{path: {{prefix: /mcp}}}}
    backend: tools
    policies:
      - {{type: jwt, secret: '{s["jwt_hmac_secret"]}', algorithms: [HS256], audiences: [aud]}}
  - name: matched
    match: {{path: {{prefix: /matched}}, headers: {{x-api-key: '{s["route_match_header"]}'}}}}
    backend: web
  - name: inline
    match: {{path: {{prefix: /inline}}}}
    backend: web
    policies: [{{type: jwt, jwks: {{keys: [{jwk_yaml}]}}, audiences: [aud]}}]
backends:
  llm:
    type: llm
    providers:
      up:
        type: openai_compatible
        base_url: '{up}/v1'
        api_key: '{s["provider_api_key"]}'
        headers: {{x-org-secret: '{s["provider_header"]}'}}
    models:
      - {{name: gpt-4o-mini, targets: [{{provider: up}}]}}
  tools:
    type: mcp
    session_key: '{s["mcp_session_key"]}'
    servers:
      alpha: {{type: streamable_http, url: '{servers.mcp.url}', headers: {{x-api-key: '{s["mcp_server_header"]}'}}}}
      beta: {notes}
  web:
    type: http
    url: '{userinfo_url}'
    headers: {{authorization: 'Bearer {s["http_backend_header"]}'}}
"""


@dataclass
class Target:
    servers: Servers
    url: str
    admin_url: str
    config_path: str
    config_text: str
    log: Any


@pytest.fixture(scope="module")
def gw(servers: Servers) -> Iterator[Target]:
    admin_port = free_port()
    with start_gateway(_config(servers, admin_port), admin_port=admin_port) as gateway:
        yield Target(
            servers,
            gateway.url,
            gateway.admin_url,
            str(gateway.config_path),
            gateway.config_path.read_text(),
            gateway.log,
        )


async def test_config_shows_no_secret(gw: Target) -> None:
    answer = await send("GET", gw.admin_url + "/config")
    assert answer.status == 200, answer
    text = answer.body.decode()
    written = gw.config_text
    assert all(value in written for value in SECRETS.values())  # the check is not vacuous
    leaked = [name for name, value in SECRETS.items() if value in text]
    assert leaked == [], f"/config shows {leaked}"
    assert "**********" in text
    # Still useful: what is not secret is shown.
    assert gw.servers.mcp.url in text


async def test_metrics_and_log_show_no_secret(gw: Target) -> None:
    # A refused request with a wrong key and a wrong token must not put them in the log either.
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    refused = await send(
        "POST", gw.url + "/v1/chat/completions", headers={"x-api-key": WRONG_KEY}, json_body=chat
    )
    assert refused.status == 401, refused
    assert WRONG_KEY not in refused.body.decode()
    ok = await send(
        "POST",
        gw.url + "/v1/chat/completions",
        headers={"x-api-key": SECRETS["api_key_policy_key"]},
        json_body=chat,
    )
    assert ok.status == 200, ok
    metrics = await send("GET", gw.admin_url + "/metrics")
    assert metrics.status == 200
    found = {**SECRETS, "presented_wrong_key": WRONG_KEY}
    for where, text in (("/metrics", metrics.body.decode()), ("the log", gw.log())):
        leaked = [name for name, value in found.items() if value in text]
        assert leaked == [], f"{where} shows {leaked}"


def _changing_routes(config_path: str) -> list[tuple[str, str]]:
    """(method, path) of every admin route that is not read-only, with its parameters filled."""
    from crossway.config import load_config
    from crossway.server.admin import ConfigView, create_admin_app

    app = create_admin_app(ConfigView(config_path, load_config(config_path)), None)
    found: list[tuple[str, str]] = []
    for route in app.routes:
        path = re.sub(r"\{[^}]+\}", "x", getattr(route, "path", ""))
        for method in sorted(getattr(route, "methods", None) or ()):
            if method not in ("GET", "HEAD", "OPTIONS"):
                found.append((method, path))
    return found


BAD_TOKENS = {
    "none": {},
    "empty_bearer": {"authorization": "Bearer "},
    "wrong_bearer": {"authorization": "Bearer not-the-admin-token"},
    "token_as_basic": {"authorization": "Basic " + "YWRtaW46dG9rZW4="},
    "token_prefix": {"authorization": "Bearer " + SECRETS["admin_token"][:-1]},
    "token_in_x_api_key": {"x-api-key": SECRETS["admin_token"]},
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_changing_admin_routes_refuse_without_the_token(gw: Target, case: str) -> None:
    routes = _changing_routes(gw.config_path)
    assert routes, "expected the admin API's changing routes (tool pins)"
    for method, path in routes:
        for query in ("", f"?token={SECRETS['admin_token']}"):
            answer = await send(
                method, gw.admin_url + path + query, headers=BAD_TOKENS[case], json_body={}
            )
            assert_openai_error(answer, 401, "authentication_error")
            assert_challenge(answer)


async def test_reading_admin_routes_need_the_token_when_one_is_set(gw: Target) -> None:
    answer = await send("GET", gw.admin_url + "/pins")
    assert_openai_error(answer, 401, "authentication_error")
    ok = await send(
        "GET", gw.admin_url + "/pins", headers={"authorization": f"Bearer {SECRETS['admin_token']}"}
    )
    assert ok.status == 200, ok


async def test_changing_admin_routes_accept_the_token(gw: Target) -> None:
    """The control: with the token, the same requests get past the check (to a 4xx about the
    unknown pin, not a 401)."""
    auth = {"authorization": f"Bearer {SECRETS['admin_token']}"}
    for method, path in _changing_routes(gw.config_path):
        answer = await send(method, gw.admin_url + path, headers=auth, json_body={})
        assert answer.status not in (401, 403, 500), (method, path, answer)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_read_only_admin_routes_refuse_writes(gw: Target, method: str) -> None:
    for path in ("/config", "/healthz", "/readyz", "/metrics"):
        answer = await send(method, gw.admin_url + path, json_body={"admin": {"token": "x"}})
        assert answer.status == 405, (path, answer)


async def test_admin_plane_is_not_on_the_data_plane(gw: Target) -> None:
    for path in ("/config", "/pins", "/metrics"):
        answer = await send("GET", gw.url + path)
        assert_openai_error(answer, 404, "not_found_error", "route_not_found")
