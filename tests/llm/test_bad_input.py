"""Nothing a client sends crashes a worker: malformed requests to every LLM endpoint get a 4xx in
the caller's format, and the gateway keeps serving."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.llm.harness import LlmStack

GARBAGE_VALUES: list[object] = [None, 1, -1, 1.5, "x", True, [], {}, [1], [{}], {"type": 1}, [[[]]]]

CHAT = {"model": "claude-3-5-sonnet-20241022", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "gemini-2.5-flash", "input": "hi"}
EMBEDDINGS = {"model": "embed", "input": "hi"}


def post(stack: LlmStack, path: str, body: bytes) -> tuple[int, object]:
    req = urllib.request.Request(
        stack.gateway.url + path, data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
            if "event-stream" in resp.headers.get("content-type", ""):
                return resp.status, data  # a stream (`stream: true` is a valid mutation)
            return resp.status, json.loads(data or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def mutations(base: dict[str, object]) -> list[dict[str, object]]:
    out = []
    for key in base:
        for value in GARBAGE_VALUES:
            out.append({**base, key: value})
    for value in GARBAGE_VALUES:
        out.append({**base, "messages": [{"role": "user", "content": value}]})
        out.append(
            {**base, "messages": [{"role": "user", "content": [{"type": "text", "text": value}]}]}
        )
        out.append({**base, "tools": value})
        out.append({**base, "tools": [{"type": "function", "function": value}]})
        out.append({**base, "tool_choice": value})
        out.append({**base, "stream": value})
        out.append({**base, "input": [{"type": "function_call", "call_id": value, "name": value}]})
    return out


@pytest.mark.parametrize(
    ("path", "base", "anthropic_shape"),
    [
        ("/v1/chat/completions", CHAT, False),
        ("/v1/messages", MESSAGES, True),
        ("/v1/messages/count_tokens", MESSAGES, True),
        ("/v1/responses", RESPONSES, False),
        ("/v1/embeddings", EMBEDDINGS, False),
    ],
)
def test_malformed_requests_get_4xx_in_the_callers_format(
    stack: LlmStack, path: str, base: dict[str, object], anthropic_shape: bool
) -> None:
    bodies = [b"", b"{", b"[]", b"null", b'"x"', b"\xff\xfe", b'{"model": null}']
    bodies += [json.dumps(m).encode() for m in mutations(base)]
    for body in bodies:
        status, answer = post(stack, path, body)
        assert status < 500, (body, status, answer)
        if status >= 400:
            assert isinstance(answer, dict)
            if anthropic_shape:
                assert answer["type"] == "error" and answer["error"]["message"], body
            else:
                assert answer["error"]["message"], body
    status, _ = post(stack, path, json.dumps(base).encode())
    assert status == 200
