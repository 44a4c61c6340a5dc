"""Issue 9's "done when" across replicas: three `crossway serve` processes started from
`examples/replicas.yaml` as it is, sharing one real `redis-server`, behind an OpenAI mock.

- a global limit of `CROSSWAY_RPM` requests per minute per key holds across the replicas;
- a shared team budget, once spent, stops all three replicas;
- a key revoked on one replica is refused by the others within 1 s;
- Redis going away mid-run: the global limit fails open, cached keys keep working, nothing
  answers 500, `/readyz` says the store fails, and the spend queued meanwhile is written once
  Redis is back (on the same port, with its data: it runs with an fsync'ed append-only file).

Every key is fresh, so each test has its own rate-limit window and nothing depends on order.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest

from crossway.store.accounting import period_name
from crossway.store.accounting_redis import RedisAccounting
from tests.helpers import ROOT, Gateway, RedisServer, start_gateway, wait_for
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks.base import MockServer, Reply

CONFIG = ROOT / "examples" / "replicas.yaml"
RPM = 60
"""`CROSSWAY_RPM`: small, so a window's worth of requests is quick to send."""
TEAM_BUDGET = 0.002
"""`CROSSWAY_TEAM_BUDGET` of team `research` (USD, monthly)."""
FLUSH = 1.0
REFRESH = 1.0
"""`flush_interval` and `refresh_interval` as examples/replicas.yaml sets them."""
BIG = Reply(input_tokens=2000, output_tokens=1000)
BIG_COST = 2000 * 0.15e-6 + 1000 * 0.60e-6
"""$0.0009: gpt-4o-mini's bundled price is $0.15 in / $0.60 out per 1M tokens."""
SMALL_COST = 12 * 0.15e-6 + 7 * 0.60e-6
"""The mock's default usage (12 in, 7 out)."""
HELLO: Any = [{"role": "user", "content": "hello"}]
PREFIX = "crossway:"


