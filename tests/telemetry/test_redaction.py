"""The one redaction function: built-in secret rules always apply; configured regex patterns
and JSON field paths mask what they name, and nothing else; bad rules are config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossway.config import ConfigError, load_config
from crossway.telemetry.redaction import MASK, Redactor, redact

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcdefghijklmnop",
        "sk-cw-0123456789abcdef0123",
        "sk-ant-api03-xyzxyzxyzxyz",
        JWT,
        "AKIAABCDEFGHIJKLMNOP",
    ],
)
def test_builtin_patterns_mask_keys_inside_any_string(secret: str) -> None:
    out = redact(f"the key is {secret}, keep it safe")
    assert secret not in out
    assert out == f"the key is {MASK}, keep it safe"


def test_bearer_and_basic_credentials_are_masked() -> None:
    assert redact("Authorization: Bearer abc.def-123") == f"Authorization: {MASK}"
    assert redact("basic dXNlcjpwYXNzd29yZA==") == MASK
    assert redact("a bearer of good news") == "a bearer of good news"


def test_builtin_keys_are_masked_at_any_depth_whatever_the_case() -> None:
    value = {
        "headers": {"Authorization": "token-xyz", "X-Api-Key": "k1", "accept": "json"},
        "items": [{"password": "hunter2", "name": "n"}, {"client_secret": {"nested": 1}}],
        "Cookie": "session=1",
        "usage": {"total_tokens": 5, "max_tokens": 9},
    }
    assert redact(value) == {
        "headers": {"Authorization": MASK, "X-Api-Key": MASK, "accept": "json"},
        "items": [{"password": MASK, "name": "n"}, {"client_secret": MASK}],
        "Cookie": MASK,
        "usage": {"total_tokens": 5, "max_tokens": 9},
    }


def test_configured_patterns_apply_on_top_of_the_builtins() -> None:
    redactor = Redactor(patterns=[r"\b\d{3}-\d{2}-\d{4}\b", "secret-word"])
    out = redactor.value(
        {"text": "ssn 123-45-6789 and secret-word and sk-live-abcdefghijkl", "n": 123}
    )
    assert out == {"text": f"ssn {MASK} and {MASK} and {MASK}", "n": 123}


def test_field_paths_mask_whole_values() -> None:
    redactor = Redactor(
        fields=["messages.*.content", "metadata.user_email", "**.ssn", "choices[0].text"]
    )
    value = {
        "model": "m",
        "messages": [{"role": "user", "content": "private"}, {"role": "system", "content": [1]}],
        "metadata": {"user_email": "a@example.com", "team": "t"},
        "deep": {"deeper": [{"SSN": "x"}]},
        "ssn": "top",
        "choices": [{"text": "first"}, {"text": "second"}],
    }
    assert redactor.value(value) == {
        "model": "m",
        "messages": [{"role": "user", "content": MASK}, {"role": "system", "content": MASK}],
        "metadata": {"user_email": MASK, "team": "t"},
        "deep": {"deeper": [{"SSN": MASK}]},
        "ssn": MASK,
        "choices": [{"text": MASK}, {"text": "second"}],
    }


def test_paths_that_do_not_match_change_nothing_and_the_input_is_not_modified() -> None:
    redactor = Redactor(fields=["a.b.c", "x.*"])
    value = {"a": {"b": "not a map"}, "y": {"z": 1}, "x": "scalar"}
    assert redactor.value(value) == {"a": {"b": "not a map"}, "y": {"z": 1}, "x": "scalar"}
    masked = Redactor(fields=["a.b"]).value(value)
    assert masked["a"]["b"] == MASK
    assert value["a"]["b"] == "not a map"


def test_other_objects_become_redacted_text() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd sk-abcdefghijklmnop"

    assert redact({"v": Odd(), "b": b"bytes", "t": (1, 2)}) == {
        "v": f"odd {MASK}",
        "b": "b'bytes'",
        "t": [1, 2],
    }


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("{patterns: ['(unclosed']}", "invalid regular expression"),
        ("{fields: ['']}", "empty field path"),
        ("{fields: ['$.']}", "empty field path"),
        ("{unknown: 1}", "unknown"),
    ],
)
def test_bad_rules_are_config_errors(tmp_path: Path, rules: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"telemetry:\n  redaction: {rules}\nroutes: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert message in str(info.value).lower() or "extra" in str(info.value).lower()
    assert "telemetry" in str(info.value)
