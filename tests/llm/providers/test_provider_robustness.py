"""Whatever an upstream sends, translators fail only with gateway errors (which the backend turns
into a clean error for the client), never with a stray KeyError or TypeError."""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson
import pytest

from crossway.config.llm import ProviderConfig
from crossway.errors import GatewayError
from crossway.llm.providers import build_provider
from crossway.llm.providers.base import Provider, StreamTranslator
from tests.mocks import anthropic as am
from tests.mocks import bedrock as bm
from tests.mocks import gemini as gm
from tests.mocks.base import Reply, ToolCall

PROVIDERS: dict[str, Callable[[], Provider]] = {
    "anthropic": lambda: build_provider(
        "a", ProviderConfig.model_validate({"type": "anthropic", "api_key": "k"})
    ),
    "gemini": lambda: build_provider(
        "g", ProviderConfig.model_validate({"type": "gemini", "api_key": "k"})
    ),
    "bedrock": lambda: build_provider(
        "b",
        ProviderConfig.model_validate({"type": "bedrock", "region": "us-east-1", "api_key": "k"}),
    ),
    "vertex": lambda: build_provider(
        "v", ProviderConfig.model_validate({"type": "vertex", "project": "p", "api_key": "t"})
    ),
}
REPLY = Reply(
    text="Hello there, friend", thinking="hmm", tool_calls=[ToolCall("f", {"a": [1, 2]})], pieces=3
)
STREAMS = {
    "anthropic": b"".join(am.stream_events(REPLY, "c")),
    "gemini": b"".join(gm.stream_events(REPLY, "g")),
    "bedrock": b"".join(bm.stream_events(REPLY)),
    "vertex": b"".join(am.stream_events(REPLY, "c")),
}
WEIRD_VALUES = [None, 1, "x", [], {}, [1], {"a": None}, True]


def mutate_json(value: object, rng: random.Random) -> object:
    """`value` with one nested value replaced by something of another type."""
    if isinstance(value, dict) and value:
        key = rng.choice(list(value))
        if rng.random() < 0.4:
            return {**value, key: rng.choice(WEIRD_VALUES)}
        return {**value, key: mutate_json(value[key], rng)}
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        copy = list(value)
        copy[i] = mutate_json(value[i], rng) if rng.random() < 0.6 else rng.choice(WEIRD_VALUES)
        return copy
    return rng.choice(WEIRD_VALUES)


def drain(translator: StreamTranslator, data: bytes, rng: random.Random) -> None:
    i = 0
    while i < len(data):
        step = rng.randint(1, 64)
        translator.feed(data[i : i + step])
        i += step
    translator.close()


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_corrupted_stream_bytes_raise_gateway_errors_only(name: str) -> None:
    rng = random.Random(name)
    data = STREAMS[name]
    provider = PROVIDERS[name]()
    drain(provider.chat_stream("m"), data, rng)  # the intact stream translates
    for _ in range(300):
        broken = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        cut = bytes(broken[: rng.randint(0, len(broken))]) if rng.random() < 0.3 else bytes(broken)
        try:
            drain(provider.chat_stream("m"), cut, rng)
        except GatewayError:
            pass


@pytest.mark.parametrize("name", ["anthropic", "gemini", "bedrock"])
def test_odd_json_events_raise_gateway_errors_only(name: str) -> None:
    rng = random.Random(name + "json")
    provider = PROVIDERS[name]()
    if name == "bedrock":
        events = [(kind, payload) for kind, payload in _bedrock_events()]
    for _ in range(300):
        translator = provider.chat_stream("m")
        try:
            if name == "anthropic":
                for frame in am.stream_events(REPLY, "c"):
                    head, _, payload = frame.partition(b"data: ")
                    odd = (
                        mutate_json(orjson.loads(payload), rng)
                        if rng.random() < 0.3
                        else orjson.loads(payload)
                    )
                    translator.feed(head + b"data: " + orjson.dumps(odd) + b"\n\n")
            elif name == "gemini":
                for frame in gm.stream_events(REPLY, "g"):
                    payload = orjson.loads(frame[6:])
                    odd = mutate_json(payload, rng) if rng.random() < 0.3 else payload
                    translator.feed(b"data: " + orjson.dumps(odd) + b"\r\n\r\n")
            else:
                for kind, payload in events:
                    odd = mutate_json(payload, rng) if rng.random() < 0.3 else payload
                    translator.feed(bm.event(kind, odd if isinstance(odd, dict) else {"x": odd}))
            translator.close()
        except GatewayError:
            pass


