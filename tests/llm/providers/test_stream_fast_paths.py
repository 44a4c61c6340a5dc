"""The translated streams' fast paths (text deltas as strings, written from a template) give the
same bytes as building every chunk dict and serializing it."""

from __future__ import annotations

import orjson
import pytest

from crossway.llm.answers import ChatTranslated
from crossway.llm.api.sse import DONE, data_event
from crossway.llm.providers.anthropic import AnthropicStreamTranslator
from crossway.llm.providers.base import Json, StreamTranslator
from crossway.llm.providers.converse import BedrockStreamTranslator
from crossway.llm.providers.eventstream import encode_message

TEXTS = ["Hello", "", 'quote " and \\ backslash', "line\nbreak\ttab", "é ü 漢字 🙂", "\u2028\x00"]


def anthropic_stream() -> bytes:
    def event(name: str, data: Json) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    out = [
        event(
            "message_start",
            {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3}}},
        ),
        event("content_block_start", {"type": "content_block_start", "index": 0}),
        event("ping", {"type": "ping"}),
    ]
    for text in TEXTS:
        delta = {"type": "text_delta", "text": text}
        out.append(
            event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        )
    # Odd shapes take the general path: no text, a number, the event's own type differing.
    out.append(
        event(
            "content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta"}}
        )
    )
    out.append(event("content_block_delta", {"type": "ping"}))
    out.append(
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 5},
            },
        )
    )
    out.append(event("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def bedrock_stream() -> bytes:
    def event(name: str, data: Json) -> bytes:
        return encode_message({":event-type": name, ":message-type": "event"}, orjson.dumps(data))

    out = [event("messageStart", {"role": "assistant"})]
    out += [
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}}) for t in TEXTS
    ]
    out.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": 7}}))
    out.append(event("messageStop", {"stopReason": "end_turn"}))
    out.append(event("metadata", {"usage": {"inputTokens": 3, "outputTokens": 5}}))
    return b"".join(out)


def slow_path(translator: StreamTranslator, data: bytes, model: str) -> bytes:
    """What the relay wrote before the fast path: every chunk a dict, serialized."""
    out = []
    for chunk in translator.feed(data) + translator.close():
        if chunk.get("usage") and not chunk.get("choices"):
            continue
        chunk["model"] = model
        out.append(data_event(chunk))
    return b"".join(out) + DONE


@pytest.mark.parametrize("kind", ["anthropic", "bedrock"])
@pytest.mark.parametrize("piece", [0, 1, 13, 64])
def test_template_bytes_match_serialized_chunks(kind: str, piece: int) -> None:
    data = anthropic_stream() if kind == "anthropic" else bedrock_stream()
    make = AnthropicStreamTranslator if kind == "anthropic" else BedrockStreamTranslator
    fast_translator = make("client-model")
    relay = ChatTranslated(fast_translator, "client-model", True)
    pieces = [data] if not piece else [data[i : i + piece] for i in range(0, len(data), piece)]
    fast = b"".join(relay.feed(p) for p in pieces) + relay.finish()

    slow_translator = make("client-model")
    assert slow_translator.chunks is not None and fast_translator.chunks is not None
    slow_translator.chunks.id = fast_translator.chunks.id if kind == "bedrock" else "x"
    slow_translator.chunks.created = fast_translator.chunks.created
    assert fast == slow_path(slow_translator, data, "client-model")
    texts = [
        orjson.loads(line[6:])["choices"][0]["delta"].get("content")
        for line in fast.split(b"\n\n")
        if line.startswith(b"data: {") and b'"choices":[{' in line
    ]
    assert all(t in texts for t in TEXTS)
    if kind == "anthropic":
        assert b'"id":"msg_1"' in fast and fast.count(b'"id":"msg_1"') == fast.count(b'"id":')
    assert relay.usage is not None and relay.usage.output_tokens == 5


def test_feed_still_gives_dicts() -> None:
    chunks = BedrockStreamTranslator("m").feed(bedrock_stream())
    assert all(isinstance(c, dict) for c in chunks)
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hello"}
    chunks = AnthropicStreamTranslator("m").feed(anthropic_stream())
    assert all(isinstance(c, dict) for c in chunks)
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hello"}