@dataclass
class Cluster:
    redis: RedisServer
    mock: MockServer
    replicas: list[Gateway]
    clients: list[openai.OpenAI] = field(default_factory=list)

    def store(self, work: Callable[[RedisAccounting], Any]) -> Any:
        """Run `work(store)` on a fresh connection to the replicas' store."""

        async def go() -> Any:
            store = RedisAccounting(self.redis.url, PREFIX)
            await store.open()
            try:
                return await work(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def key_spend(self, key_id: str) -> tuple[int, float]:
        """Requests and USD the store holds for one key."""
        rows = self.store(lambda s: s.spend_report(["key"], None, None, {"key": key_id}))
        return (rows[0]["requests"], rows[0]["cost"]) if rows else (0, 0.0)

    def llm_calls(self) -> int:
        """Chat completions the upstream answered (key probes list models, not counted)."""
        return sum(1 for r in self.mock.requests if r.path == "/v1/chat/completions")

    def create_key(self, replica: int = 0, **fields: Any) -> tuple[str, str]:
        """A key made through one replica's admin API: `(secret, id)`."""
        r = httpx.post(self.replicas[replica].admin_url + "/keys", json=fields, timeout=10)
        assert r.status_code == 201, r.text
        body = r.json()
        return body["key"], body["id"]

    def openai(self, replica: int, secret: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.replicas[replica].url + "/v1", api_key=secret, max_retries=0
        )

    def status(self, replica: int, secret: str) -> int:
        """What a cheap authenticated call to one replica answers (`GET /v1/models`)."""
        r = httpx.get(
            self.replicas[replica].url + "/v1/models",
            headers={"authorization": f"Bearer {secret}"},
            timeout=10,
        )
        return r.status_code

    def wait_key_everywhere(self, secret: str) -> None:
        for i in range(len(self.replicas)):
            wait_for(lambda i=i: self.status(i, secret) == 200, timeout=5, what=f"key on #{i}")

    def readyz(self, replica: int) -> dict[str, Any]:
        r = httpx.get(self.replicas[replica].admin_url + "/readyz", timeout=10)
        body: dict[str, Any] = r.json()
        body["status_code"] = r.status_code
        return body


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Killed and started again mid-run with its data (an fsync'ed append-only file).
    redis_process = RedisServer(persistent=True)
    redis_process.start()
    mocks = MockLoop()
    mock = mocks.start(openai_mock())
    text = CONFIG.read_text()
    try:
        with contextlib.ExitStack() as stack:
            replicas = []
            for i in range(3):
                env = {
                    "REDIS_URL": redis_process.url,
                    "OPENAI_BASE_URL": mock.url + "/v1",
                    "OPENAI_API_KEY": API_KEY,
                    "CROSSWAY_RPM": str(RPM),
                    "CROSSWAY_TEAM_BUDGET": str(TEAM_BUDGET),
                    "CROSSWAY_DATA_DIR": str(tmp_path_factory.mktemp(f"replica{i}")),
                }
                # The example has its own listen:/admin: sections reading CROSSWAY_PORT and
                # CROSSWAY_ADMIN_PORT, which start_gateway sets to the ports it picked.
                replicas.append(stack.enter_context(start_gateway(text, env=env)))
            yield Cluster(redis_process, mock, replicas)
    finally:
        mocks.close()
        redis_process.kill()


@pytest.fixture(autouse=True)
def _reset(cluster: Cluster) -> None:
    cluster.mock.replies.clear()
    cluster.mock.requests.clear()
    cluster.mock.default = Reply()
    if not cluster.redis.running:
        cluster.redis.start()  # a test that stopped it failed before starting it again


def test_global_limit_holds_across_the_replicas(cluster: Cluster) -> None:
    secret, _ = cluster.create_key(name="load")
    cluster.wait_key_everywhere(secret)  # GET /v1/models: not an LLM call, not counted
    clients = [cluster.openai(i, secret) for i in range(3)]
    sent = 150

    def call(n: int) -> Any:
        try:
            return clients[n % 3].chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=HELLO
            )
        except openai.APIStatusError as exc:
            return exc

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(call, range(sent)))
    took = time.monotonic() - started
    assert took < 50, f"{sent} requests took {took:.1f}s, more than one window"
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert abs(len(ok) - RPM) <= 0.01 * RPM, (len(ok), [str(r) for r in refused[:3]])
    assert all(isinstance(r, openai.RateLimitError) for r in refused), {
        type(r).__name__ for r in refused
    }
    assert cluster.llm_calls() == len(ok)  # a refused call never reaches the upstream
    for exc in refused:
        headers = exc.response.headers
        assert 0 < int(headers["retry-after"]) <= 60, dict(headers)
        assert headers["x-ratelimit-limit-requests"] == str(RPM), dict(headers)
        assert headers["x-ratelimit-remaining-requests"] == "0", dict(headers)
        assert headers.get("x-ratelimit-reset-requests"), dict(headers)
    # Every replica took part in admitting and in refusing.
    for i in range(3):
        assert any(not isinstance(r, Exception) for r in results[i::3])
        assert any(isinstance(r, Exception) for r in results[i::3])
    # Each admitted call carries the shared counter's view: 59, 58, ... 0, none repeated.
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok)
    assert remaining == list(range(RPM)), remaining


