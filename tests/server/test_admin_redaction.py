"""The admin plane's `/config` never shows a secret (security issue #7, hole 4).

One test per kind of secret-bearing field: each builds a config holding a recognisable secret
and checks the redacted config holds it nowhere, and still shows what is not secret.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from crossway.config import parse_config
from crossway.server.admin import redacted
from tests.helpers import start_gateway

MASK = "**********"
SECRET = "S3CRET-do-not-show-0123456789"


def view(text: str) -> str:
    """The redacted config of `text`, as the JSON text `/config` would carry."""
    return json.dumps(redacted(parse_config(text, env={"SECRET": SECRET})))


def body(text: str) -> dict[str, Any]:
    return redacted(parse_config(text, env={"SECRET": SECRET}))


HTTP_BACKEND = """backends:
  web:
    type: http
    url: http://127.0.0.1:9
    headers:
      Authorization: Bearer ${SECRET}
      x-tenant: acme
"""


def test_http_backend_headers() -> None:
    shown = view(HTTP_BACKEND)
    assert SECRET not in shown
    assert body(HTTP_BACKEND)["backends"]["web"]["headers"]["Authorization"] == MASK


def test_provider_headers_and_credentials() -> None:
    text = """backends:
  llm:
    type: llm
    providers:
      o:
        type: openai
        api_key: ${SECRET}-api
        headers:
          OpenAI-Organization: ${SECRET}-org
      b:
        type: bedrock
        region: us-east-1
        aws_access_key_id: AKIA${SECRET}
        aws_secret_access_key: ${SECRET}-aws
        aws_session_token: ${SECRET}-session
      v:
        type: vertex
        project: p
        service_account_json: '{"private_key": "${SECRET}"}'
"""
    shown = view(text)
    assert SECRET not in shown
    assert '"project": "p"' in shown


def test_redis_url_password() -> None:
    text = """backends:
  llm:
    type: llm
    providers:
      o: {type: openai}
    routing:
      cooldown:
        redis_url: redis://:${SECRET}@127.0.0.1:6379/0
"""
    shown = body(text)["backends"]["llm"]["routing"]["cooldown"]["redis_url"]
    assert shown == f"redis://:{MASK}@127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:${SECRET}@127.0.0.1:9/api", f"http://user:{MASK}@127.0.0.1:9/api"),
        ("http://${SECRET}@127.0.0.1:9", f"http://{MASK}@127.0.0.1:9"),
        (
            "http://127.0.0.1:9/v1?key=${SECRET}&region=eu&X-Amz-Signature=${SECRET}",
            f"http://127.0.0.1:9/v1?key={MASK}&region=eu&X-Amz-Signature={MASK}",
        ),
    ],
)
def test_url_userinfo_and_credential_query_parameters_in_any_url(url: str, expected: str) -> None:
    text = f"backends:\n  web:\n    type: http\n    url: {url}\n"
    assert body(text)["backends"]["web"]["url"] == expected


def test_provider_base_url_query_key() -> None:
    text = """backends:
  llm:
    type: llm
    providers:
      g:
        type: gemini
        base_url: https://generativelanguage.googleapis.com/v1beta?key=${SECRET}
"""
    assert SECRET not in view(text)


STDIO = """backends:
  tools:
    type: mcp
    servers:
      gh:
        type: stdio
        command: github-mcp
        args: [--verbose, "--api-key=${SECRET}", --token, "${SECRET}-2", --port, "9000"]
        env:
          GITHUB_PERSONAL_ACCESS_TOKEN: ${SECRET}
          LOG_LEVEL: ${SECRET}-not-even-this
