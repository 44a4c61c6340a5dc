"""Bedrock provider: event-stream decoding, Converse translation, SigV4 against the mock."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator

import orjson
import pytest
from botocore.eventstream import EventStreamBuffer

from crossway.config.llm import ProviderConfig
from crossway.errors import BadRequest, Forbidden, GatewayError, RateLimited, UpstreamError
from crossway.llm.providers import build_provider
from crossway.llm.providers.bedrock import BedrockProvider
from crossway.llm.providers.converse import (
    BedrockStreamTranslator,
    translate_request,
    translate_response,
)
from crossway.llm.providers.eventstream import EventStreamDecoder, EventStreamError, encode_message
from tests.mocks import bedrock as mock
from tests.mocks.base import Reply, ToolCall
from tests.mocks.client import call, joined

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
async def bedrock_mock() -> AsyncIterator[mock.BedrockMock]:
    async with mock.start_bedrock_mock() as server:
        yield server


def provider(server: mock.BedrockMock, **extra: object) -> BedrockProvider:
    cfg: dict[str, object] = {
        "type": "bedrock",
        "base_url": server.url,
        "region": mock.REGION,
        "aws_access_key_id": mock.ACCESS_KEY,
        "aws_secret_access_key": mock.SECRET_KEY,
        **extra,
    }
    p = build_provider("bedrock", ProviderConfig.model_validate(cfg))
    assert isinstance(p, BedrockProvider)
    return p


# --- event stream framing -----------------------------------------------------------------------


def test_decoder_matches_botocore_on_split_frames() -> None:
    frames = b"".join(
        encode_message(
            {":event-type": f"e{i}", ":message-type": "event"}, orjson.dumps({"i": i, "t": "é" * i})
        )
        for i in range(20)
    )
    ours = EventStreamDecoder()
    got = []
    for i in range(len(frames)):
        got.extend(ours.feed(frames[i : i + 1]))
    reference = EventStreamBuffer()
    reference.add_data(frames)
    expected = [(m.headers, m.payload) for m in reference]
    assert [(m.headers, m.payload) for m in got] == expected
    assert ours.pending == 0


def test_decoder_reads_every_header_type() -> None:
    # Hand-built message with bool, byte, short, int, long, bytes, string, timestamp and uuid headers.
    headers = b""
    for name, kind, value in [
        (b"t", 0, b""),
        (b"f", 1, b""),
        (b"b", 2, b"\xff"),
        (b"s", 3, struct.pack(">h", -2)),
        (b"i", 4, struct.pack(">i", 70000)),
        (b"l", 5, struct.pack(">q", 2**40)),
        (b"y", 6, struct.pack(">H", 2) + b"\x00\x01"),
        (b"z", 7, struct.pack(">H", 3) + b"abc"),
        (b"ts", 8, struct.pack(">q", 1700000000000)),
        (b"u", 9, bytes(range(16))),
    ]:
        headers += bytes([len(name)]) + name + bytes([kind]) + value
    payload = b'{"ok":true}'
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    msg += struct.pack(">I", zlib.crc32(msg))
    (decoded,) = EventStreamDecoder().feed(msg)
    assert decoded.payload == payload
    assert decoded.headers == {
        "t": True, "f": False, "b": -1, "s": -2, "i": 70000, "l": 2**40,
        "y": b"\x00\x01", "z": "abc", "ts": 1700000000000, "u": bytes(range(16)),
    }  # fmt: skip
    reference = EventStreamBuffer()
    reference.add_data(msg)
    assert next(iter(reference)).payload == payload


@pytest.mark.parametrize("flip", [5, 9, 20, -2])
def test_decoder_rejects_corrupt_frames(flip: int) -> None:
    frame = bytearray(encode_message({":event-type": "x"}, b'{"a":1}'))
    frame[flip] ^= 0x40
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(bytes(frame))


def test_golden_converse_stream() -> None:
    """The event sequence of the ConverseStream documentation's tool-use example."""
    events = [
        ("messageStart", {"role": "assistant"}),
        (
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"text": "I'll look up the weather."}},
        ),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        (
            "contentBlockStart",
            {
                "contentBlockIndex": 1,
                "start": {
                    "toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song"}
                },
            },
        ),
        (
            "contentBlockDelta",
            {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"sign": "W'}}},
        ),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": 'ZPZ"}'}}}),
        ("contentBlockStop", {"contentBlockIndex": 1}),
        ("messageStop", {"stopReason": "tool_use"}),
        (
            "metadata",
            {
                "usage": {"inputTokens": 375, "outputTokens": 56, "totalTokens": 431},
                "metrics": {"latencyMs": 1750},
            },
        ),
    ]
    data = b"".join(mock.event(k, p) for k, p in events)
    translator = BedrockStreamTranslator("alias")
    chunks = []
    for i in range(0, len(data), 3):
        chunks.extend(translator.feed(data[i : i + 3]))
    chunks.extend(translator.close())
    result = joined(chunks)
    assert result["text"] == "I'll look up the weather."
    assert result["tool_calls"] == [
        {
            "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
            "name": "top_song",
            "arguments": '{"sign": "WZPZ"}',
        }
    ]
    assert result["finish_reason"] == "tool_calls"
    assert result["usage"]["prompt_tokens"] == 375 and result["usage"]["total_tokens"] == 431


