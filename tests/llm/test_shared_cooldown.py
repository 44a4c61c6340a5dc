"""Cooldown shared through Redis (`routing.cooldown.redis_url`): a deployment one gateway
ejected is skipped by another replica at once, and by one started later; a success clears it
everywhere; an unreachable Redis leaves routing local. Real `redis-server`, real `crossway
serve` processes, the official `openai` SDK."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import redis

from tests.helpers import (
    Gateway,
    free_port,
    redis_server,
    start_gateway,
    wait_for,
)
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks.base import MockServer, Reply

HELLO = [{"role": "user", "content": "hello"}]
SHARED_LOG = "shared by another gateway process"

CONFIG = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    routing:
      retry: {{retries: 0}}
      cooldown: {{failures: 2, seconds: 60, redis_url: "{redis_url}"}}
    providers:
      a: {{type: openai, base_url: "{a}/v1", api_key: {key}}}
      b: {{type: openai, base_url: "{b}/v1", api_key: {key}}}
    models:
      - name: m
        targets:
          - {{provider: a, model: ma, priority: 0}}
          - {{provider: b, model: mb, priority: 1}}
"""


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


@pytest.fixture
def mocks() -> Iterator[tuple[MockServer, MockServer]]:
    loop = MockLoop()
    try:
        yield loop.start(openai_mock()), loop.start(openai_mock())
    finally:
        loop.close()


def ask(gw: Gateway) -> str:
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    resp = c.chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    return str(resp.choices[0].message.content)


def test_an_ejection_reaches_other_replicas(
    redis_port: int, mocks: tuple[MockServer, MockServer]
) -> None:
    a, b = mocks
    a.default = Reply(status=500, error_message="a is down")
    b.default = Reply(text="from b")
    config = CONFIG.format(
        redis_url=f"redis://127.0.0.1:{redis_port}/0", a=a.url, b=b.url, key=API_KEY
    )
    r = redis.Redis(port=redis_port)
    r.flushdb()
    with start_gateway(config) as one, start_gateway(config) as two:
        assert ask(one) == "from b" and ask(one) == "from b"  # two failures: `a` ejected
        assert len(a.requests) == 2
        key = "crossway:llm:llm:cooldown:a/ma"
        wait_for(lambda: r.exists(key) == 1, what="the ejection in Redis")
        assert 55 < r.pttl(key) / 1000 <= 60
        wait_for(lambda: SHARED_LOG in two.log(), what="the other replica to hear of it")
        assert ask(two) == "from b"
        assert len(a.requests) == 2  # replica two never tried `a`
        with start_gateway(config) as three:  # started later: reads the ejection at start
            wait_for(lambda: SHARED_LOG in three.log(), what="the new replica to load it")
            assert ask(three) == "from b" and len(a.requests) == 2

        # `a` recovers; `two` tries it when `b` fails, which clears the cooldown everywhere.
        a.default = Reply(text="from a")
        b.script(Reply(status=500))
        assert ask(two) == "from a"
        wait_for(lambda: r.exists(key) == 0, what="the cooldown cleared in Redis")
        wait_for(lambda: "answered again elsewhere" in one.log(), what="replica one told")
        assert ask(one) == "from a"
    r.close()


def test_an_unreachable_redis_leaves_routing_local(mocks: tuple[MockServer, MockServer]) -> None:
    a, b = mocks
    a.default = Reply(status=500)
    b.default = Reply(text="from b")
    config = CONFIG.format(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", a=a.url, b=b.url, key=API_KEY
    )
    with start_gateway(config) as gw:
        assert [ask(gw) for _ in range(3)] == ["from b"] * 3
        assert len(a.requests) == 2  # ejected locally after two failures
        wait_for(lambda: "Redis for shared cooldown unreachable" in gw.log(), what="a warning")
