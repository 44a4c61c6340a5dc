"""`type: mcp` config: bad keys and values are reported with their path."""

from __future__ import annotations

import pytest

from crossway.config.loader import ConfigError, parse_config


def config(servers: str, extra: str = "") -> str:
    return f"""
routes:
  - {{name: mcp, backend: tools}}
backends:
  tools:
    type: mcp
    {extra}
    servers:
      {servers}
"""


def test_a_valid_config_parses_with_defaults() -> None:
    cfg = parse_config(config("a: {type: stdio, command: x}"), "t.yaml", env={})
    backend = cfg.backends["tools"]
    assert backend.type == "mcp"
    assert backend.separator == "_" and backend.fail_closed is False  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("servers", "extra", "expected"),
    [
        ("bad_name: {type: stdio, command: x}", "", "bad_name"),
        ("a: {type: carrier-pigeon, url: x}", "", "type"),
        ("a: {type: streamable_http, url: ftp://x}", "", "http"),
        ("a: {type: stdio, command: x, comand: y}", "", "comand"),
        ("a: {type: stdio, command: x}", "separator: '.'", "separator"),
        ("my-server: {type: stdio, command: x}", "separator: '-'", "separator"),
        ("a: {type: stdio, command: x, isolation: sometimes}", "", "isolation"),
    ],
)
def test_bad_configs_name_the_key(servers: str, extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(servers, extra), "t.yaml", env={})
    assert expected in str(caught.value)
    assert "backends" in str(caught.value)


def test_fail_closed_has_a_camel_case_alias() -> None:
    cfg = parse_config(config("a: {type: stdio, command: x}", "failClosed: true"), "t.yaml", env={})
    assert cfg.backends["tools"].fail_closed is True  # type: ignore[union-attr]
