"""OpenAI Responses <-> canonical chat translation, with pure inputs."""

from __future__ import annotations

import pytest

from crossway.errors import BadRequest
from crossway.llm.api.responses import ResponsesStreamWriter, chat_to_response, responses_to_chat
from tests.llm.sse import parse_sse


def test_string_input_and_instructions() -> None:
    chat = responses_to_chat(
        {"model": "m", "input": "hi", "instructions": "Be brief.", "max_output_tokens": 9}
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "max_completion_tokens": 9,
    }


def test_items_with_function_calls_and_outputs() -> None:
    chat = responses_to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": '{"c":"P"}'},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"c":"R"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "c2", "output": "rain"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "https://x/i.png"}],
                },
            ],
            "tools": [
                {"type": "function", "name": "w", "parameters": {"type": "object"}, "strict": True}
            ],
            "tool_choice": {"type": "function", "name": "w"},
            "text": {
                "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}
            },
            "reasoning": {"effort": "low"},
            "stream": True,
        }
    )
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    assert [c["id"] for c in chat["messages"][1]["tool_calls"]] == ["c1", "c2"]
    assert chat["messages"][0]["content"] == "weather?"
    assert chat["messages"][4]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://x/i.png"}}
    ]
    assert chat["tools"][0]["function"] == {
        "name": "w",
        "parameters": {"type": "object"},
        "strict": True,
    }
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert chat["response_format"]["json_schema"]["name"] == "out"
    assert chat["reasoning_effort"] == "low"
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}, "hosted tool"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "item"),
    ],
)
def test_bad_requests(body: dict, needle: str) -> None:
    with pytest.raises(BadRequest) as info:
        responses_to_chat(body)
    assert needle in info.value.message


def test_response_object() -> None:
    resp = chat_to_response(
        {
            "choices": [
                {
                    "finish_reason": "tool_calls",
                    "message": {
                        "content": "ok",
                        "tool_calls": [{"id": "c1", "function": {"name": "w", "arguments": "{}"}}],
                    },
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        },
        {"model": "m", "input": "hi"},
        "m",
    )
    assert resp["object"] == "response" and resp["status"] == "completed"
    assert [o["type"] for o in resp["output"]] == ["message", "function_call"]
    assert resp["output"][0]["content"][0]["text"] == "ok"
    assert resp["output"][1]["call_id"] == "c1"
    assert resp["usage"]["total_tokens"] == 7


def test_length_finish_is_incomplete() -> None:
    resp = chat_to_response(
        {"choices": [{"finish_reason": "length", "message": {"content": "x"}}]}, {}, "m"
    )
    assert resp["status"] == "incomplete"
    assert resp["incomplete_details"] == {"reason": "max_output_tokens"}


def test_stream_events_are_ordered_and_consistent() -> None:
    writer = ResponsesStreamWriter({"model": "m"}, "m")
    out = b"".join(
        [
            writer.feed({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
            writer.feed({"choices": [{"index": 0, "delta": {"content": " there"}}]}),
            writer.feed(
                {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": "c1",
                                        "function": {"name": "w", "arguments": '{"a"'},
                                    }
                                ]
                            },
                        }
                    ]
                }
            ),
            writer.feed(
                {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]
                            },
                        }
                    ]
                }
            ),
            writer.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            writer.feed({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
            writer.finish(),
        ]
    )
    events = parse_sse(out)
    names = [n for n, _ in events]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    final = events[-1][1]["response"]
    assert final["id"] == events[0][1]["response"]["id"]
    assert final["output"][0]["content"][0]["text"] == "Hi there"
    assert final["output"][1]["arguments"] == '{"a":1}'
    assert final["usage"]["input_tokens"] == 3 and final["usage"]["output_tokens"] == 4


def test_broken_stream_ends_with_error_and_failed() -> None:
    writer = ResponsesStreamWriter({"model": "m"}, "m")
    out = writer.feed({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}) + writer.finish()
    names = [n for n, _ in parse_sse(out)]
    assert names[-2:] == ["error", "response.failed"]
