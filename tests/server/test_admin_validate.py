"""`POST /config/validate` and `GET /config/file` on a real admin server (uvicorn, httpx)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from crossway.server.admin_validate import MAX_CONFIG_BYTES, validate_text
from tests.helpers import serve_admin

TOKEN = "h5-validate-admin-token-0123456789"

VALID = """\
admin:
  token: ${H5_ADMIN_TOKEN}
routes:
  - name: llm
    match:
      path: {prefix: /v1}
    backend: llm
backends:
  llm:
    type: llm
    providers:
      sample:
        type: openai_compatible
        base_url: http://127.0.0.1:9/v1
    models:
      - name: sample-model
        targets:
          - provider: sample
"""

# Three problems, on lines 7, 13 and 17: an unknown key, a bad provider type, a bad weight.
THREE_ERRORS = """\
admin:
  token: ${H5_ADMIN_TOKEN}
routes:
  - name: llm
    match:
      path: {prefix: /v1}
    tiemout: 5
    backend: llm
backends:
  llm:
    type: llm
    providers:
      sample: {type: openai_compat, base_url: "http://127.0.0.1:9/v1"}
    models:
      - name: sample-model
        targets:
          - {provider: sample, weight: -1}
"""


@asynccontextmanager
async def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = VALID
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """The admin app under uvicorn on a free loopback port; a client for it and its file."""
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("H5_ADMIN_TOKEN", TOKEN)
    path = tmp_path / "crossway.yaml"
    path.write_text(text)
    async with serve_admin(path) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield client, path


def _auth() -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"}


async def test_a_valid_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with served(tmp_path, monkeypatch) as (client, _path):
        response = await client.post(
            "/config/validate",
            content=VALID,
            headers={**_auth(), "content-type": "application/yaml"},
        )
    assert response.status_code == 200
    assert response.json() == {"valid": True, "errors": []}


async def test_every_error_is_listed_with_its_key_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch) as (client, path):
        before = path.read_bytes()
        response = await client.post("/config/validate", content=THREE_ERRORS, headers=_auth())
        assert path.read_bytes() == before  # never written
    body = response.json()
    assert response.status_code == 200 and body["valid"] is False
    found = {(e["loc"], e["line"]) for e in body["errors"]}
    assert found == {
        ("routes[0].tiemout", 7),
        ("backends.llm.providers.sample.type", 13),
        ("backends.llm.models[0].targets[0].weight", 17),
    }, body
    by_loc = {e["loc"]: e for e in body["errors"]}
    assert by_loc["routes[0].tiemout"]["column"] == 5
    assert "unknown key" in by_loc["routes[0].tiemout"]["message"]
    assert "openai_compatible" in by_loc["backends.llm.providers.sample.type"]["message"]
    assert all(e["message"] and e["column"] for e in body["errors"])


async def test_yaml_syntax_error_has_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch) as (client, _path):
        response = await client.post(
            "/config/validate", content="routes:\n  - name: [a\n    b: c\n", headers=_auth()
        )
    body = response.json()
    assert body["valid"] is False and len(body["errors"]) == 1
    error = body["errors"][0]
    assert error["loc"] == "(syntax)" and error["line"] == 3 and error["column"]
    assert error["message"].startswith("YAML syntax error")


async def test_the_gateway_environment_is_interpolated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch) as (client, _path):
        monkeypatch.delenv("H5_UNSET_TOKEN", raising=False)
        unset = await client.post(
            "/config/validate", content="admin:\n  token: ${H5_UNSET_TOKEN}\n", headers=_auth()
        )
        monkeypatch.setenv("H5_UNSET_TOKEN", "now-it-is-set-0123456789")
        now_set = await client.post(
            "/config/validate", content="admin:\n  token: ${H5_UNSET_TOKEN}\n", headers=_auth()
        )
    [error] = unset.json()["errors"]
    assert error["loc"] == "admin.token" and error["line"] == 2
    assert "H5_UNSET_TOKEN is not set" in error["message"]
    assert now_set.json() == {"valid": True, "errors": []}
    assert "now-it-is-set" not in unset.text + now_set.text


async def test_validation_needs_the_admin_token_and_bounds_the_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch) as (client, _path):
        anonymous = await client.post("/config/validate", content=VALID)
        wrong = await client.post(
            "/config/validate", content=VALID, headers={"authorization": "Bearer nope"}
        )
        big = await client.post(
            "/config/validate", content=b"#" * (MAX_CONFIG_BYTES + 1), headers=_auth()
        )
        binary = await client.post("/config/validate", content=b"\xff\xfe\x00", headers=_auth())
        file_anonymous = await client.get("/config/file")
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert anonymous.json()["error"]["message"]
    assert big.status_code == 413 and "larger than" in big.json()["error"]["message"]
    assert binary.status_code == 400 and "UTF-8" in binary.json()["error"]["message"]
    assert file_anonymous.status_code == 401


async def test_the_file_text_is_given_unless_it_writes_out_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch) as (client, path):
        clean = await client.get("/config/file", headers=_auth())
        # The operator now writes the token itself into the file.
        path.write_text(VALID.replace("${H5_ADMIN_TOKEN}", TOKEN))
        literal = await client.get("/config/file", headers=_auth())
        # A broken file with a literal key is held back too.
        path.write_text("backends:\n  llm:\n    api_key: sk-literal-provider-key\n  [broken\n")
        broken = await client.get("/config/file", headers=_auth())
    assert clean.status_code == 200
    assert clean.json() == {"path": str(path), "text": VALID, "literal_secrets": False}
    assert literal.json()["text"] is None and literal.json()["literal_secrets"] is True
    assert TOKEN not in literal.text
    assert broken.json()["text"] is None and "sk-literal" not in broken.text


def test_keys_with_dots_are_located() -> None:
    text = "backends:\n  llm:\n    type: llm\n    providers: {p: {type: openai}}\n    prices:\n      gpt-4.1: {input: -1, output: 1}\n"
    body = validate_text(text, {})
    [error] = body["errors"]
    assert error["loc"] == "backends.llm.prices.gpt-4.1.input"
    assert error["line"] == 6 and error["column"] == 17
