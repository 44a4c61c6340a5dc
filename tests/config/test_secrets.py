"""Secrets in config: a `${VAR}` left unset in a secret field, empty secrets and weak API keys
are config errors that name the key, the line and the variable (security issue #7, hole 2)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from crossway.config import ConfigError, parse_config
from crossway.config.policy import MIN_API_KEY_LENGTH, ApiKeyAuth

STRONG = "k" * MIN_API_KEY_LENGTH

API_KEY_CONFIG = """listen:
  port: 8080
routes:
  - name: api
    backend: web
    policies:
      - type: api_key
        keys:
          team-a: ${TEAM_A_KEY}
backends:
  web:
    type: http
    url: http://127.0.0.1:9
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml", env={} if env is None else env)
    return info.value.problems


def test_unset_api_key_variable_is_an_error_naming_key_line_and_variable() -> None:
    assert problems_of(API_KEY_CONFIG) == [
        "routes[0].policies[0].keys.team-a (line 9): environment variable TEAM_A_KEY is not set"
    ]


def test_api_key_variable_set_to_empty_is_refused() -> None:
    (problem,) = problems_of(API_KEY_CONFIG, env={"TEAM_A_KEY": ""})
    assert problem.startswith("routes[0].policies[0].keys (line 8): ")
    assert "team-a" in problem


def test_set_api_key_variable_loads() -> None:
    cfg = parse_config(API_KEY_CONFIG, env={"TEAM_A_KEY": STRONG})
    assert cfg.routes[0].policies[0].keys["team-a"].get_secret_value() == STRONG


