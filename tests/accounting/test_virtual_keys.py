"""Virtual keys end to end on the embedded store (no Redis): a key made in the store works with
the official SDKs, is scoped to its models, stops at its budget with `budget_exceeded`, stops
within the poll interval once revoked, and every call's spend lands in the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from crossway.store import key_admin
from crossway.store.accounting_sqlite import SqliteAccounting
from tests.helpers import Gateway, start_gateway, wait_for
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks import anthropic as anthropic_mock
from tests.mocks.base import MockServer, Reply

HELLO: Any = [{"role": "user", "content": "hello"}]
POLL = 0.2

CONFIG = """
accounting:
  flush_interval: {poll}
  refresh_interval: {poll}
  key_poll_interval: {poll}
  teams:
    capped: {{max_budget: 0.0005}}
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies: [{{type: virtual_key}}]
backends:
  llm:
    type: llm
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
      ant: {{type: anthropic, base_url: "{ant}", api_key: {akey}}}
    models:
      - name: gpt-4o-mini
        targets: [{{provider: oa}}]
      - name: gpt-4o
        targets: [{{provider: oa}}]
      - name: claude-3-5-haiku-20241022
        targets: [{{provider: ant}}]
      - name: text-embedding-3-small
        targets: [{{provider: oa}}]
