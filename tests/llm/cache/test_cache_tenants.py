"""The cache and virtual keys: keys of one team share entries, other teams (and keys without a
team) never see them, exactly or semantically; a hit is recorded in the spend store at zero
cost under the provider `cache`, with the tokens it saved in the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from crossway.store import key_admin
from crossway.store.accounting_sqlite import SqliteAccounting
from tests.helpers import Gateway, start_gateway, wait_for
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks.base import MockServer, Reply

POLL = 0.2
CONFIG = """
accounting:
  flush_interval: {poll}
  refresh_interval: {poll}
  key_poll_interval: {poll}
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
    policies: [{{type: virtual_key}}]
backends:
  llm:
    type: llm
    cache: {{semantic: {{}}}}
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {okey}}}
    models:
      - name: gpt-4o-mini
        targets: [{{provider: oa}}]
"""


class Keys:
    def __init__(self, gateway: Gateway, oa: MockServer, db: Path) -> None:
        self.gateway = gateway
        self.oa = oa
        self.db = db

    async def _with_store(self, op: Any) -> Any:
        store = SqliteAccounting(self.db)
        await store.open()
        try:
            return await op(store)
        finally:
            await store.close()

    def create(self, **fields: Any) -> str:
        secret, _ = asyncio.run(self._with_store(lambda s: key_admin.create_key(s, **fields)))
        wait_for(
            lambda: (
                httpx.get(
                    self.gateway.url + "/v1/models", headers={"authorization": f"Bearer {secret}"}
                ).status_code
                == 200
            ),
            timeout=5,
            what="the key to be loaded",
        )
        return str(secret)

    def spend(self) -> list[dict[str, Any]]:
        return list(
            asyncio.run(self._with_store(lambda s: s.spend_report(["provider"], None, None, {})))
        )

    def ask(self, secret: str, content: str) -> tuple[str, str]:
        client = openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=secret, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": content}]
        )
        return raw.headers["x-crossway-cache"], str(raw.parse().choices[0].message.content)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    data = tmp_path_factory.mktemp("data")
    mocks = MockLoop()
    oa = mocks.start(openai_mock())
    try:
        config = CONFIG.format(poll=POLL, oa=oa.url, okey=API_KEY)
        with start_gateway(config, env={"CROSSWAY_DATA_DIR": str(data)}) as gw:
            yield Keys(gw, oa, data / "accounting.sqlite3")
    finally:
        mocks.close()


def test_teams_never_share_entries_and_hits_cost_nothing(keys: Keys) -> None:
    red_1 = keys.create(name="red-1", team="red")
    red_2 = keys.create(name="red-2", team="red")
    blue = keys.create(name="blue", team="blue")
    solo = keys.create(name="solo")
    keys.oa.default = Reply(text="red's answer", input_tokens=1000, output_tokens=500)
    question = "What is the capital of France?"
    assert keys.ask(red_1, question) == ("miss", "red's answer")
    keys.oa.default = Reply(text="fresh answer", input_tokens=1000, output_tokens=500)
    assert keys.ask(red_2, question) == ("hit", "red's answer")  # same team: shared
    assert keys.ask(red_2, "What's France's capital?") == ("hit", "red's answer")
    assert keys.ask(blue, question) == ("miss", "fresh answer")  # another team: never
    assert keys.ask(blue, "What's France's capital?") == ("hit", "fresh answer")
    assert keys.ask(solo, question) == ("miss", "fresh answer")  # no team: its own
    assert len(keys.oa.requests) == 3

    def recorded() -> bool:
        return sum(row["requests"] for row in keys.spend()) == 6

    wait_for(recorded, timeout=5, what="the spend records")
    rows = {row["provider"]: row for row in keys.spend()}
    assert rows["cache"]["requests"] == 3
    assert rows["cache"]["cost"] == 0.0
    assert rows["cache"]["input_tokens"] == 0 and rows["cache"]["output_tokens"] == 0
    assert rows["oa"]["requests"] == 3 and rows["oa"]["cost"] > 0
    metrics = httpx.get(keys.gateway.admin_url + "/metrics").text
    saved = [
        line
        for line in metrics.splitlines()
        if line.startswith('crossway_llm_cache_saved_tokens_total{backend="llm"}')
    ]
    assert saved and float(saved[0].split()[-1]) == 4500.0
    cost = [
        line
        for line in metrics.splitlines()
        if line.startswith('crossway_llm_cache_saved_cost_usd_total{backend="llm"}')
    ]
    assert cost and float(cost[0].split()[-1]) > 0
