"""Security issue #7, hole 8: a client must not be able to stop Crossway from getting usage
for a stream (and so from recording its cost).

Whatever the client sends as `stream_options` -- null, `{}`, `include_usage: false`, a
duplicate key, a key spelled with JSON escapes -- the body that reaches an OpenAI-style
upstream holds exactly one `stream_options` with `include_usage: true`, and the tokens are
counted. Values that are not objects are refused with a 400 naming `stream_options`.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.llm.harness import LlmStack
from tests.llm.sse import parse_sse
from tests.mocks.base import Reply

HELLO = [{"role": "user", "content": "hello"}]
MESSAGES = b'[{"role":"user","content":"hello"}]'


def tokens(stack: LlmStack, model: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(stack.metrics()):
        for s in family.samples:
            if (
                s.name == "crossway_llm_tokens_total"
                and s.labels.get("model") == model
                and s.labels.get("kind") == "input"
            ):
                total += s.value
    return total


def post(stack: LlmStack, path: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(
        stack.gateway.url + path, data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def top_level_pairs(body: bytes) -> list[tuple[str, Any]]:
    """Every top-level key/value pair of a JSON object, duplicates included (keys decoded)."""
    pairs: list[list[tuple[str, Any]]] = []

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        pairs.append(items)
        return dict(items)

    json.loads(body, object_pairs_hook=hook)
    return pairs[-1]  # the outermost object is finished last


def assert_one_include_usage(body: bytes) -> None:
    options = [v for k, v in top_level_pairs(body) if k == "stream_options"]
    assert len(options) == 1, body
    assert isinstance(options[0], dict) and options[0].get("include_usage") is True, body


def oai(stack: LlmStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key="x", max_retries=0)


# --- OpenAI Chat, official SDK ---------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-alias", "enriched"])
def test_sdk_stream_options_none_still_counts_usage(stack: LlmStack, model: str) -> None:
    """`extra_body={"stream_options": None}`: passthrough (unmapped name), mapped, enriched."""
    stack.oa.default = Reply(text="a b c", input_tokens=37, output_tokens=3)
    before = tokens(stack, model)
    chunks = list(
        oai(stack).chat.completions.create(
            model=model,
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
            extra_body={"stream_options": None},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b c"
    assert all(c.choices for c in chunks)  # the client did not ask: no usage chunk shown
    assert_one_include_usage(stack.oa.requests[-1].body)
    assert tokens(stack, model) - before == 37


# --- OpenAI Chat, raw bodies -----------------------------------------------------------------

CLIENT_OPTIONS = {
    "null": b'"stream_options":null',
    "empty": b'"stream_options":{}',
    "false": b'"stream_options":{"include_usage":false}',
    "include-null": b'"stream_options":{"include_usage":null}',
    "dup-last-null": b'"stream_options":{"include_usage":true},"stream_options":null',
    "dup-last-true": b'"stream_options":null,"stream_options":{"include_usage":true}',
    "dup-last-false": b'"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}',
    "escaped-null": b'"stream\\u005foptions":null',
    "escaped-dup": b'"stream\\u005foptions":null,"stream_options":{"include_usage":true}',
    "dup-after-messages": b'"stream_options":{"include_usage":true},"x":1,"stream_options":{}',
}
# What the client asked for, as a JSON parser (last key wins) reads its body.
WANTS_USAGE = {"dup-last-true", "escaped-dup"}


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-alias"])
@pytest.mark.parametrize("case", sorted(CLIENT_OPTIONS))
def test_raw_stream_options_forms(stack: LlmStack, model: str, case: str) -> None:
    stack.oa.default = Reply(text="hi there", input_tokens=53, output_tokens=2)
    before = tokens(stack, model)
    body = b'{"model":"%s","messages":%s,"stream":true,%s}' % (
        model.encode(),
        MESSAGES,
        CLIENT_OPTIONS[case],
    )
    status, wire = post(stack, "/v1/chat/completions", body)
    assert status == 200, wire
    assert_one_include_usage(stack.oa.requests[-1].body)
    events = parse_sse(wire)
    assert events[-1] == (None, "[DONE]")
    usage_chunks = [d for _, d in events[:-1] if not d["choices"]]
    assert len(usage_chunks) == (1 if case in WANTS_USAGE else 0)
    assert tokens(stack, model) - before == 53


def test_stream_options_extra_fields_kept_on_the_fast_path(stack: LlmStack) -> None:
    """A body that already asks for usage once goes upstream byte for byte."""
    stack.oa.default = Reply(text="ok", input_tokens=11, output_tokens=1)
    body = (
        b'{"model":"gpt-4o","messages":%s,"stream":true,'
        b'"stream_options":{"include_usage":true,"include_obfuscation":false}}' % MESSAGES
    )
    before = tokens(stack, "gpt-4o")
    status, _ = post(stack, "/v1/chat/completions", body)
    assert status == 200
    assert stack.oa.requests[-1].body == body
    assert tokens(stack, "gpt-4o") - before == 11


def test_rewritten_body_keeps_other_stream_options(stack: LlmStack) -> None:
    stack.oa.default = Reply(text="ok", input_tokens=12, output_tokens=1)
    body = (
        b'{"model":"gpt-4o","messages":%s,"stream":true,'
        b'"stream_options":{"include_usage":false,"include_obfuscation":false}}' % MESSAGES
    )
    status, _ = post(stack, "/v1/chat/completions", body)
    assert status == 200
    sent = stack.oa.requests[-1].body
    assert_one_include_usage(sent)
    assert json.loads(sent)["stream_options"]["include_obfuscation"] is False


@pytest.mark.parametrize(
    ("value", "param"),
    [
        (b"5", "stream_options"),
        (b'"yes"', "stream_options"),
        (b"[]", "stream_options"),
        (b"true", "stream_options"),
        (b'{"include_usage":"yes"}', "stream_options.include_usage"),
    ],
)
def test_non_object_stream_options_is_400(stack: LlmStack, value: bytes, param: str) -> None:
    body = b'{"model":"gpt-4o","messages":%s,"stream":true,"stream_options":%s}' % (
        MESSAGES,
        value,
    )
    status, answer = post(stack, "/v1/chat/completions", body)
    assert status == 400
    error = json.loads(answer)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert not stack.oa.requests  # nothing went upstream


def test_non_streamed_request_untouched(stack: LlmStack) -> None:
    """Without `stream` the answer carries usage anyway: the bytes pass as they are."""
    stack.oa.default = Reply(text="ok", input_tokens=14, output_tokens=1)
    body = b'{"model":"gpt-4o","messages":%s}' % MESSAGES
    before = tokens(stack, "gpt-4o")
    status, _ = post(stack, "/v1/chat/completions", body)
    assert status == 200
    assert stack.oa.requests[-1].body == body
    assert tokens(stack, "gpt-4o") - before == 14


# --- the other APIs --------------------------------------------------------------------------


def test_anthropic_messages_to_openai_counts_usage(stack: LlmStack) -> None:
    """Messages client, OpenAI provider: the translation asks for usage itself; a client's
    `stream_options` (not a Messages field) cannot reach the chat body."""
    stack.oa.default = Reply(text="hey", input_tokens=61, output_tokens=1)
    before = tokens(stack, "gpt-4o")
    c = anthropic.Anthropic(base_url=stack.gateway.url, api_key="x", max_retries=0)
    with c.messages.stream(
        model="gpt-4o",
        max_tokens=20,
        messages=HELLO,  # type: ignore[arg-type]
        extra_body={"stream_options": None},
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "hey"  # type: ignore[union-attr]
    assert_one_include_usage(stack.oa.requests[-1].body)
    assert tokens(stack, "gpt-4o") - before == 61


def test_responses_passthrough_counts_usage(stack: LlmStack) -> None:
    """Responses client, OpenAI provider: usage arrives in `response.completed` whatever the
    client sends."""
    stack.oa.default = Reply(text="yo", input_tokens=67, output_tokens=1)
    before = tokens(stack, "gpt-4o")
    events = list(
        oai(stack).responses.create(
            model="gpt-4o", input="hello", stream=True, extra_body={"stream_options": None}
        )
    )
    assert events[-1].type == "response.completed"
    assert tokens(stack, "gpt-4o") - before == 67


@pytest.mark.parametrize("value", [b"1", b'"true"', b"{}"])
def test_responses_and_messages_refuse_a_non_boolean_stream(stack: LlmStack, value: bytes) -> None:
    """`stream` must be read the same way by Crossway and by the upstream: a truthy non-boolean
    could make one side stream and the other not."""
    status, answer = post(
        stack, "/v1/responses", b'{"model":"gemini-2.5-flash","input":"hi","stream":%s}' % value
    )
    assert status == 400, answer
    assert json.loads(answer)["error"]["param"] == "stream"
    status, answer = post(
        stack,
        "/v1/messages",
        b'{"model":"gpt-4o","max_tokens":5,"messages":%s,"stream":%s}' % (MESSAGES, value),
    )
    assert status == 400, answer
    assert json.loads(answer)["error"]["type"] == "invalid_request_error"
