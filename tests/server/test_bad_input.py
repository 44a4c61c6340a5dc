"""Nothing a client sends crashes the gateway or earns a traceback: every malformed request on
every surface gets a 4xx with an error body in that surface's own format."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import Gateway, start_gateway

CONFIG = """
routes:
  - name: llm
    match:
      path:
        prefix: /v1
    backend: llm
backends:
  llm:
    type: llm
    providers:
      sample:
        type: openai_compatible
        base_url: {upstream}
"""

GARBAGE: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"42",
    b'"text"',
    b"{",
    b"\xff\xfe\x00garbage",
    b'{"model": 5}',
    b'{"model": null, "messages": "x"}',
    b'{"model": "sample-model", "messages": 7}',
    b'{"model": "sample-model", "messages": [7, null, "x"]}',
    b'{"model": "sample-model", "messages": [{"role": 3}]}',
    b'{"model": "sample-model", "stream": "yes", "messages": []}',
    b'{"model": "sample-model", "messages": [{"role": "user", "content": {"deep": [[[]]]}}]}',
    b'{"model": ["a"], "input": {"x": 1}}',
    json.dumps(
        {"model": "sample-model", "messages": [{"role": "user", "content": "x"}], "tools": "nope"}
    ).encode(),
]


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def gateway(sample_openai_module: str) -> Iterator[Gateway]:
    with start_gateway(CONFIG.format(upstream=sample_openai_module)) as gw:
        yield gw


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/responses"])
@pytest.mark.parametrize("body", GARBAGE, ids=range(len(GARBAGE)))
def test_openai_surfaces_answer_bad_input_in_openai_shape(
    gateway: Gateway, path: str, body: bytes
) -> None:
    status, raw = post(gateway.url + path, body, {"content-type": "application/json"})
    assert 400 <= status < 500, (status, raw[:300])
    error = json.loads(raw)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in raw.decode("utf-8", "replace")


@pytest.mark.parametrize("body", GARBAGE, ids=range(len(GARBAGE)))
def test_anthropic_surface_answers_bad_input_in_anthropic_shape(
    gateway: Gateway, body: bytes
) -> None:
    status, raw = post(
        gateway.url + "/v1/messages",
        body,
        {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "k"},
    )
    assert 400 <= status < 500, (status, raw[:300])
    data = json.loads(raw)
    assert data["type"] == "error" and data["error"]["message"]


def test_gateway_still_serves_after_garbage(gateway: Gateway) -> None:
    for body in GARBAGE:
        post(gateway.url + "/v1/chat/completions", body, {"content-type": "application/json"})
    assert gateway.proc.poll() is None
    status, raw = post(
        gateway.url + "/v1/chat/completions",
        b'{"model": "sample-model", "messages": [{"role": "user", "content": "still here"}]}',
        {"content-type": "application/json"},
    )
    assert status == 200 and b"You said: still here" in raw
    assert "Traceback" not in gateway.log()
