"""The `rate_limit` policy: what each limit counts, and a real gateway refusing the official
`openai` and `anthropic` SDKs with their own `RateLimitError` (429, `Retry-After`,
`x-ratelimit-*`), token limits settled after a stream, and an MCP tool limited through the `mcp`
SDK client while the other tools still answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from crossway.config.accounting import AccountingConfig, RateLimitConfig
from crossway.errors import RateLimited
from crossway.policy.base import build_policy
from crossway.policy.limits import Limiter, LocalBuckets
from crossway.policy.rate_limit import RateLimitPolicy
from crossway.server.context import RequestContext
from mcp import Client
from tests.helpers import Gateway, free_port, redis_server, start_gateway
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mcp.conftest import notes_stdio
from tests.mocks.base import MockServer, Reply

HELLO: Any = [{"role": "user", "content": "hello"}]


def _policy(*limits: dict[str, Any]) -> RateLimitPolicy:
    config = RateLimitConfig.model_validate({"type": "rate_limit", "limits": list(limits)})
    policy = build_policy(config, AccountingConfig())
    assert isinstance(policy, RateLimitPolicy)
    policy.limiter = Limiter(local=LocalBuckets())  # this test's own buckets
    return policy


def _ctx(**attrs: Any) -> RequestContext:
    ctx = RequestContext("llm", "b", "1", "/")
    ctx.attrs.update(attrs)
    return ctx


async def _refused(policy: RateLimitPolicy, ctx: RequestContext) -> bool:
    try:
        await policy.on_parsed(ctx)
    except RateLimited:
        return True
    return False


@pytest.mark.parametrize(
    ("key", "setup"),
    [
        ("key", lambda c: setattr(c, "key", {"id": "key_1", "name": "n"})),
        ("user", lambda c: setattr(c, "identity", {"sub": "s", "user": "alice"})),
        ("team", lambda c: setattr(c, "identity", {"sub": "s", "team": "research"})),
        ("model", lambda c: c.attrs.update(llm={"model": "gpt-4o", "api": "chat"})),
        ("route", lambda c: None),
        ("mcp.tool", lambda c: c.attrs.update(mcp={"kind": "tool", "name": "srv_add"})),
        ("a2a.agent", lambda c: c.attrs.update(a2a={"agent": "planner"})),
        ("source_ip", lambda c: setattr(c, "client_ip", "10.0.0.7")),
        ("jwt.org.id", lambda c: setattr(c, "jwt", {"sub": "s", "org": {"id": 42}})),
    ],
)
async def test_each_key_counts_its_attribute(key: str, setup: Any) -> None:
    policy = _policy({"key": key, "requests": 1, "window": 60})
    first, second = _ctx(), _ctx()
    setup(first)
    setup(second)
    assert not await _refused(policy, first)
    assert await _refused(policy, second)


async def test_a_request_without_the_attribute_is_not_limited() -> None:
    policy = _policy(
        {"key": "user", "requests": 1, "window": 60},
        {"key": "mcp.tool", "requests": 1, "window": 60},
        {"key": "jwt.org", "requests": 1, "window": 60},
    )
    for _ in range(3):
        ctx = _ctx(mcp={"kind": "prompt", "name": "srv_greet"})  # not a tool call
        ctx.identity = {"sub": "s"}  # no user: the virtual_key policy sets it
        ctx.jwt = {"org": ["a", "b"]}  # not a scalar
        assert not await _refused(policy, ctx)
        assert ctx.response_headers is None


async def test_tokens_are_reserved_on_llm_calls_and_settled_at_finish() -> None:
    policy = _policy(
        {"key": "model", "tokens": 100, "window": 60},
        {"key": "route", "requests": 10, "window": 60},
    )
    ctx = _ctx(llm={"model": "m", "api": "chat"}, **{"llm.estimate": 80})
    await policy.on_parsed(ctx)
    headers = dict(ctx.response_headers or [])
    assert headers[b"x-ratelimit-remaining-tokens"] == b"20"
    assert headers[b"x-ratelimit-remaining-requests"] == b"9"
    # While it runs, another call estimated at 30 waits...
    assert await _refused(policy, _ctx(llm={"model": "m", "api": "chat"}, **{"llm.estimate": 30}))
    # ...and once it used 25 tokens, there is room.
    ctx.attrs["llm.usage"] = {"input_tokens": 20, "output_tokens": 5, "total_tokens": 25}
    await policy.on_finish(ctx)
    await policy.on_finish(ctx)  # settled once only
    later = _ctx(llm={"model": "m", "api": "chat"}, **{"llm.estimate": 70})
    await policy.on_parsed(later)
    assert dict(later.response_headers or [])[b"x-ratelimit-remaining-tokens"] == b"5"
    # A failed call (no usage) gives its reservation back.
    await policy.on_finish(later)
    again = _ctx(llm={"model": "m", "api": "chat"}, **{"llm.estimate": 75})
    await policy.on_parsed(again)
    # A model lookup is not an LLM call: no tokens reserved, the request counted.
    lookup = _ctx(llm={"model": "m", "api": "models"}, **{"llm.estimate": 1000})
    await policy.on_parsed(lookup)
    assert b"x-ratelimit-limit-tokens" not in dict(lookup.response_headers or [])


async def test_each_parsed_run_acquires() -> None:
    """An MCP request can run the parsed phase once per call (a batch, a session)."""
    policy = _policy({"key": "route", "requests": 2, "window": 60})
    ctx = _ctx(mcp={"kind": "tool", "name": "a"})
    await policy.on_parsed(ctx)
    await policy.on_parsed(ctx)
    with pytest.raises(RateLimited, match="route:requests"):
        await policy.on_parsed(ctx)
    names = [name for name, _ in ctx.response_headers or []]
    assert names.count(b"x-ratelimit-remaining-requests") == 1


# -- a real gateway ---------------------------------------------------------------------------

LLM_CONFIG = """
routes:
  - name: chat
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
      - type: rate_limit
        limits: [{{key: source_ip, requests: 2, window: 60}}]
  - name: ant
    match: {{path: {{prefix: /ant}}}}
    backend: llm
    policies:
      - type: rate_limit
        limits: [{{name: messages per ip, key: source_ip, requests: 1, window: 30}}]
  - name: tokens
    match: {{path: {{prefix: /tok}}}}
    backend: llm
    policies:
      - type: rate_limit
        limits: [{{key: model, tokens: 30, window: 60}}]
