"""The cache shared through a real `redis-server`: an answer one gateway stored is served by
another (exactly and semantically) without the upstream, and by one started later; and the
semantic cache embedding through an embeddings model of the same backend."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import redis

from tests.helpers import Gateway, RedisServer, redis_server, start_gateway, wait_for
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks.base import MockServer, Reply

CONFIG = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    cache:
      redis_url: "redis://127.0.0.1:{redis_port}/0"
      semantic: {{}}
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
"""

EMBEDDING_CONFIG = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    cache:
      semantic: {{embedding: {{model: text-embedding-3-small}}}}
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
"""


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


@pytest.fixture
def oa() -> Iterator[MockServer]:
    loop = MockLoop()
    try:
        yield loop.start(openai_mock())
    finally:
        loop.close()


def ask(gw: Gateway, content: str) -> tuple[str, str]:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}]
    )
    return raw.headers["x-crossway-cache"], str(raw.parse().choices[0].message.content)


def entries(gw: Gateway) -> float:
    text = httpx.get(gw.admin_url + "/metrics").text
    found = re.search(r'^crossway_llm_cache_entries\{backend="llm"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_gateways_share_entries_through_redis(redis_port: int, oa: MockServer) -> None:
    r = redis.Redis(port=redis_port)
    r.flushdb()
    config = CONFIG.format(redis_port=redis_port, oa=oa.url, okey=API_KEY)
    with start_gateway(config) as one, start_gateway(config) as two:
        oa.default = Reply(text="Paris.")
        assert ask(one, "What is the capital of France?") == ("miss", "Paris.")
        oa.default = Reply(text="not cached")
        wait_for(lambda: entries(two) == 1, timeout=10, what="the entry to reach gateway two")
        assert ask(two, "What is the capital of France?") == ("hit", "Paris.")
        assert ask(two, "What's France's capital?") == ("hit", "Paris.")
        assert len(oa.requests) == 1
        keys = r.keys("crossway:cache:llm:e:*")
        assert len(keys) == 1 and 3500 < r.pttl(keys[0]) / 1000 <= 3600
        oa.default = Reply(text="Rayleigh scattering.")
        assert ask(one, "Why is the sky blue?") == ("miss", "Rayleigh scattering.")
        oa.default = Reply(text="not cached")
        with start_gateway(config) as three:  # started later: reads the feed's backlog
            wait_for(lambda: entries(three) == 2, timeout=10, what="gateway three's backlog")
            assert ask(three, "What's France's capital?") == ("hit", "Paris.")
            # An entry gone from Redis (evicted, flushed) is a miss there, not an error.
            r.flushdb()
            assert ask(three, "Why is the sky blue?") == ("miss", "not cached")
            assert "Traceback" not in three.log()
        assert len(oa.requests) == 3
        for gw in (one, two):
            assert "Traceback" not in gw.log()
    r.close()


def test_prompts_embedded_by_a_model_of_the_backend(oa: MockServer) -> None:
    with start_gateway(EMBEDDING_CONFIG.format(oa=oa.url, okey=API_KEY)) as gw:
        wait_for(lambda: "semantic cache on (4 dimensions" in gw.log(), what="the model probe")
        assert ask(gw, "Embedded question")[0] == "miss"
        assert ask(gw, "Embedded question")[0] == "hit"
        embedded = [q for q in oa.requests if q.path == "/v1/embeddings"]
        assert len(embedded) == 2  # the probe at start, then the prompt once (then exact hit)
        assert b"Embedded question" in embedded[-1].body
        chats = [q for q in oa.requests if q.path == "/v1/chat/completions"]
        assert len(chats) == 1


def test_a_paused_redis_costs_a_bounded_wait_then_the_upstream(oa: MockServer) -> None:
    with RedisServer() as server:
        config = CONFIG.format(redis_port=server.port, oa=oa.url, okey=API_KEY).replace(
            "semantic: {}", "semantic: {}\n      redis_timeout: 0.3"
        )
        with start_gateway(config) as one, start_gateway(config) as two:
            oa.default = Reply(text="stored by one")
            assert ask(one, "Paused question") == ("miss", "stored by one")
            wait_for(lambda: entries(two) == 1, timeout=10, what="the entry to reach two")
            oa.default = Reply(text="from the upstream")
            server.signal(signal.SIGSTOP)  # Redis hangs: the answer's GET cannot complete
            try:
                started = time.monotonic()
                assert ask(two, "Paused question") == ("miss", "from the upstream")
                assert time.monotonic() - started < 2.0
                assert ask(one, "Paused question") == ("hit", "stored by one")  # its own entry
            finally:
                server.signal(signal.SIGCONT)
            wait_for(lambda: "Redis is reachable again" in two.log(), timeout=15, what="recovery")
            assert two.log().count("is unreachable") == 1
            assert "Traceback" not in two.log()
