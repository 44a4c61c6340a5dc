"""Cache keys and the in-process index, without a gateway: the same question in OpenAI Chat,
Anthropic Messages and Responses form is one entry, streamed or not; what must separate entries
does; the rules' edges; the LRU bound and expiry; the nearest-vector search."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson

from crossway.config.llm_cache import LlmCacheConfig
from crossway.llm.cache.answer import CachedAnswer, StreamCapture, from_body, replay_stream
from crossway.llm.cache.index import CacheIndex
from crossway.llm.cache.keys import Considered, consider
from crossway.llm.calls import LlmCall, chat_call, messages_call, responses_call
from crossway.server.context import RequestContext

CONFIG = LlmCacheConfig()


def _ctx(**fields: Any) -> RequestContext:
    ctx = RequestContext("r", "b", "id", "/v1/chat/completions")
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx


def _keys(call: LlmCall, ctx: RequestContext | None = None, **config: Any) -> Considered:
    considered, reason = consider(call, ctx or _ctx(), LlmCacheConfig(**config))
    assert considered is not None, reason
    return considered


def _reason(call: LlmCall, **config: Any) -> str:
    considered, reason = consider(call, _ctx(), LlmCacheConfig(**config))
    assert considered is None
    return reason


def chat(**body: Any) -> LlmCall:
    return chat_call(orjson.dumps({"model": "m", **body}))


def test_one_question_in_every_api_is_one_entry() -> None:
    question = "What is 2 + 2?"
    openai_chat = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": question},
        ],
        max_completion_tokens=50,
    )
    streamed = chat(
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": question},
        ],
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
        user="someone",
    )
    anthropic = messages_call(
        orjson.dumps(
            {
                "model": "m",
                "system": "Be brief.",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}],
                "stream": True,
            }
        ),
        {"headers": []},
    )
    responses = responses_call(
        orjson.dumps(
            {"model": "m", "instructions": "Be brief.", "input": question, "max_output_tokens": 50}
        )
    )
    keys = {_keys(c).exact for c in (openai_chat, streamed, anthropic, responses)}
    assert len(keys) == 1
    semantic = {_keys(c).semantic_partition for c in (openai_chat, anthropic)}
    assert len(semantic) == 1


def test_what_changes_the_answer_changes_the_key() -> None:
    base = _keys(chat(messages=[{"role": "user", "content": "hi"}]))
    for other in (
        chat(messages=[{"role": "user", "content": "hi!"}]),
        chat(messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]),
        chat_call(orjson.dumps({"model": "m2", "messages": [{"role": "user", "content": "hi"}]})),
        chat(messages=[{"role": "user", "content": "hi"}], seed=1),
        chat(messages=[{"role": "user", "content": "hi"}], stop=["x"]),
        chat(messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"}),
        chat(messages=[{"role": "user", "content": "hi"}], top_p=0.5),
    ):
        assert _keys(other).exact != base.exact
    # The semantic partition holds all but the last user message's text.
    paraphrase = _keys(chat(messages=[{"role": "user", "content": "hello"}]))
    assert paraphrase.semantic_partition == base.semantic_partition
    assert paraphrase.prompt == "hello"
    system = _keys(
        chat(messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "hello"}])
    )
    assert system.semantic_partition != base.semantic_partition


def test_tenants_partition_entries() -> None:
    call = chat(messages=[{"role": "user", "content": "hi"}])
    red = _ctx(key={"id": "k1", "name": "a", "team": "red"})
    red_2 = _ctx(key={"id": "k2", "name": "b", "team": "red"})
    solo = _ctx(key={"id": "k3", "name": "c", "team": None})
    jwt = _ctx(identity={"sub": "alice", "method": "jwt"})
    anonymous = _ctx()
    assert _keys(call, red).exact == _keys(call, red_2).exact
    assert _keys(call, red).partition == "team:red"
    assert _keys(call, solo).partition == "key:k3"
    assert _keys(call, jwt).partition == "sub:jwt:alice"
    assert _keys(call, anonymous).partition == "anonymous"
    assert len({_keys(call, c).exact for c in (red, solo, jwt, anonymous)}) == 4
    assert _keys(call, red, scope="key").exact != _keys(call, red_2, scope="key").exact
    assert _keys(call, red, scope="global").exact == _keys(call, solo, scope="global").exact


def test_the_rules() -> None:
    user = [{"role": "user", "content": "hi"}]
    tool: Any = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert _reason(chat(messages=user, tools=tool)) == "tools"
    assert _reason(chat(messages=user, functions=[{"name": "f"}])) == "tools"
    assert _keys(chat(messages=user, tools=tool), allow_tools=True)
    assert _keys(chat(messages=user, tools=[]))  # an empty list offers nothing
    assert _reason(chat(messages=user, temperature=0.2)) == "temperature"
    assert _keys(chat(messages=user, temperature=0))
    assert _keys(chat(messages=user, temperature=0.2), max_temperature=0.5)
    assert _reason(chat(messages=user, n=2)) == "n"
    two_users = [*user, {"role": "user", "content": "again"}]
    with_tool = [
        *user,
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                               "function": {"name": "f",
                                                                            "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "42"},
    ]  # fmt: skip
    assert _reason(chat(messages=two_users)) == "turns"
    assert _reason(chat(messages=with_tool)) == "turns"
    assert _keys(chat(messages=with_tool), max_user_turns=2)
    headers = [(b"cache-control", b"max-age=0, no-store")]
    call = chat(messages=user)
    call.scope_headers = headers
    assert _reason(call) == "no_store"
    call.scope_headers = [(b"cache-control", b"No-Cache")]
    assert not _keys(call).lookup


def test_the_index_bounds_and_expires_entries() -> None:
    index = CacheIndex(max_entries=3, dim=2)
    answer = CachedAnswer({"content": "x"}, "stop", None, None)
    now = time.time()
    for i in range(4):
        vector = np.array([1.0, float(i)], dtype=np.float32)
        index.put(f"k{i}", now + 60, answer, "p", vector / np.linalg.norm(vector))
    assert len(index) == 3 and index.get("k0") is None  # the least recently used went
    assert index.get("k1") is not None
    index.put("k4", now + 60, answer)
    assert index.get("k2") is None and index.get("k1") is not None
    query = np.array([1.0, 3.0], dtype=np.float32) / np.sqrt(10)
    key, similarity = index.nearest("p", query)
    assert key == "k3" and abs(similarity - 1.0) < 1e-6
    index.put("k5", now - 1, answer)
    assert index.get("k5") is None  # expired


def test_answers_round_trip_between_apis() -> None:
    message = {
        "content": "Hello",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
        ],
    }
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    answer = CachedAnswer(message, "tool_calls", usage, 0.01)
    for api in ("chat", "anthropic_messages", "responses"):
        capture = StreamCapture(api, "m", 1 << 20, 1 << 20)
        stream = replay_stream(answer, api, "m", {}, True)
        for i in range(0, len(stream), 7):  # cut anywhere
            capture.feed(stream[i : i + 7])
        again = capture.answer(None)
        assert again.message["content"] == "Hello", api
        calls = again.message["tool_calls"]
        assert calls[0]["function"]["name"] == "f"
        assert orjson.loads(calls[0]["function"]["arguments"]) == {"a": 1}
        assert again.finish_reason == "tool_calls"
    assert from_body("chat", orjson.dumps(answer.completion("m"))).message["content"] == "Hello"