def _refused_for_budget(cluster: Cluster, replica: int, secret: str, scope: str = "team") -> bool:
    try:
        cluster.openai(replica, secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    except openai.RateLimitError as exc:
        assert exc.code == "budget_exceeded", exc
        assert "remaining budget $0.000000" in exc.message, exc.message
        if scope == "team":
            assert "the team 'research'" in exc.message, exc.message
            assert "per month; remaining" in exc.message, exc.message
            assert int(exc.response.headers["retry-after"]) > 0  # the month ends
        return True
    return False


def test_a_team_budget_stops_all_three_replicas(cluster: Cluster) -> None:
    cluster.mock.default = BIG
    # One key of team research per replica, each made on that replica.
    secrets = [cluster.create_key(i, team="research", name=f"r{i}")[0] for i in range(3)]
    for secret in secrets:
        cluster.wait_key_everywhere(secret)
    period = period_name("monthly", time.time(), ZoneInfo("UTC"))

    def team_spend() -> float:
        (spent,) = cluster.store(lambda s: s.period_spend([("team:research", period)]))
        return float(spent)

    assert team_spend() == 0.0
    calls = 0
    first_refusal: int | None = None
    for n in range(60):
        i = n % 3
        if _refused_for_budget(cluster, i, secrets[i]):
            first_refusal = i
            break
        calls += 1
    assert first_refusal is not None, f"{calls} calls of ${BIG_COST} never hit ${TEAM_BUDGET}"
    refused_at = time.monotonic()
    # The others follow once the spend is flushed and their totals refreshed.
    for i in range(3):
        wait_for(
            lambda i=i: _refused_for_budget(cluster, i, secrets[i]),
            timeout=FLUSH + REFRESH + 3,
            what=f"replica {i} to refuse the spent team",
        )
    took = time.monotonic() - refused_at
    assert took < FLUSH + REFRESH + 1.5, took
    # Every replica refuses every key of the team now (also the ones made on the others).
    for i in range(3):
        for secret in secrets:
            assert _refused_for_budget(cluster, i, secret)
    wait_for(
        lambda: team_spend() == pytest.approx(calls * BIG_COST),
        timeout=FLUSH + 3,
        what="the team's spend to be written",
    )
    spent = team_spend()
    assert cluster.llm_calls() == calls
    # A replica refuses once the total it knows (the store's as last read, plus its own unwritten
    # spend) reaches the budget, so the team spent at least the budget before any refusal...
    assert spent >= TEAM_BUDGET
    # ...and each replica admits at most until its OWN spend alone reaches the budget, plus the
    # one call that started just below it. Calls one after another, three replicas: the bound
    # is 3 x (budget + one call); with the replicas refreshing every second it is usually the
    # budget plus a call or two.
    assert spent <= 3 * (TEAM_BUDGET + BIG_COST), (spent, calls)
    rows = cluster.store(lambda s: s.spend_report(["team"], None, None, {"team": "research"}))
    assert rows[0]["requests"] == calls
    assert rows[0]["cost"] == pytest.approx(spent)


def test_a_key_budget_under_concurrent_load_on_all_replicas(cluster: Cluster) -> None:
    """Budgets are checked before a call and debited after it, so calls admitted together can
    overshoot: each replica admits while the spend it knows is below the budget, and `PER_REPLICA`
    calls in flight at one replica all start at the same known spend. The documented bound:
    replicas x (budget + PER_REPLICA calls)."""
    per_replica = 4
    budget = 0.002
    cluster.mock.default = Reply(input_tokens=2000, output_tokens=1000, delay=0.05)
    secret, key_id = cluster.create_key(0, name="concurrent", max_budget=budget)
    cluster.wait_key_everywhere(secret)
    clients = [cluster.openai(i, secret) for i in range(3)]

    def call(n: int) -> str:
        try:
            clients[n % 3].chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        except openai.APIStatusError as exc:
            return str(exc.code)
        return "ok"

    # One pool per replica, `per_replica` threads each: the bound's premise is at most that
    # many calls in flight at one replica (one shared pool let refused calls, which return at
    # once, leave more than `per_replica` of one replica's calls in flight together).
    pools = [ThreadPoolExecutor(max_workers=per_replica) for _ in range(3)]
    try:
        futures = [pools[n % 3].submit(call, n) for n in range(48)]
        results = [f.result() for f in futures]
    finally:
        for pool in pools:
            pool.shutdown()
    admitted = results.count("ok")
    assert set(results) == {"ok", "budget_exceeded"}, set(results)
    wait_for(
        lambda: cluster.key_spend(key_id)[0] == admitted,
        timeout=FLUSH + 3,
        what="the key's spend to be written",
    )
    spent = cluster.key_spend(key_id)[1]
    assert spent == pytest.approx(admitted * BIG_COST)
    assert budget <= spent <= 3 * (budget + per_replica * BIG_COST), (spent, admitted)
    for i in range(3):
        wait_for(
            lambda i=i: _refused_for_budget(cluster, i, secret, "key"),
            timeout=FLUSH + REFRESH + 3,
            what=f"replica {i} to refuse the spent key",
        )


def _cli(*args: str) -> list[str]:
    """`crossway keys ...` as an operator runs it; its stdout lines."""
    done = subprocess.run(
        [sys.executable, "-m", "crossway", "keys", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_key_revoked_on_one_replica_is_refused_by_the_others_within_a_second(
    cluster: Cluster,
) -> None:
    admin = cluster.replicas[0].admin_url
    out = _cli("create", "--admin", admin, "--name", "revoke-me", "--models", "gpt-4o-mini")
    secret = out[-1]
    assert secret.startswith("sk-cw-") and secret.strip() == secret, out
    (key_id,) = [line.split()[-1] for line in out if line.startswith("id:")]
    cluster.wait_key_everywhere(secret)
    for i in (1, 2):  # used on the other replicas
        reply = cluster.openai(i, secret).chat.completions.create(
            model="gpt-4o-mini", messages=HELLO
        )
        assert reply.choices[0].message.content
    _cli("revoke", "--admin", admin, key_id)
    revoked = time.monotonic()
    # The replica that revoked it learns it like the others, from the store's version (its
    # admin API and its request path share only the store), so all three are waited for.
    for i in (1, 2, 0):
        wait_for(lambda i=i: cluster.status(i, secret) == 401, timeout=3, what=f"401 on #{i}")
    took = time.monotonic() - revoked
    assert took < 1.0, f"a replica accepted the revoked key for {took:.2f}s"
    with pytest.raises(openai.AuthenticationError):
        cluster.openai(2, secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    shown = httpx.get(cluster.replicas[1].admin_url + f"/keys/{key_id}", timeout=10).json()
    assert shown["status"] == "revoked"


def test_a_key_rotated_on_one_replica_keeps_working_only_with_its_new_secret(
    cluster: Cluster,
) -> None:
    old, key_id = cluster.create_key(2, name="rotate-me")
    cluster.wait_key_everywhere(old)
    r = httpx.post(cluster.replicas[2].admin_url + f"/keys/{key_id}/rotate", timeout=10)
    assert r.status_code == 200, r.text
    new = r.json()["key"]
    assert new != old and r.json()["id"] == key_id
    rotated = time.monotonic()
    for i in range(3):
        wait_for(lambda i=i: cluster.status(i, old) == 401, timeout=3, what=f"old 401 on #{i}")
    took = time.monotonic() - rotated
    assert took < 1.0, f"a replica accepted the replaced secret for {took:.2f}s"
    cluster.wait_key_everywhere(new)


@dataclass
class Traffic:
    """Calls sent one after another, round robin over the replicas, until stopped."""

    cluster: Cluster
    secret: str
    statuses: list[tuple[str, int, str]] = field(default_factory=list)
    """(phase, status, error code) of each call."""
    slowest: dict[str, float] = field(default_factory=dict)
    """The longest call of each phase (seconds)."""
    phase: str = "up"
    stop: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None

    def run(self) -> None:
        clients = [httpx.Client(base_url=gw.url, timeout=10) for gw in self.cluster.replicas]
        try:
            n = 0
            while not self.stop.is_set():
                phase = self.phase
                started = time.monotonic()
                r = clients[n % 3].post(
                    "/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": HELLO},
                    headers={
                        "authorization": f"Bearer {self.secret}",
                        "x-request-id": uuid.uuid4().hex,
                    },
                )
                code = ""
                if r.status_code != 200:
                    code = str(r.json().get("error", {}).get("code"))
                self.statuses.append((phase, r.status_code, code))
                took = time.monotonic() - started
                self.slowest[phase] = max(self.slowest.get(phase, 0.0), took)
                n += 1
                # Well under RPM calls per minute while Redis is up (so nothing is limited).
                self.stop.wait(0.1)
        except BaseException as exc:  # the test asserts on it
            self.failure = exc
        finally:
            for client in clients:
                client.close()

    def count(self, phase: str, status: int = 200) -> int:
        return sum(1 for p, s, _ in self.statuses if p == phase and s == status)


def test_redis_going_away_mid_run(cluster: Cluster) -> None:
    secret, key_id = cluster.create_key(1, name="outage")
    cluster.wait_key_everywhere(secret)
    traffic = Traffic(cluster, secret)
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: traffic.count("up") >= 3, timeout=5, what="traffic")
        traffic.phase = "down"
        cluster.redis.kill()
        for i in range(3):
            wait_for(
                lambda i=i: (
                    not cluster.readyz(i).get("stores", {}).get("accounting", {}).get("ok", True)
                ),
                timeout=FLUSH + 3,
                what=f"replica {i}'s /readyz to report the accounting store failing",
            )
            body = cluster.readyz(i)
            assert body["status_code"] == 200 and body["degraded"] is True, body
            assert "127.0.0.1" in body["stores"]["accounting"]["error"], body
        # The admin API answers a store it cannot reach with 503 and a JSON error, not 500.
        for method, path in (("POST", "/keys"), ("GET", "/keys"), ("GET", "/spend")):
            r = httpx.request(
                method,
                cluster.replicas[0].admin_url + path,
                json={"name": "during-outage"} if method == "POST" else None,
                timeout=10,
            )
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            assert r.json()["error"]["message"], r.text
        wait_for(lambda: traffic.count("down") >= 6, timeout=5, what="traffic during the outage")
        traffic.phase = "back"
        cluster.redis.start()
        for i in range(3):
            wait_for(
                lambda i=i: cluster.readyz(i).get("stores", {}).get("accounting", {}).get("ok"),
                timeout=FLUSH + 5,
                what=f"replica {i}'s /readyz to report the accounting store working again",
            )
        wait_for(lambda: traffic.count("back") >= 3, timeout=5, what="traffic after the outage")
    finally:
        traffic.stop.set()
        thread.join(15)
    assert traffic.failure is None, traffic.failure
    odd = [s for s in traffic.statuses if s[1] != 200]
    # The global limit fails open (on_store_error: allow) and cached keys keep working.
    assert not odd, odd
    # A dead Redis costs a call at most the limit's store_timeout (0.25 s), never a hang.
    assert traffic.slowest["down"] < 1.0, traffic.slowest
    for gw in cluster.replicas:
        assert gw.proc.poll() is None, gw.log()[-3000:]
    acknowledged = len(traffic.statuses)
    assert cluster.llm_calls() == acknowledged
    wait_for(
        lambda: cluster.key_spend(key_id)[0] >= acknowledged,
        timeout=FLUSH + 5,
        what="the spend queued during the outage to be written",
    )
    requests, cost = cluster.key_spend(key_id)
    assert requests == acknowledged  # nothing lost, nothing twice
    assert cost == pytest.approx(acknowledged * SMALL_COST)
    # The key still works everywhere, and new calls are limited again (Redis answers).
    cluster.wait_key_everywhere(secret)


def test_the_example_file_is_used_verbatim(cluster: Cluster) -> None:
    """Guard: the replicas run examples/replicas.yaml itself (no test-only variant)."""
    for gw in cluster.replicas:
        assert gw.config_path.read_text() == Path(CONFIG).read_text()