"""


@dataclass
class Stack:
    gateway: Gateway
    oa: MockServer
    ant: MockServer
    db: Path

    def store(self) -> SqliteAccounting:
        return SqliteAccounting(self.db)

    def create(self, **fields: Any) -> tuple[str, Any]:
        async def go() -> tuple[str, Any]:
            store = self.store()
            await store.open()
            try:
                return await key_admin.create_key(store, **fields)
            finally:
                await store.close()

        return asyncio.run(go())

    def call(self, coro: Any) -> Any:
        async def go() -> Any:
            store = self.store()
            await store.open()
            try:
                return await coro(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("data")
    mocks = MockLoop()
    oa = mocks.start(openai_mock())
    ant = mocks.start(MockServer(anthropic_mock.handle))
    config = CONFIG.format(
        poll=POLL, oa=oa.url, ant=ant.url, okey=API_KEY, akey=anthropic_mock.API_KEY
    )
    try:
        with start_gateway(config, env={"CROSSWAY_DATA_DIR": str(data)}) as gw:
            yield Stack(gw, oa, ant, data / "accounting.sqlite3")
    finally:
        mocks.close()


@pytest.fixture(autouse=True)
def _reset(stack: Stack) -> None:
    for mock in (stack.oa, stack.ant):
        mock.replies.clear()
        mock.requests.clear()
        mock.default = Reply()


def _wait_key(stack: Stack, secret: str) -> None:
    """A key made outside the gateway works once the gateway polled the store."""

    def works() -> bool:
        r = httpx.get(
            stack.gateway.url + "/v1/models", headers={"authorization": f"Bearer {secret}"}
        )
        return r.status_code == 200

    wait_for(works, timeout=5, what="the new key to be loaded")


def test_key_works_with_the_openai_sdk_and_stays_at_the_gateway(stack: Stack) -> None:
    secret, _ = stack.create(name="ci")
    _wait_key(stack, secret)
    resp = stack.openai(secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert resp.choices[0].message.content
    upstream = stack.oa.requests[-1]
    assert upstream.headers.get("authorization") == f"Bearer {API_KEY}"
    assert secret not in str(dict(upstream.headers))


def test_unknown_malformed_and_missing_keys_get_401(stack: Stack) -> None:
    for key in ("sk-cw-not-a-real-key", "sk-cw-", "sk-somebody-elses"):
        with pytest.raises(openai.AuthenticationError) as info:
            stack.openai(key).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert info.value.status_code == 401
        assert info.value.response.headers["www-authenticate"].startswith("Bearer")
    r = httpx.post(stack.gateway.url + "/v1/chat/completions", json={"model": "gpt-4o-mini"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    assert not stack.oa.requests


def test_expired_key_is_refused(stack: Stack) -> None:
    secret, key = stack.create(expires_in=1)
    _wait_key(stack, secret)

    def expired() -> bool:
        try:
            stack.openai(secret).models.list()
        except openai.AuthenticationError as exc:
            assert exc.code == "expired_api_key"
            return True
        return False

    wait_for(expired, timeout=3, what="the key to expire")
    assert time.time() >= key.expires_at


def test_models_outside_the_scope_are_refused_and_not_listed(stack: Stack) -> None:
    secret, _ = stack.create(models=["gpt-4o-mini"])
    _wait_key(stack, secret)
    client = stack.openai(secret)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.code == "model_not_allowed"
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    assert not stack.oa.requests


def test_revoked_key_stops_within_a_second(stack: Stack) -> None:
    secret, key = stack.create()
    _wait_key(stack, secret)
    stack.call(lambda store: key_admin.revoke_key(store, key.id))
    revoked = time.monotonic()

    def refused() -> bool:
        r = httpx.get(
            stack.gateway.url + "/v1/models", headers={"authorization": f"Bearer {secret}"}
        )
        return r.status_code == 401

    wait_for(refused, timeout=2, what="the revoked key to be refused")
    assert time.monotonic() - revoked < 1.0


def test_budget_stops_the_key_with_budget_exceeded(stack: Stack) -> None:
    # gpt-4o-mini: $0.15 in / $0.60 out per 1M tokens -> $0.0009 per call
    stack.oa.default = Reply(input_tokens=2000, output_tokens=1000)
    secret, key = stack.create(max_budget=0.001, models=["gpt-4o-mini"])
    _wait_key(stack, secret)
    client = stack.openai(secret)
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # $0.0009 < $0.001
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert info.value.code == "budget_exceeded"
    body: Any = info.value.body
    assert "remaining budget $0.000000" in body["message"]
    assert len(stack.oa.requests) == 2

    def flushed() -> bool:
        rows = stack.call(lambda s: s.spend_report(["key"], None, None, {"key": key.id}))
        return bool(rows) and rows[0]["requests"] == 2

    wait_for(flushed, timeout=5, what="spend to be written")
    rows = stack.call(lambda s: s.spend_report(["key", "model"], None, None, {"key": key.id}))
    assert rows[0]["model"] == "gpt-4o-mini"
    assert rows[0]["cost"] == pytest.approx(2 * 0.0009)
    assert rows[0]["input_tokens"] == 4000


def test_streamed_calls_are_debited_and_a_team_budget_stops_the_anthropic_sdk(
    stack: Stack,
) -> None:
    stack.ant.default = Reply(input_tokens=1000, output_tokens=100)
    secret, _ = stack.create(team="capped")
    _wait_key(stack, secret)
    client = anthropic.Anthropic(base_url=stack.gateway.url, api_key=secret, max_retries=0)
    spent = 0
    with pytest.raises(anthropic.RateLimitError) as info:
        for _ in range(10):
            with client.messages.stream(
                model="claude-3-5-haiku-20241022", max_tokens=50, messages=HELLO
            ) as stream:
                assert stream.get_final_message().content
            spent += 1
    # claude-3-5-haiku: $0.80 in / $4 out per 1M -> $0.0012 per call; the team has $0.0005
    assert spent == 1
    assert "budget_exceeded" in str(info.value)
    assert info.value.response.headers.get("retry-after") is None  # a total budget never resets


def test_cli_key_on_the_embedded_store_spends_its_budget(stack: Stack) -> None:
    """The issue's line: `crossway keys create ... --max-budget 0.001 --models gpt-4o-mini`
    straight on the store (`--config`), no Redis; the openai SDK can use the key until the
    budget is spent, then gets `RateLimitError` with `budget_exceeded`."""
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "crossway",
            "keys",
            "create",
            "--config",
            str(stack.gateway.config_path),
            "--name",
            "budgeted",
            "--max-budget",
            "0.001",
            "--models",
            "gpt-4o-mini",
        ],
        env=stack.gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    secret = out.stdout.strip().splitlines()[-1]
    assert secret.startswith("sk-cw-")
    _wait_key(stack, secret)
    stack.oa.default = Reply(input_tokens=2000, output_tokens=1000)  # $0.0009 per call
    client = stack.openai(secret)
    calls = 0
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(5):
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            calls += 1
    assert calls == 2
    assert info.value.code == "budget_exceeded"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)


def test_a_changed_rpm_applies_once_the_key_is_reloaded(stack: Stack) -> None:
    secret, key = stack.create(rpm=1)
    _wait_key(stack, secret)
    client = stack.openai(secret)
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert info.value.code == "rate_limit_exceeded"
    assert int(info.value.response.headers["retry-after"]) >= 1
    stack.call(lambda store: key_admin.update_key(store, key.id, rpm=1000))

    def admitted() -> bool:
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        except openai.RateLimitError:
            return False
        return True

    wait_for(admitted, timeout=5, what="the new rpm to apply")


def test_embeddings_spend_is_recorded(stack: Stack) -> None:
    stack.oa.default = Reply(input_tokens=500_000)
    secret, key = stack.create(name="embedder")
    _wait_key(stack, secret)
    out = stack.openai(secret).embeddings.create(
        model="text-embedding-3-small", input=["one", "two"]
    )
    assert len(out.data) == 2

    def written() -> list[dict[str, Any]]:
        return list(
            stack.call(lambda s: s.spend_report(["key", "model"], None, None, {"key": key.id}))
        )

    wait_for(lambda: bool(written()), timeout=5, what="the embeddings spend")
    (row,) = written()
    assert row["model"] == "text-embedding-3-small"
    assert row["input_tokens"] == 1_000_000
    assert row["cost"] == pytest.approx(0.02)  # $0.02 per 1M tokens