def _bedrock_events() -> list[tuple[str, dict[str, object]]]:
    from crossway.llm.providers.eventstream import EventStreamDecoder

    out = []
    for message in EventStreamDecoder().feed(b"".join(bm.stream_events(REPLY))):
        out.append((message.event_type, orjson.loads(message.payload)))
    return out


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_odd_answers_and_errors_raise_gateway_errors_only(name: str) -> None:
    rng = random.Random(name + "answer")
    provider = PROVIDERS[name]()
    good = {
        "anthropic": am.message(REPLY, "c"),
        "vertex": am.message(REPLY, "c"),
        "gemini": gm.response(REPLY, "g"),
        "bedrock": {
            "output": {"message": {"role": "assistant", "content": bm.content_blocks(REPLY)}},
            "stopReason": "end_turn",
            "usage": bm.usage(REPLY),
        },
    }[name]
    for _ in range(300):
        odd = mutate_json(good, rng)
        try:
            provider.chat_response(orjson.dumps(odd))
        except GatewayError:
            pass
        error = provider.error(rng.choice([400, 429, 500, 529]), {}, orjson.dumps(odd))
        assert isinstance(error, GatewayError) and error.message


def test_empty_assistant_turns_are_left_out() -> None:
    from crossway.llm.providers import anthropic, converse, gemini

    body = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": None},
            {"role": "assistant", "content": "ok"},
        ]
    }
    assert [m["role"] for m in anthropic.translate_request(body, "m", False, 10)["messages"]] == [
        "user",
        "assistant",
    ]
    assert am.validate(anthropic.translate_request(body, "m", False, 10)) is None
    assert [c["role"] for c in gemini.translate_request(body)["contents"]] == ["user", "model"]
    assert bm.validate(converse.translate_request(body)) is None


def test_thinking_turns_round_trip() -> None:
    """A thinking answer, sent back as history, reaches Anthropic and Bedrock with its signature."""
    from crossway.llm.providers import anthropic, converse

    answer = anthropic.translate_response(am.message(REPLY, "c"), "c")["choices"][0]["message"]
    history = {
        "messages": [
            {"role": "user", "content": "q"},
            answer,
            {"role": "tool", "tool_call_id": answer["tool_calls"][0]["id"], "content": "42"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
    }
    sent = anthropic.translate_request(history, "m", False, 100)
    assert sent["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "hmm",
        "signature": "sig-3",
    }
    assert am.validate(sent) is None
    bedrock = converse.translate_request(history)
    assert bedrock["messages"][1]["content"][0] == {
        "reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig-3"}}
    }
    assert bm.validate(bedrock) is None


def test_gemini_streams_several_candidates() -> None:
    from crossway.llm.providers.gemini import GeminiStreamTranslator

    events = [
        {
            "candidates": [
                {"index": 0, "content": {"parts": [{"text": "A1"}]}},
                {"index": 1, "content": {"parts": [{"text": "B1"}]}},
            ]
        },
        {
            "candidates": [
                {"index": 0, "content": {"parts": [{"text": "A2"}]}, "finishReason": "STOP"},
                {"index": 1, "content": {"parts": [{"text": "B2"}]}, "finishReason": "MAX_TOKENS"},
            ],
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": 4,
                "totalTokenCount": 7,
            },
        },
    ]
    translator = GeminiStreamTranslator("m")
    chunks = (
        translator.feed(b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events))
        + translator.close()
    )
    text: dict[int, str] = {}
    finish: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            text[choice["index"]] = text.get(choice["index"], "") + (
                choice["delta"].get("content") or ""
            )
            if choice["finish_reason"]:
                finish[choice["index"]] = choice["finish_reason"]
    assert text == {0: "A1A2", 1: "B1B2"} and finish == {0: "stop", 1: "length"}
    assert chunks[-1]["usage"]["total_tokens"] == 7
