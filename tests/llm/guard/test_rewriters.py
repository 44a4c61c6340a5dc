"""The stream rewriters in process, on the event streams providers send: any cut of the bytes
gives the same masked stream, events without text pass byte-identical, an event holding only
an entity, unicode split inside a character, a very long stream with a bounded hold-back, a
block mid-stream ending with the API's error event, the `LastChunk` kept last; and the
request log keeping the masked (or refused) request, not the raw one."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from crossway.config.guardrails import GuardrailsConfig
from crossway.llm.calls import CHAT, MESSAGES, RESPONSES, LlmCall, chat_call, messages_call
from crossway.llm.guard import guard_body, guard_request, guard_stream
from crossway.policy.base import build_chain
from crossway.policy.guardrails import DECISIONS, GuardBlocked
from crossway.server.asgi import LastChunk
from crossway.server.context import RequestContext
from crossway.telemetry import request_log
from tests.llm import openai_mock
from tests.llm.sse import parse_sse
from tests.mocks import anthropic as anthropic_mock
from tests.mocks.base import Reply, ToolCall

EMAIL = "zq.kowalczyk@mailbox-corp.io"
CARD = "4111 1111 1111 1111"
PII = {
    "name": "pii",
    "detectors": [
        {"type": "pii", "entities": ["email", "phone"], "response": "mask"},
        {"type": "pii", "entities": ["credit_card"], "request": "block"},
    ],
}
BLOCK_CARDS = {
    "name": "cards",
    "detectors": [
        {"type": "pii", "entities": ["email"], "response": "mask"},
        {"type": "pii", "entities": ["credit_card"], "action": "block"},
    ],
}


def _ctx(guard: dict[str, Any] = PII, window: int | None = None) -> RequestContext:
    spec: dict[str, Any] = {"type": "guardrails", **guard}
    if window is not None:
        spec["stream_window"] = window
    chain = build_chain([GuardrailsConfig.model_validate(spec)])
    return RequestContext("route", "backend", "req-1", "/v1/chat/completions", chain=chain)


def _events(api: str, reply: Reply) -> bytes:
    if api == CHAT:
        return b"".join(openai_mock.stream_events(reply, "m", False))
    if api == MESSAGES:
        return b"".join(anthropic_mock.stream_events(reply, "m"))
    return b"".join(openai_mock.response_events(reply, "m"))


async def _cut(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def _run(
    api: str, source: AsyncIterator[Any], ctx: RequestContext | None = None
) -> list[bytes]:
    out = []
    async for chunk in guard_stream(LlmCall(api, "m", True), source, ctx or _ctx()):
        out.append(chunk)
    return out


def _text(api: str, stream: bytes) -> tuple[str, str]:
    """(the text deltas joined, the tool-call argument deltas joined) of a client stream."""
    text, arguments = "", ""
    for name, data in parse_sse(stream):
        if data == "[DONE]":
            continue
        if api == CHAT:
            for choice in data.get("choices") or ():
                delta = choice.get("delta") or {}
                text += delta.get("content") or ""
                for call in delta.get("tool_calls") or ():
                    arguments += (call.get("function") or {}).get("arguments") or ""
        elif api == MESSAGES and name == "content_block_delta":
            text += data["delta"].get("text", "")
            arguments += data["delta"].get("partial_json", "")
        elif name == "response.output_text.delta":
            text += data["delta"]
        elif name == "response.function_call_arguments.delta":
            arguments += data["delta"]
    return text, arguments


APIS = [CHAT, MESSAGES, RESPONSES]
TEXT = f"Grüße 👋 — 連絡先は {EMAIL} です, or +1 415 555 2671. Thanks!"
MASKED = TEXT.replace(EMAIL, "<EMAIL>").replace("+1 415 555 2671", "<PHONE>")


@pytest.mark.parametrize("api", APIS)
async def test_any_cut_of_the_bytes_gives_the_same_masked_stream(api: str) -> None:
    reply = Reply(
        text=TEXT, pieces=7, tool_calls=[ToolCall("mail", {"to": EMAIL, "note": "ok"}, id="c1")]
    )
    data = _events(api, reply)
    expected: bytes | None = None
    for size in (1, 2, 3, 5, 8, 13, 64, 1000, len(data)):
        out = b"".join(await _run(api, _cut(data, size)))
        text, arguments = _text(api, out)
        assert text == MASKED
        assert orjson.loads(arguments) == {"to": "<EMAIL>", "note": "ok"}
        assert b"kowalczyk" not in out and b"555 2671" not in out
        if api != RESPONSES:  # (Responses ids and times are the mock's, the same per call)
            if expected is None:
                expected = out
            assert out == expected


async def test_responses_done_events_repeat_what_the_deltas_sent() -> None:
    reply = Reply(text=TEXT, pieces=9, tool_calls=[ToolCall("mail", {"to": EMAIL})])
    out = b"".join(await _run(RESPONSES, _cut(_events(RESPONSES, reply), 11)))
    events = dict(parse_sse(out))  # the last event of each name
    assert events["response.output_text.done"]["text"] == MASKED
    assert events["response.content_part.done"]["part"]["text"] == MASKED
    assert events["response.function_call_arguments.done"]["arguments"] == '{"to":"<EMAIL>"}'
    output = events["response.completed"]["response"]["output"]
    assert output[0]["content"][0]["text"] == MASKED
    assert output[1]["arguments"] == '{"to":"<EMAIL>"}'


@pytest.mark.parametrize("api", APIS)
async def test_events_without_text_pass_byte_identical(api: str) -> None:
    data = _events(api, Reply(text=""))
    assert b"".join(await _run(api, _cut(data, 3))) == data


@pytest.mark.parametrize("api", APIS)
async def test_clean_text_reaches_the_client_whole(api: str) -> None:
    text = "Nothing to hide here, just a plain sentence. " * 5
    out = b"".join(await _run(api, _cut(_events(api, Reply(text=text, pieces=20)), 17)))
    assert _text(api, out)[0] == text


@pytest.mark.parametrize("api", APIS)
async def test_an_answer_that_is_only_an_entity(api: str) -> None:
    """Every event but the flush holds only part of the address: they are dropped, and the
    stream stays well formed (the SDKs' tests run it end to end)."""
    out = b"".join(await _run(api, _cut(_events(api, Reply(text=EMAIL, pieces=4)), 1000)))
    assert _text(api, out)[0] == "<EMAIL>"
    names = [name for name, _ in parse_sse(out)]
    if api == MESSAGES:
        assert names.count("content_block_delta") == 1
        assert names.index("content_block_delta") < names.index("content_block_stop")


async def test_an_event_with_only_an_entity_between_texts() -> None:
    pieces = ["Write to ", EMAIL, " today."]
    events = [openai_mock.stream_events(Reply(text=""), "m", False)[0]]
    for piece in pieces:
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        chunk["choices"] = [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]
        events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    finish = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    finish["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    events += [b"data: " + orjson.dumps(finish) + b"\n\n", b"data: [DONE]\n\n"]
    out = b"".join(await _run(CHAT, _cut(b"".join(events), 4096)))
    assert _text(CHAT, out)[0] == "Write to <EMAIL> today."
    assert out.endswith(b"data: [DONE]\n\n")


async def test_a_very_long_stream_holds_back_at_most_the_window() -> None:
    window = 64
    pieces = [f"line {i:05d} mail {EMAIL} ok. " for i in range(3000)]
    fed = 0
    released = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal fed
        yield openai_mock.stream_events(Reply(text=""), "m", False)[0]
        for piece in pieces:
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
            chunk["choices"] = [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]
            fed += len(piece.replace(EMAIL, "<EMAIL>"))
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"

    most = 0
    out = []
    async for chunk in guard_stream(LlmCall(CHAT, "m", True), source(), _ctx(window=window)):
        released += len(_text(CHAT, chunk)[0])
        most = max(most, fed - released)
        out.append(chunk)
    assert _text(CHAT, b"".join(out))[0] == "".join(pieces).replace(EMAIL, "<EMAIL>")
    # What is held never exceeds the window (plus the piece that just came in, and the
    # difference an address makes while it is still held unmasked).
    assert most <= window + max(len(p) for p in pieces)


@pytest.mark.parametrize("api", APIS)
async def test_a_block_in_the_stream_ends_it_with_the_api_error_event(api: str) -> None:
    text = f"Here is the number you asked for: {CARD}. Use it wisely, and " + "pad " * 60
    closed = []

    async def source() -> AsyncIterator[Any]:
        try:
            data = _events(api, Reply(text=text, pieces=12))
            for at in range(0, len(data), 9):
                yield data[at : at + 9]
        finally:
            closed.append(True)

    out = await _run(api, source(), _ctx(BLOCK_CARDS))
    assert type(out[-1]) is LastChunk
    wire = b"".join(out)
    assert b"4111 1111" not in wire and b"1111 1111" not in wire
    name, error = parse_sse(wire)[-1]
    if api == CHAT:
        assert error["error"]["code"] == "guardrail_blocked"
    elif api == MESSAGES:
        assert name == "error" and error["error"]["type"] == "invalid_request_error"
    else:
        assert name == "error" and error["code"] == "guardrail_blocked"
    message = str(error)
    assert "'cards'" in message and "credit_card" in message
    assert closed == [True]  # the upstream's stream was closed at once


@pytest.mark.parametrize("api", APIS)
async def test_the_last_chunk_stays_last(api: str) -> None:
    data = _events(api, Reply(text=f"Mail {EMAIL} soon, please.", pieces=5))
    cut = len(data) - 40

    async def source() -> AsyncIterator[Any]:
        yield data[:cut]
        yield LastChunk(data[cut:])

    out = await _run(api, source())
    assert type(out[-1]) is LastChunk
    assert all(type(c) is bytes for c in out[:-1])
    assert _text(api, b"".join(out))[0] == "Mail <EMAIL> soon, please."


async def test_decisions_are_recorded_without_the_text() -> None:
    ctx = _ctx()
    await _run(CHAT, _cut(_events(CHAT, Reply(text=f"a {EMAIL} b {EMAIL}", pieces=3)), 50), ctx)
    assert ctx.attrs[DECISIONS] == [
        {"guard": "pii", "detector": "email", "action": "mask", "direction": "response", "count": 2}
    ]
    assert "kowalczyk" not in str(ctx.attrs)


async def test_logprobs_are_dropped_from_guarded_chat_streams() -> None:
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunk["choices"] = [
        {
            "index": 0,
            "delta": {"content": EMAIL},
            "logprobs": {"content": [{"token": EMAIL, "logprob": -0.1, "top_logprobs": []}]},
            "finish_reason": "stop",
        }
    ]
    data = b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
    out = b"".join(await _run(CHAT, _cut(data, 10)))
    assert b"kowalczyk" not in out
    assert _text(CHAT, out)[0] == "<EMAIL>"


async def test_no_masker_when_no_guard_changes_answers() -> None:
    ctx = _ctx({"name": "in", "detectors": [{"type": "pii", "request": "block"}]})
    source = _cut(b"data: [DONE]\n\n", 5)
    assert guard_stream(LlmCall(CHAT, "m", True), source, ctx) is source


async def test_several_choices_are_masked_apart() -> None:
    events = []
    for i, piece in itertools.product(range(2), ["mail ", EMAIL[:8], EMAIL[8:], " end"]):
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        chunk["choices"] = [{"index": i, "delta": {"content": piece}, "finish_reason": None}]
        events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    events.append(b"data: [DONE]\n\n")  # no finish_reason: flushed in extra chunks
    out = b"".join(await _run(CHAT, _cut(b"".join(events), 7)))
    texts = {0: "", 1: ""}
    for _, data in parse_sse(out):
        if data != "[DONE]":
            for choice in data["choices"]:
                texts[choice["index"]] += choice["delta"].get("content", "")
    assert texts == {0: "mail <EMAIL> end", 1: "mail <EMAIL> end"}
    assert out.endswith(b"data: [DONE]\n\n")


# -- whole answers and requests -----------------------------------------------------------------


async def test_an_answer_without_findings_keeps_its_bytes() -> None:
    body = orjson.dumps(openai_mock.completion(Reply(text="Fine, thanks."), "m", 1))
    assert await guard_body(LlmCall(CHAT, "m", False), body, _ctx()) is body


async def test_a_blocked_answer_raises() -> None:
    body = orjson.dumps(openai_mock.completion(Reply(text=f"card {CARD}"), "m", 1))
    with pytest.raises(GuardBlocked):
        await guard_body(LlmCall(CHAT, "m", False), body, _ctx(BLOCK_CARDS))


async def test_the_request_log_keeps_the_masked_request() -> None:
    guard = {
        "name": "scrub",
        "detectors": [{"type": "pii", "entities": ["email"], "action": "mask"}],
    }
    raw = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": f"I am {EMAIL}"}]})
    capture = request_log.join_capture(True, 1 << 20)
    try:
        request_log.note_request(raw)
        call = chat_call(raw)
        await guard_request(call, _ctx(guard))
        assert call.modified
        assert capture.request == call.raw
        assert b"kowalczyk" not in capture.request and b"<EMAIL>" in capture.request
    finally:
        capture.users = 0


async def test_the_request_log_keeps_no_refused_number() -> None:
    raw = orjson.dumps(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": f"card {CARD}"}]}
    )
    capture = request_log.join_capture(True, 1 << 20)
    try:
        request_log.note_request(raw)
        with pytest.raises(GuardBlocked):
            await guard_request(messages_call(raw, {"headers": []}), _ctx())
        assert b"4111" not in capture.request
    finally:
        capture.users = 0


async def test_an_event_cut_short_by_a_broken_upstream_is_not_sent() -> None:
    """A passthrough relay ends a stream broken mid-event with a blank line and an error: the
    cut event's text (maybe part of an address) never reached the masker, so it is dropped."""
    head = openai_mock.stream_events(Reply(text="Hello, write to ", pieces=1), "m", False)[:2]
    cut = b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"zq.kowalczyk@mail'
    error = b'\n\ndata: {"error":{"message":"upstream broke","code":null}}\n\n'
    out = b"".join(await _run(CHAT, _cut(b"".join(head) + cut + error, 16)))
    assert b"kowalczyk" not in out
    assert out.endswith(b'data: {"error":{"message":"upstream broke","code":null}}\n\n')
    assert _text(CHAT, out.replace(b"\n\n\n\n", b"\n\n"))[0] == "Hello, write to "


async def test_legacy_function_call_arguments_are_masked() -> None:
    events = []
    for piece in ['{"to": "', EMAIL[:6], EMAIL[6:], '"}']:
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        delta = {"function_call": {"arguments": piece}}
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
        events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunk["choices"] = [{"index": 0, "delta": {}, "finish_reason": "function_call"}]
    events += [b"data: " + orjson.dumps(chunk) + b"\n\n", b"data: [DONE]\n\n"]
    out = b"".join(await _run(CHAT, _cut(b"".join(events), 5)))
    arguments = ""
    for _, data in parse_sse(out):
        if data != "[DONE]":
            call = data["choices"][0]["delta"].get("function_call") or {}
            arguments += call.get("arguments", "")
    assert orjson.loads(arguments) == {"to": "<EMAIL>"}


@pytest.mark.parametrize("api", APIS)
async def test_an_answer_that_masks_to_empty_stays_well_formed(api: str) -> None:
    """A webhook that rewrites the whole answer to "": the body is still the API's shape."""
    from aiohttp import web

    from crossway.llm.api.anthropic_messages import chat_to_message
    from crossway.llm.api.responses import chat_to_response
    from crossway.proxy import client
    from tests.proxy.test_outbound import serving

    async def rewrite(request: web.Request) -> web.Response:
        texts = orjson.loads(await request.read())["texts"]
        return web.json_response({"action": "rewrite", "texts": ["" for _ in texts]})

    chat = openai_mock.completion(Reply(text=f"Only {EMAIL}"), "m", 1)
    body = {
        CHAT: chat,
        MESSAGES: chat_to_message(chat, "m"),
        RESPONSES: chat_to_response(chat, {}, "m"),
    }[api]
    try:
        async with serving({"/hook": rewrite}) as service:
            hook = {"type": "webhook", "url": service.url + "/hook", "response": "mask"}
            ctx = _ctx({"name": "hook", "detectors": [hook]})
            out = orjson.loads(await guard_body(LlmCall(api, "m", False), orjson.dumps(body), ctx))
    finally:
        await client.close_session()
    if api == CHAT:
        assert out["choices"][0]["message"]["content"] == ""
    elif api == MESSAGES:
        assert out["content"] == [{"type": "text", "text": ""}]
    else:
        assert out["output"][0]["content"][0]["text"] == ""
    assert out.keys() == body.keys()
