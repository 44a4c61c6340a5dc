"""`GET /models` on a real admin server: targets in failover order, redaction, cooldowns from
the workers' metrics and from a real shared cooldown store (redis-server), and the Models
page rendering them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis

from crossway.telemetry import metrics
from tests.helpers import RedisServer, serve_admin

TOKEN = "h5-models-admin-token-0123456789"

CONFIG = """\
admin:
  token: ${H5_ADMIN_TOKEN}
routes:
  - name: llm
    match: {path: {prefix: /v1}}
    backend: h5llm
backends:
  h5llm:
    type: llm
    routing:
      cooldown: {failures: 2, seconds: 60, redis_url: "REDIS_URL"}
    prices:
      h5-upstream-big: {input: 3.0, output: 6.0}
    providers:
      primary:
        type: openai_compatible
        base_url: http://user:hunter2-provider-pass@127.0.0.1:9/v1
        api_key: sk-h5-provider-key-never-shown
      backup:
        type: openai_compatible
        base_url: http://127.0.0.1:9/v2
    models:
      - name: h5-chat
        targets:
          - {provider: backup, model: h5-upstream-small, priority: 1}
          - {provider: primary, model: h5-upstream-big, weight: 1}
          - {provider: primary, model: h5-upstream-big-2, weight: 3}
"""


@asynccontextmanager
async def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("H5_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # this process's metrics
    path = tmp_path / "crossway.yaml"
    path.write_text(CONFIG.replace("REDIS_URL", redis_url))
    async with serve_admin(path) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield client


AUTH = {"authorization": f"Bearer {TOKEN}"}


async def test_models_in_failover_order_with_cooldowns_shared_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisServer()
    store.start()
    try:
        until = time.time() + 120
        client = redis.Redis(port=store.port)
        client.set("crossway:llm:h5llm:cooldown:primary/h5-upstream-big", repr(until), ex=120)
        client.close()
        metrics.observe_llm_cooldown("backup/h5-upstream-small")
        async with served(tmp_path, monkeypatch, store.url) as api:
            assert (await api.get("/models")).status_code == 401
            response = await api.get("/models", headers=AUTH)
            page = await api.get("/ui/models", headers=AUTH)
            store.stop()  # the shared store goes away: said so, the route still answers
            down = await api.get("/models", headers=AUTH)
    finally:
        store.stop()
    assert response.status_code == 200
    body = response.json()
    assert "hunter2" not in response.text and "sk-h5-provider" not in response.text
    [backend] = body["backends"]
    assert backend["routing"]["shared_cooldown"] is True and backend["shared_cooldown"]["ok"]
    providers = {p["name"]: p for p in backend["providers"]}
    assert providers["primary"]["base_url"].startswith("http://user:")
    assert "**********" in providers["primary"]["base_url"]
    [model] = backend["models"]
    order = [(t["order"], t["deployment"]) for t in model["targets"]]
    # Priority 0 first (heavier weight first), the priority-1 backup last.
    assert order == [
        (1, "primary/h5-upstream-big-2"),
        (2, "primary/h5-upstream-big"),
        (3, "backup/h5-upstream-small"),
    ]
    targets = {t["deployment"]: t for t in model["targets"]}
    assert targets["primary/h5-upstream-big"]["cooldown_until"] == pytest.approx(until)
    assert targets["primary/h5-upstream-big-2"]["cooldown_until"] is None
    assert targets["backup/h5-upstream-small"]["ejections"] >= 1
    assert targets["primary/h5-upstream-big"]["price"]["input"] == 3.0
    assert targets["primary/h5-upstream-big"]["price_source"] == "configured"
    assert not any("redis_url" in note for note in body["notes"])

    assert page.status_code == 200
    assert "ejected" in page.text and "until" in page.text
    assert "hunter2" not in page.text and TOKEN not in page.text

    assert down.status_code == 200
    shared = down.json()["backends"][0]["shared_cooldown"]
    assert shared["ok"] is False and "unreachable" in shared["error"]