"""


def test_stdio_env_values_all_hidden() -> None:
    shown = body(STDIO)["backends"]["tools"]["servers"]["gh"]
    assert SECRET not in json.dumps(shown["env"])
    assert shown["env"] == {"GITHUB_PERSONAL_ACCESS_TOKEN": MASK, "LOG_LEVEL": MASK}


def test_stdio_credential_arguments_hidden() -> None:
    shown = body(STDIO)["backends"]["tools"]["servers"]["gh"]
    assert shown["args"] == ["--verbose", f"--api-key={MASK}", "--token", MASK, "--port", "9000"]
    assert SECRET not in view(STDIO)


def test_mcp_server_headers_credentials_and_session_key() -> None:
    text = """backends:
  tools:
    type: mcp
    session_key: ${SECRET}-session-key-long-enough
    servers:
      remote:
        type: streamable_http
        url: http://127.0.0.1:9/mcp
        headers:
          X-Api-Key: ${SECRET}
        credentials:
          client_credentials:
            token_url: http://127.0.0.1:9/token
            client_id: crossway
            client_secret: ${SECRET}-client
      api:
        type: openapi
        spec: http://127.0.0.1:9/openapi.json
        headers:
          Cookie: sid=${SECRET}
"""
    shown = view(text)
    assert SECRET not in shown
    assert '"client_id": "crossway"' in shown


def test_api_keys_of_route_policies() -> None:
    text = """routes:
  - name: r
    backend: web
    policies:
      - type: api_key
        keys:
          team-a: ${SECRET}
backends:
  web:
    type: http
    url: http://127.0.0.1:9
"""
    shown = body(text)
    assert shown["routes"][0]["policies"][0]["keys"] == {"team-a": MASK}


def test_route_match_headers_with_credential_names() -> None:
    text = """routes:
  - name: r
    backend: web
    match:
      headers:
        x-internal-token: ${SECRET}
        x-tenant: acme
backends:
  web:
    type: http
    url: http://127.0.0.1:9
"""
    headers = body(text)["routes"][0]["match"]["headers"]
    assert headers == {"x-internal-token": MASK, "x-tenant": "acme"}


def test_jwt_secret_and_inline_private_jwk() -> None:
    text = """routes:
  - name: r
    backend: web
    policies:
      - type: jwt
        audiences: [crossway]
        algorithms: [HS256, RS256]
        secret: ${SECRET}-hmac-secret-32-characters
        jwks:
          keys:
            - {kty: oct, kid: a, k: "${SECRET}"}
            - {kty: RSA, kid: b, n: public-modulus, e: AQAB, d: "${SECRET}"}
backends:
  web:
    type: http
    url: http://127.0.0.1:9
"""
    shown = view(text)
    assert SECRET not in shown
    assert "public-modulus" in shown


def test_free_form_request_parameters_with_credential_names() -> None:
    text = """backends:
  llm:
    type: llm
    providers:
      o: {type: openai}
    models:
      - name: m
        targets: [{provider: o}]
        overrides:
          metadata: {api_key: "${SECRET}"}
          temperature: 0.5
"""
    shown = view(text)
    assert SECRET not in shown
    assert '"temperature": 0.5' in shown


def test_admin_plane_config_endpoint_end_to_end() -> None:
    config = """
routes:
  - name: r
    backend: web
    policies:
      - type: api_key
        keys:
          team-a: ${SECRET}
backends:
  web:
    type: http
    url: http://user:${SECRET}@127.0.0.1:9
    headers:
      Authorization: Bearer ${SECRET}
  llm:
    type: llm
    providers:
      o:
        type: openai
        api_key: ${SECRET}
        headers: {OpenAI-Organization: "${SECRET}"}
    routing:
      cooldown:
        redis_url: redis://:${SECRET}@127.0.0.1:9/0
  tools:
    type: mcp
    servers:
      local:
        type: stdio
        command: never-started
        env:
          TOKEN: ${SECRET}
"""
    with start_gateway(config, env={"SECRET": SECRET}) as gw:
        with urllib.request.urlopen(gw.admin_url + "/config") as resp:
            text = resp.read().decode()
    assert SECRET not in text
    shown = json.loads(text)["config"]
    assert shown["backends"]["llm"]["routing"]["cooldown"]["redis_url"] == (
        f"redis://:{MASK}@127.0.0.1:9/0"
    )
    assert shown["backends"]["web"]["url"] == f"http://user:{MASK}@127.0.0.1:9"