def test_cli_validate_exits_2_on_unset_secret_variable(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(API_KEY_CONFIG)
    env = {k: v for k, v in os.environ.items() if k != "TEAM_A_KEY"}
    out = subprocess.run(
        [sys.executable, "-m", "crossway", "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert out.returncode == 2, out.stdout
    assert (
        "routes[0].policies[0].keys.team-a (line 9): environment variable TEAM_A_KEY is not set"
        in out.stderr
    )
    assert "Traceback" not in out.stderr


MCP_CONFIG = """backends:
  tools:
    type: mcp
    session_key: ${SESSION_KEY}
    servers:
      remote:
        type: streamable_http
        url: http://127.0.0.1:9/mcp
        headers:
          Authorization: Bearer ${REMOTE_TOKEN}
        credentials:
          client_credentials:
            token_url: http://127.0.0.1:9/token
            client_id: crossway
            client_secret: ${CLIENT_SECRET}
      local:
        type: stdio
        command: server
        env:
          GITHUB_TOKEN: ${GITHUB_TOKEN}
"""


def test_unset_variables_in_nested_secret_fields_are_found_by_type() -> None:
    # Field names differ (session_key, headers, client_secret, env): they are found by their
    # types, inside a discriminated union of backends and one of servers.
    assert problems_of(MCP_CONFIG) == [
        "backends.tools.session_key (line 4): environment variable SESSION_KEY is not set",
        "backends.tools.servers.remote.headers.Authorization (line 10): "
        "environment variable REMOTE_TOKEN is not set",
        "backends.tools.servers.remote.credentials.client_credentials.client_secret (line 15): "
        "environment variable CLIENT_SECRET is not set",
        "backends.tools.servers.local.env.GITHUB_TOKEN (line 20): "
        "environment variable GITHUB_TOKEN is not set",
    ]


def test_unset_variable_in_secret_that_would_be_dropped_is_still_an_error() -> None:
    # An empty AWS key means "use botocore's chain": `${VAR}` unset must not silently mean that.
    text = """backends:
  llm:
    type: llm
    providers:
      aws:
        type: bedrock
        region: us-east-1
        aws_access_key_id: ${AWS_KEY_ID}
        aws_secret_access_key: ${AWS_SECRET}
"""
    assert problems_of(text) == [
        "backends.llm.providers.aws.aws_access_key_id (line 8): "
        "environment variable AWS_KEY_ID is not set",
        "backends.llm.providers.aws.aws_secret_access_key (line 9): "
        "environment variable AWS_SECRET is not set",
    ]


def test_provider_secrets_headers_and_redis_url() -> None:
    text = """backends:
  llm:
    type: llm
    providers:
      o:
        type: openai
        api_key: ${OPENAI_KEY}
        headers:
          OpenAI-Organization: ${ORG}
    routing:
      cooldown:
        redis_url: redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0
  web:
    type: http
    url: http://127.0.0.1:9
    headers:
      x-upstream-token: ${UPSTREAM_TOKEN}
"""
    assert problems_of(text) == [
        "backends.llm.providers.o.api_key (line 7): environment variable OPENAI_KEY is not set",
        "backends.llm.providers.o.headers.OpenAI-Organization (line 9): "
        "environment variable ORG is not set",
        "backends.llm.routing.cooldown.redis_url (line 12): "
        "environment variable REDIS_PASSWORD is not set",
        "backends.web.headers.x-upstream-token (line 17): "
        "environment variable UPSTREAM_TOKEN is not set",
    ]


def test_several_missing_variables_in_one_secret() -> None:
    text = API_KEY_CONFIG.replace("${TEAM_A_KEY}", "${PART_A}${PART_B}")
    assert problems_of(text) == [
        "routes[0].policies[0].keys.team-a (line 9): "
        "environment variables PART_A, PART_B are not set"
    ]


def test_missing_secret_reported_with_other_errors() -> None:
    text = API_KEY_CONFIG.replace("port: 8080", "port: 99999")
    problems = problems_of(text)
    assert problems[0] == (
        "routes[0].policies[0].keys.team-a (line 9): environment variable TEAM_A_KEY is not set"
    )
    assert problems[1].startswith("listen.port (line 2):")
    assert len(problems) == 2


def test_default_makes_a_secret_variable_optional_where_empty_means_unset() -> None:
    text = """backends:
  llm:
    type: llm
    providers:
      o:
        type: openai_compatible
        base_url: http://127.0.0.1:9/v1
        api_key: ${OPENAI_API_KEY:-}
"""
    cfg = parse_config(text, env={})
    assert cfg.backends["llm"].providers["o"].api_key is None  # type: ignore[union-attr]


def test_non_secret_fields_keep_empty_string_behaviour() -> None:
    text = """backends:
  tools:
    type: mcp
    instructions: ${INSTRUCTIONS}
    servers:
      s:
        type: stdio
        command: server
"""
    cfg = parse_config(text, env={})
    assert cfg.backends["tools"].instructions == ""  # type: ignore[union-attr]
    bad = "backends:\n  b:\n    type: http\n    url: ${UPSTREAM_URL}\n"
    (problem,) = problems_of(bad)
    assert problem.startswith("backends.b.url (line 4): url must start with http")
    assert "environment variable UPSTREAM_URL is not set" in problem


def test_empty_secret_is_refused() -> None:
    text = MCP_CONFIG.replace("${CLIENT_SECRET}", '""')
    env = {"SESSION_KEY": "s" * 40, "REMOTE_TOKEN": "t", "GITHUB_TOKEN": "g"}
    assert problems_of(text, env) == [
        "backends.tools.servers.remote.credentials.client_credentials.client_secret (line 15): "
        "secret is empty"
    ]


def test_empty_secret_in_a_map_of_secrets_is_refused() -> None:
    text = (
        "backends:\n  tools:\n    type: mcp\n    servers:\n      r:\n        type: sse\n"
        '        url: http://127.0.0.1:9/sse\n        headers: {Authorization: ""}\n'
    )
    assert problems_of(text) == [
        "backends.tools.servers.r.headers (line 8): secret 'Authorization' is empty"
    ]


def test_empty_secret_refused_in_python_construction_too() -> None:
    with pytest.raises(ValueError, match="empty"):
        ApiKeyAuth(type="api_key", keys={"a": SecretStr("")})


def test_short_api_key_refused_without_echoing_it() -> None:
    text = API_KEY_CONFIG.replace("${TEAM_A_KEY}", "short-key-9")
    (problem,) = problems_of(text)
    assert problem.startswith("routes[0].policies[0].keys (line 8):")
    assert "team-a" in problem and str(MIN_API_KEY_LENGTH) in problem
    assert "short-key-9" not in problem


def test_sixteen_character_key_and_prehashed_key_accepted() -> None:
    digest = hashlib.sha256(b"a long caller key value").hexdigest()
    keys = {"a": "x" * MIN_API_KEY_LENGTH, "b": f"sha256:{digest}"}
    auth = ApiKeyAuth.model_validate({"type": "api_key", "keys": keys})
    assert auth.keys["b"].get_secret_value() == f"sha256:{digest}"


@pytest.mark.parametrize(
    "bad", ["sha256:abc", "sha256:" + "g" * 64, "sha256:" + "a" * 63, "sha256:" + "a" * 65]
)
def test_malformed_prehashed_key_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        ApiKeyAuth.model_validate({"type": "api_key", "keys": {"a": bad}})


def test_errors_never_echo_secret_input() -> None:
    with pytest.raises(ValueError) as info:
        ApiKeyAuth.model_validate({"type": "api_key", "keys": {"a": "tiny-secret-value"[:9]}})
    assert "tiny-secr" not in str(info.value)


def test_secret_detection_walks_annotations_not_names() -> None:
    from crossway.config.secrets import is_secret_path

    class Inner(BaseModel):
        odd_name: SecretStr | None = None
        plain: str = ""

    class Outer(BaseModel):
        items: list[Inner] = []
        by_name: dict[str, Inner] = {}
        bag: dict[str, list[SecretStr]] = {}

    assert is_secret_path(Outer, ("items", 0, "odd_name"), {})
    assert is_secret_path(Outer, ("by_name", "x", "odd_name"), {})
    assert is_secret_path(Outer, ("bag", "x", 2), {})
    assert not is_secret_path(Outer, ("items", 0, "plain"), {})
    assert not is_secret_path(Outer, ("nope",), {})