backends:
  llm:
    type: llm
    routing: {{retry: {{retries: 0}}}}
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {key}}}
    models:
      - name: gpt-4o
        targets: [{{provider: oa}}]
      - name: claude-3-5-sonnet-20241022
        targets: [{{provider: oa, model: gpt-4o}}]
"""


@pytest.fixture(scope="module")
def llm_gateway() -> Iterator[tuple[Gateway, MockServer]]:
    loop = MockLoop()
    try:
        mock = loop.start(openai_mock())
        with start_gateway(LLM_CONFIG.format(oa=mock.url, key=API_KEY)) as gw:
            yield gw, mock
    finally:
        loop.close()


def test_openai_sdk_gets_its_rate_limit_error(llm_gateway: tuple[Gateway, MockServer]) -> None:
    gw, mock = llm_gateway
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert raw.parse().choices[0].message.content
    client.chat.completions.create(model="gpt-4o", messages=HELLO)
    served = len(mock.requests)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    err = info.value
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded"
    assert "source_ip:requests" in err.message
    assert 1 <= int(err.response.headers["retry-after"]) <= 30
    assert err.response.headers["x-ratelimit-limit-requests"] == "2"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(mock.requests) == served  # the refused call never reached the provider


def test_anthropic_sdk_gets_its_rate_limit_error(llm_gateway: tuple[Gateway, MockServer]) -> None:
    gw, _ = llm_gateway
    client = anthropic.Anthropic(base_url=gw.url + "/ant", api_key="x", max_retries=0)
    model = "claude-3-5-sonnet-20241022"
    reply = client.messages.create(model=model, max_tokens=16, messages=HELLO)
    assert reply.content
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=model, max_tokens=16, messages=HELLO)
    err = info.value
    assert err.status_code == 429
    body: Any = err.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "messages per ip" in body["error"]["message"]
    assert 1 <= int(err.response.headers["retry-after"]) <= 30
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_token_limits_settle_after_a_whole_stream(llm_gateway: tuple[Gateway, MockServer]) -> None:
    gw, mock = llm_gateway
    mock.default = Reply(input_tokens=15, output_tokens=10, pieces=5)
    try:
        client = openai.OpenAI(base_url=gw.url + "/tok/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=HELLO,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == Reply().text  # the stream was never cut
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 25
        # 25 of 30 tokens are spent: a call that reserves more than the 5 left waits.
        with pytest.raises(openai.RateLimitError) as info:
            for _ in range(3):
                client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)
        headers = info.value.response.headers
        assert headers["x-ratelimit-limit-tokens"] == "30"
        assert int(headers["retry-after"]) >= 1
    finally:
        mock.default = Reply()


MCP_CONFIG = """
routes:
  - name: mcp
    backend: tools
    policies:
      - type: rate_limit
        limits: [{{key: mcp.tool, requests: 2, window: 60}}]
