"""Gemini provider: schema sanitizing, request/response/stream translation, and the mock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from crossway.config.llm import ProviderConfig
from crossway.errors import BadRequest, GatewayError, RateLimited, UpstreamError
from crossway.llm.providers import build_provider
from crossway.llm.providers.gemini import (
    GeminiProvider,
    GeminiStreamTranslator,
    translate_request,
    translate_response,
)
from crossway.llm.providers.gemini_schema import sanitize_schema
from tests.mocks import gemini as mock
from tests.mocks.base import MockServer, Reply, ToolCall
from tests.mocks.client import call, joined

FIXTURES = Path(__file__).resolve().parents[2] / "mocks" / "fixtures"

PYDANTIC_STYLE = {
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "zip": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
        "Kind": {"enum": ["home", "work"], "type": "string"},
    },
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "address": {"$ref": "#/$defs/Address"},
        "kind": {"$ref": "#/$defs/Kind"},
        "tags": {"type": ["array", "null"], "items": {"type": "string", "format": "uri"}},
        "count": {"type": "integer", "enum": [1, 2], "format": "int32"},
        "mode": {"const": "fast"},
        "any": {},
    },
    "required": ["address"],
    "additionalProperties": False,
}


def test_schema_sanitizer_inlines_refs_and_drops_unsupported_keys() -> None:
    out = sanitize_schema(PYDANTIC_STYLE, "tools[0]")
    assert out == {
        "type": "object",
        "properties": {
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "zip": {"type": "string", "default": None, "nullable": True},
                },
                "required": ["city"],
            },
            "kind": {"type": "string", "enum": ["home", "work"]},
            "tags": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "count": {"type": "integer", "format": "int32"},
            "mode": {"enum": ["fast"], "type": "string"},
            "any": {},
        },
        "required": ["address"],
    }
    assert mock._schema_problem(out, "p") is None


def test_schema_sanitizer_refuses_recursion() -> None:
    tree = {
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    with pytest.raises(BadRequest, match="recursive"):
        sanitize_schema(tree, "tools[0].function.parameters")


def test_schema_sanitizer_all_of_and_one_of() -> None:
    schema = {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"oneOf": [{"type": "string"}, {"type": "number"}]}}},
        ],
    }
    out = sanitize_schema(schema, "x")
    assert out["properties"]["b"] == {"anyOf": [{"type": "string"}, {"type": "number"}]}
    assert out["required"] == ["a"] and out["type"] == "object"


# --- translation ------------------------------------------------------------------------------


def test_request_translation_with_tool_round_trip() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.webp"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_b~c2ln",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_b~c2ln", "content": "noon"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": PYDANTIC_STYLE}},
            {
                "type": "function",
                "function": {
                    "name": "get_time",
                    "parameters": {"type": "object", "properties": {}},
                },
            },
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 100,
        "stop": "END",
        "n": 2,
        "seed": 4,
        "response_format": {"type": "json_object"},
        "reasoning_effort": "low",
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "unknown_key": 1,
    }
    out = translate_request(body)
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in out["contents"]] == ["user", "model", "user"]
    assert out["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}
    }
    assert out["contents"][0]["parts"][2] == {
        "fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/cat.webp"}
    }
    assert out["contents"][1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_time", "args": {}}, "thoughtSignature": "c2ln"},
    ]
    assert out["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
    ]
    assert out["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    assert out["tools"][0]["functionDeclarations"][1] == {"name": "get_time"}
    assert out["generationConfig"] == {
        "seed": 4,
        "maxOutputTokens": 100,
        "candidateCount": 2,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
    }
    assert "unknown_key" not in out and out["safetySettings"][0]["threshold"] == "BLOCK_NONE"
    assert mock.validate(out) is None


def test_tool_result_without_its_call_is_a_400() -> None:
    with pytest.raises(BadRequest, match="function name"):
        translate_request(
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "nope", "content": "r"},
                ]
            }
        )


def test_golden_function_call_response() -> None:
    out = translate_response(
        orjson.loads((FIXTURES / "gemini_generate_function_call.json").read_bytes()), "g"
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (tool,) = choice["message"]["tool_calls"]
    assert tool["id"].startswith("call_") and tool["function"]["name"] == "find_theaters"
    assert orjson.loads(tool["function"]["arguments"]) == {
        "movie": "Barbie",
        "location": "Mountain View, CA",
    }
    assert out["usage"]["prompt_tokens"] == 116 and out["usage"]["total_tokens"] == 139


def test_golden_stream_fed_byte_by_byte() -> None:
    data = (FIXTURES / "gemini_stream_text.sse").read_bytes()
    translator = GeminiStreamTranslator("alias")
    chunks = []
    for i in range(len(data)):
        chunks.extend(translator.feed(data[i : i + 1]))
    chunks.extend(translator.close())
    result = joined(chunks)
    assert result["text"].startswith("Once upon a time") and result["text"].endswith("inside.")
    assert result["finish_reason"] == "stop"
    assert result["usage"]["completion_tokens"] == 33 + 980
    assert result["usage"]["completion_tokens_details"]["reasoning_tokens"] == 980
    assert result["usage"]["total_tokens"] == 1021
    assert chunks[0]["id"] == "wB4LaOSuL-vc1PIPkdqS2AQ"


def test_stream_cut_and_error_event() -> None:
    translator = GeminiStreamTranslator("m")
    translator.feed(b'data: {"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}\r\n\r\n')
    with pytest.raises(UpstreamError):
        translator.close()
    with pytest.raises(GatewayError) as info:
        GeminiStreamTranslator("m").feed(
            b'data: {"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}\n\n'
        )
    assert info.value.status_code == 429


# --- against the mock -------------------------------------------------------------------------


@pytest.fixture
async def gemini_mock() -> AsyncIterator[MockServer]:
    async with mock.start_gemini_mock() as server:
        yield server


def provider(server: MockServer, key: str = mock.API_KEY) -> GeminiProvider:
    cfg = ProviderConfig.model_validate(
        {"type": "gemini", "base_url": server.url + "/v1beta", "api_key": key}
    )
    p = build_provider("gemini", cfg)
    assert isinstance(p, GeminiProvider)
    return p


async def test_plain_against_mock(gemini_mock: MockServer) -> None:
    gemini_mock.script(
        Reply(text="Hallo", input_tokens=4, cached_tokens=2, output_tokens=3, reasoning_tokens=5)
    )
    out = await call(
        provider(gemini_mock), {"messages": [{"role": "user", "content": "hi"}]}, "gemini-2.5-flash"
    )
    assert out["choices"][0]["message"]["content"] == "Hallo"
    assert out["usage"]["prompt_tokens"] == 6 and out["usage"]["completion_tokens"] == 8
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 2
    assert gemini_mock.requests[0].path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert gemini_mock.requests[0].headers["x-goog-api-key"] == mock.API_KEY


async def test_stream_with_tools_and_thoughts_then_round_trip(gemini_mock: MockServer) -> None:
    gemini_mock.script(
        Reply(
            text="",
            thinking="hmm",
            tool_calls=[
                ToolCall("get_weather", {"city": "Oslo"}),
                ToolCall("get_weather", {"city": "Rome"}),
            ],
        )
    )
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": PYDANTIC_STYLE}}
    ]
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": tools, "stream": True}
    result = joined(await call(provider(gemini_mock), body, "gemini-2.5-pro"))
    assert result["reasoning"] == "hmm" and result["finish_reason"] == "tool_calls"
    assert [orjson.loads(t["arguments"]) for t in result["tool_calls"]] == [
        {"city": "Oslo"},
        {"city": "Rome"},
    ]
    assert gemini_mock.requests[0].path.endswith(":streamGenerateContent") and gemini_mock.requests[
        0
    ].query == {"alt": "sse"}
    first_id = result["tool_calls"][0]["id"]
    assert first_id.endswith("~c2lnbmF0dXJl")  # the thought signature rides along in the id
    # Send the results back: the mock checks the counts match the calls.
    follow = {
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": t["id"],
                        "type": "function",
                        "function": {"name": t["name"], "arguments": t["arguments"]},
                    }
                    for t in result["tool_calls"]
                ],
            },
            {"role": "tool", "tool_call_id": result["tool_calls"][0]["id"], "content": "cold"},
            {"role": "tool", "tool_call_id": result["tool_calls"][1]["id"], "content": "warm"},
        ],
        "tools": tools,
    }
    out = await call(provider(gemini_mock), follow, "gemini-2.5-pro")
    assert out["choices"][0]["finish_reason"] == "stop"
    sent = gemini_mock.requests[1].json["contents"]
    assert sent[1]["parts"][0]["thoughtSignature"] == "c2lnbmF0dXJl"
    assert [p["functionResponse"]["name"] for p in sent[2]["parts"]] == [
        "get_weather",
        "get_weather",
    ]


async def test_errors_against_mock(gemini_mock: MockServer) -> None:
    with pytest.raises(BadRequest, match="API key not valid"):
        await call(
            provider(gemini_mock, key="bad"), {"messages": [{"role": "user", "content": "x"}]}, "g"
        )
    gemini_mock.script(
        Reply(status=429, error_message="Resource has been exhausted (e.g. check quota)."),
        Reply(stream_error=True, pieces=4),
    )
    with pytest.raises(RateLimited) as info:
        await call(provider(gemini_mock), {"messages": [{"role": "user", "content": "x"}]}, "g")
    assert info.value.headers == {"retry-after": "17"}
    with pytest.raises(GatewayError) as info2:
        await call(
            provider(gemini_mock),
            {"messages": [{"role": "user", "content": "x"}], "stream": True},
            "g",
        )
    assert info2.value.status_code == 503


async def test_stream_cut_against_mock(gemini_mock: MockServer) -> None:
    gemini_mock.script(Reply(cut_after=2, pieces=5))
    with pytest.raises(GatewayError):
        await call(
            provider(gemini_mock),
            {"messages": [{"role": "user", "content": "x"}], "stream": True},
            "g",
        )
