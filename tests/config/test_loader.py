"""Config loading: env interpolation, typed validation, errors with key path and line."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from crossway.config import ConfigError, load_config, parse_config
from crossway.config.loader import interpolate

ROOT = Path(__file__).resolve().parents[2]


def test_interpolation_defaults_and_escapes() -> None:
    missing: list[str] = []
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("${A}-${B:-two}-${EMPTY:-x}-$$-${C}", env, missing) == "1-two-x-$-"
    assert missing == ["C"]


def test_valid_config_with_env() -> None:
    cfg = parse_config(
        """
listen:
  port: ${PORT:-9000}
routes:
  - name: api
    match:
      path:
        prefix: /api
      methods: [get, post]
    backend: web
backends:
  web:
    type: http
    url: ${UPSTREAM}
""",
        env={"UPSTREAM": "http://127.0.0.1:1234/"},
    )
    assert cfg.listen.port == 9000
    assert cfg.routes[0].match.methods == ["GET", "POST"]
    assert cfg.backends["web"].url == "http://127.0.0.1:1234"  # type: ignore[union-attr]


def test_errors_name_path_and_line() -> None:
    text = """listen:
  port: 8080
  prot: 1
routes:
  - name: a
    backend: missing
backends:
  b:
    type: http
    url: ftp://nope
  c:
    type: llm
    providers:
      o:
        type: openai
        timeouts:
          connect: -1
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml", env={})
    problems = info.value.problems
    assert "listen.prot (line 3): unknown key" in problems[0]
    assert any(p.startswith("backends.b.url (line 10): url must start with http") for p in problems)
    assert any(p.startswith("backends.c.providers.o.timeouts.connect (line 17)") for p in problems)


def test_reference_errors_have_lines() -> None:
    text = """routes:
  - name: a
    backend: nope
backends:
  b:
    type: http
    url: http://x
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert info.value.problems == ["routes[0].backend (line 3): unknown backend 'nope' (known: b)"]


def test_missing_env_var_is_named() -> None:
    text = "backends:\n  b:\n    type: http\n    url: ${UPSTREAM_URL}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert "UPSTREAM_URL is not set" in info.value.problems[0]
    assert "backends.b.url (line 4)" in info.value.problems[0]


def test_yaml_syntax_error_has_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("routes:\n  - name: [a\n", env={})
    assert "line" in info.value.problems[0] and "YAML syntax error" in info.value.problems[0]


def test_path_match_needs_exactly_one_kind() -> None:
    text = "routes:\n  - name: a\n    backend: b\n    match:\n      path:\n        prefix: /a\n        exact: /b\nbackends:\n  b:\n    type: http\n    url: http://x\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert (
        "routes[0].match.path (line 5): set exactly one of exact, prefix or regex"
        in info.value.problems
    )


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert "cannot read file" in str(info.value)


def test_cli_validate_reports_errors_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen:\n  port: 99999\n")
    out = subprocess.run(
        [sys.executable, "-m", "crossway", "validate", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "listen.port (line 2)" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_examples_validate(example: Path) -> None:
    # Every `${VAR}` without a default is a secret the operator must set (unset, it is an error).
    needed = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", example.read_text())
    load_config(example, env={name: _value_for(name) for name in needed})


def _value_for(name: str) -> str:
    """A plausible value for an environment variable an example needs."""
    if name == "REDIS_URL":
        return "redis://127.0.0.1:6379/0"
    if name.endswith("_ENDPOINTS"):  # an inference pool's comma-separated base URLs
        return "http://127.0.0.1:8001/v1,http://127.0.0.1:8002/v1"
    if name.endswith("_URL"):
        return f"https://{name.lower().replace('_', '-')}.example.test/{secrets.token_hex(4)}"
    return secrets.token_urlsafe(32)


def test_cli_schema_and_version() -> None:
    schema = subprocess.run(
        [sys.executable, "-m", "crossway", "schema"], capture_output=True, text=True, check=True
    ).stdout
    assert '"additionalProperties": false' in schema and "RouteMatch" in schema
    version = subprocess.run(
        [sys.executable, "-m", "crossway", "version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith("crossway ")