backends:
  tools:
    type: mcp
    servers:
      alpha: {server}
"""


async def test_an_mcp_tool_call_over_its_limit_gets_a_json_rpc_error() -> None:
    with start_gateway(MCP_CONFIG.format(server=notes_stdio("alpha"))) as gw:
        async with Client(streamable_http_client(gw.url + "/mcp"), mode="legacy") as client:
            assert "alpha_add" in {t.name for t in (await client.list_tools()).tools}
            for _ in range(2):
                result = await client.call_tool("alpha_add", {"a": 2, "b": 3})
                assert result.content[0].text == "5"  # type: ignore[union-attr]
            with pytest.raises(MCPError, match="rate limit exceeded") as info:
                await client.call_tool("alpha_add", {"a": 2, "b": 3})
            assert info.value.error.code == -32029
            assert "mcp.tool:requests" in info.value.error.message
            assert "retry after" in info.value.error.message
            # Other tools, and lists, still work.
            assert not (await client.call_tool("alpha_whoami", {})).is_error
            assert (await client.list_tools()).tools


GLOBAL_CONFIG = """
accounting:
  store: {{type: redis, url: "redis://127.0.0.1:{redis}/0", prefix: "{prefix}"}}
routes:
  - name: chat
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies:
      - type: rate_limit
        limits: [{{key: model, requests: 5, window: 60, mode: global}}]
backends:
  llm:
    type: llm
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {key}}}
    models:
      - name: gpt-4o
        targets: [{{provider: oa}}]
"""


def test_a_global_limit_holds_across_two_gateways(llm_gateway: tuple[Gateway, MockServer]) -> None:
    _, mock = llm_gateway
    with redis_server() as port:
        config = GLOBAL_CONFIG.format(redis=port, prefix="g2:", oa=mock.url, key=API_KEY)
        with start_gateway(config) as one, start_gateway(config) as two:
            granted = 0
            for i in range(12):
                gw = (one, two)[i % 2]
                client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
                try:
                    client.chat.completions.create(model="gpt-4o", messages=HELLO)
                    granted += 1
                except openai.RateLimitError as exc:
                    assert exc.response.headers["x-ratelimit-limit-requests"] == "5"
            assert granted == 5


@pytest.mark.parametrize("mode", ["allow", "deny"])
def test_redis_down_follows_on_store_error(
    llm_gateway: tuple[Gateway, MockServer], mode: str
) -> None:
    _, mock = llm_gateway
    config = GLOBAL_CONFIG.format(redis=free_port(), prefix="x:", oa=mock.url, key=API_KEY)
    config = config.replace(
        "- type: rate_limit", f"- type: rate_limit\n        on_store_error: {mode}"
    )
    with start_gateway(config) as gw:  # starts and serves though Redis is unreachable
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        for _ in range(7):  # more than the limit
            if mode == "allow":
                assert client.chat.completions.create(model="gpt-4o", messages=HELLO).choices
            else:
                with pytest.raises(openai.InternalServerError) as info:
                    client.chat.completions.create(model="gpt-4o", messages=HELLO)
                assert info.value.status_code == 503
                assert "on_store_error: deny" in info.value.message
        assert gw.log().count("Redis unreachable") == 1