def test_exception_frame_raises_with_status() -> None:
    data = mock.event("messageStart", {"role": "assistant"}) + mock.exception(
        "throttlingException", "slow down"
    )
    with pytest.raises(RateLimited) as info:
        BedrockStreamTranslator("m").feed(data)
    assert "slow down" in info.value.message


def test_stream_cut_raises_on_close() -> None:
    translator = BedrockStreamTranslator("m")
    frame = mock.event("messageStart", {"role": "assistant"})
    translator.feed(frame + frame[:10])
    with pytest.raises(UpstreamError):
        translator.close()


# --- request / response translation ---------------------------------------------------------


def test_request_translation() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                ],
            },
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "cold"},
        ],
        "tools": TOOLS,
        "tool_choice": "required",
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["X"],
        "top_k": 40,
        "seed": 3,
    }
    out = translate_request(body)
    assert out["system"] == [{"text": "Be brief."}]
    assert out["messages"][0]["content"][1] == {
        "image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}
    }
    assert out["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Oslo"}}}
    ]
    assert out["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "t1", "content": [{"text": "cold"}]}}
    ]
    assert out["inferenceConfig"] == {
        "maxTokens": 50,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["X"],
    }
    assert out["toolConfig"]["toolChoice"] == {"any": {}}
    assert out["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {
        "json": TOOLS[0]["function"]["parameters"]
    }
    assert out["additionalModelRequestFields"] == {"top_k": 40}
    assert mock.validate(out) is None


def test_tool_choice_none_drops_tools_unless_history_has_tool_blocks() -> None:
    plain = {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": "none"}
    assert "toolConfig" not in translate_request(plain)
    body = translate_request(
        {
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "a", "function": {"name": "get_weather", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "a", "content": "ok"},
            ],
            "tools": TOOLS,
            "tool_choice": "none",
        }
    )
    assert "toolConfig" in body and "toolChoice" not in body["toolConfig"]
    assert mock.validate(body) is None


def test_http_image_urls_are_refused() -> None:
    with pytest.raises(BadRequest, match="data URLs only"):
        translate_request(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
                    }
                ]
            }
        )


def test_response_translation() -> None:
    data = {
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
            {"text": "Done"},
            {"toolUse": {"toolUseId": "tu1", "name": "f", "input": {"a": 1}}},
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 17, "cacheReadInputTokens": 10},
    }  # fmt: skip
    out = translate_response(data, "m")
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Done" and msg["reasoning_content"] == "hmm"
    assert msg["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert (
        out["usage"]["prompt_tokens"] == 13
        and out["usage"]["prompt_tokens_details"]["cached_tokens"] == 10
    )


# --- against the mock (SigV4 verified with botocore) -------------------------------------------


async def test_signed_converse(bedrock_mock: mock.BedrockMock) -> None:
    bedrock_mock.script(Reply(text="Hei", input_tokens=5, output_tokens=1))
    out = await call(
        provider(bedrock_mock),
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9},
        "anthropic.claude-3-haiku-20240307-v1:0",
    )
    assert out["choices"][0]["message"]["content"] == "Hei"
    assert out["usage"]["total_tokens"] == 6
    sent = bedrock_mock.requests[0]
    assert sent.path == "/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
    assert sent.headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIAMOCKACCESSKEY123/"
    )
    assert sent.json["inferenceConfig"] == {"maxTokens": 9}


async def test_signed_stream_with_tools_and_arn_model(bedrock_mock: mock.BedrockMock) -> None:
    bedrock_mock.script(
        Reply(
            text="Checking",
            tool_calls=[ToolCall("get_weather", {"city": "Oslo"})],
            thinking="think",
            pieces=3,
        )
    )
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5"
    chunks = await call(
        provider(bedrock_mock),
        {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "stream": True},
        arn,
    )
    result = joined(chunks)
    assert result["text"] == "Checking" and result["reasoning"] == "think"
    assert [(t["id"], t["name"], orjson.loads(t["arguments"])) for t in result["tool_calls"]] == [
        ("tooluse_mock00", "get_weather", {"city": "Oslo"})
    ]
    assert result["finish_reason"] == "tool_calls"
    assert result["usage"]["completion_tokens"] == 7
    assert bedrock_mock.requests[0].path.endswith(
        "inference-profile%2Fus.anthropic.claude-sonnet-4-5/converse-stream"
    )


async def test_session_token_and_wrong_secret() -> None:
    async with mock.start_bedrock_mock(session_token=mock.SESSION_TOKEN) as server:
        ok = provider(server, aws_session_token=mock.SESSION_TOKEN)
        out = await call(ok, {"messages": [{"role": "user", "content": "hi"}]}, "m")
        assert out["choices"][0]["message"]["content"]
        assert server.requests[0].headers["x-amz-security-token"] == mock.SESSION_TOKEN
        with pytest.raises(Forbidden) as info:
            await call(
                provider(
                    server, aws_session_token=mock.SESSION_TOKEN, aws_secret_access_key="wrong"
                ),
                {"messages": [{"role": "user", "content": "hi"}]},
                "m",
            )
        assert "signature we calculated does not match" in info.value.message


async def test_api_key_as_bearer(bedrock_mock: mock.BedrockMock) -> None:
    cfg = ProviderConfig.model_validate(
        {
            "type": "bedrock",
            "base_url": bedrock_mock.url,
            "region": "us-west-2",
            "api_key": mock.API_KEY,
        }
    )
    out = await call(
        build_provider("b", cfg), {"messages": [{"role": "user", "content": "hi"}]}, "m"
    )
    assert out["choices"][0]["finish_reason"] == "stop"
    assert bedrock_mock.requests[0].headers["authorization"] == f"Bearer {mock.API_KEY}"


async def test_errors_map_to_statuses(bedrock_mock: mock.BedrockMock) -> None:
    bedrock_mock.script(
        Reply(
            status=429,
            error_message="Too many requests, please wait before trying again.",
            retry_after="3",
        ),
        Reply(status=400, error_message="Input is too long for requested model."),
        Reply(stream_error=True),
    )
    p = provider(bedrock_mock)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(RateLimited) as info:
        await call(p, body, "m")
    assert info.value.headers == {"retry-after": "3"} and info.value.message.startswith(
        "ThrottlingException: Too many"
    )
    with pytest.raises(BadRequest) as info2:
        await call(p, body, "m")
    assert info2.value.code == "context_length_exceeded"
    with pytest.raises(RateLimited):
        await call(p, {**body, "stream": True}, "m")
    # A conversation Converse refuses comes back as the mock's ValidationException.
    with pytest.raises(BadRequest, match="blank"):
        await call(p, {"messages": [{"role": "user", "content": "  "}]}, "m")


async def test_stream_cut_mid_way(bedrock_mock: mock.BedrockMock) -> None:
    bedrock_mock.script(Reply(cut_after=3, pieces=6))
    with pytest.raises(GatewayError):
        await call(
            provider(bedrock_mock),
            {"messages": [{"role": "user", "content": "hi"}], "stream": True},
            "m",
        )


def test_default_max_tokens() -> None:
    body = {"messages": [{"role": "user", "content": "x"}]}
    assert "inferenceConfig" not in translate_request(body)
    assert translate_request(body, 512)["inferenceConfig"] == {"maxTokens": 512}
    assert translate_request({**body, "max_tokens": 5}, 512)["inferenceConfig"] == {"maxTokens": 5}


async def test_json_response_format_on_claude_and_other_models(
    bedrock_mock: mock.BedrockMock,
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    body = {
        "messages": [{"role": "user", "content": "a number"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    }
    bedrock_mock.script(
        Reply(text="", tool_calls=[ToolCall("crossway_json_response", {"n": 7})]),
        Reply(text="", tool_calls=[ToolCall("crossway_json_response", {"n": 8})], pieces=3),
        Reply(text='{"n": 9}'),
    )
    claude = "anthropic.claude-3-5-haiku-20241022-v1:0"
    out = await call(provider(bedrock_mock), body, claude)
    assert orjson.loads(out["choices"][0]["message"]["content"]) == {"n": 7}
    assert out["choices"][0]["finish_reason"] == "stop"
    sent = bedrock_mock.requests[0].json
    assert sent["toolConfig"]["toolChoice"] == {"tool": {"name": "crossway_json_response"}}
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": schema}
    result = joined(await call(provider(bedrock_mock), {**body, "stream": True}, claude))
    assert orjson.loads(result["text"]) == {"n": 8} and result["finish_reason"] == "stop"
    # A model that cannot be forced to call a tool gets an instruction in the system prompt.
    out = await call(provider(bedrock_mock), body, "meta.llama3-70b-instruct-v1:0")
    assert out["choices"][0]["message"]["content"] == '{"n": 9}'
    sent = bedrock_mock.requests[2].json
    assert "toolConfig" not in sent and "JSON schema" in sent["system"][-1]["text"]
