"""The admin API's virtual keys, teams, users, spend and budgets, through a real HTTP server
(the admin app under uvicorn on a free loopback port) on the SQLite store in a tmp data dir."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import uvicorn

from crossway.config import load_config
from crossway.server.admin import ConfigView, create_admin_app
from crossway.store.accounting import SpendRecord, digest, new_id, period_names
from crossway.store.accounting_sqlite import SqliteAccounting
from tests.helpers import free_port

TOKEN = "admin-t0ken-for-tests"
CONFIG = """\
routes: []
accounting:
  teams:
    research: {max_budget: 100, budget_period: monthly, rpm: 600}
  users:
    alice: {max_budget: 5, budget_period: daily}
"""


class Admin:
    def __init__(self, url: str, session: aiohttp.ClientSession, data: Path) -> None:
        self.url = url
        self.session = session
        self.data = data

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            text = await resp.text()
            return resp.status, (await resp.json(content_type=None)) if text else None

    def store(self) -> SqliteAccounting:
        return SqliteAccounting(self.data / "accounting.sqlite3")


@asynccontextmanager
async def admin_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, admin: str = "{}"
) -> AsyncIterator[Admin]:
    """The admin plane on a free loopback port (`admin:` is the config's admin section; the
    server binds 127.0.0.1 whatever its `host` says)."""
    data = tmp_path / "data"
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(data))
    path = tmp_path / "crossway.yaml"
    path.write_text(f"admin: {admin}\n{CONFIG}")
    app = create_admin_app(ConfigView(str(path), load_config(str(path))), None)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "the admin server stopped before it started"
        await asyncio.sleep(0.01)
    try:
        async with aiohttp.ClientSession() as session:
            yield Admin(f"http://127.0.0.1:{port}", session, data)
    finally:
        server.should_exit = True
        await task


async def test_key_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with admin_app(tmp_path, monkeypatch) as admin:
        status, created = await admin.call(
            "POST",
            "/keys",
            {
                "name": "ci",
                "user": "alice",
                "team": "research",
                "models": ["gpt-4o-mini"],
                "mcp_tools": ["files_read"],
                "agents": ["helper"],
                "max_budget": 0.5,
                "budget_period": "daily",
                "rpm": 60,
                "tpm": 10000,
                "expires_in": "30d",
                "metadata": {"owner": "ops"},
            },
        )
        assert status == 201, created
        secret, key_id = created["key"], created["id"]
        assert secret.startswith("sk-cw-") and key_id.startswith("key_")
        assert created["models"] == ["gpt-4o-mini"] and created["rpm"] == 60
        assert created["status"] == "active"
        assert 29.9 * 86400 < created["expires_at"] - time.time() <= 30 * 86400

        status, shown = await admin.call("GET", f"/keys/{key_id}")
        assert status == 200 and shown["id"] == key_id
        text = str(shown)
        assert secret not in text and digest(secret) not in text and "digest" not in shown

        status, listed = await admin.call("GET", "/keys?team=research")
        assert status == 200 and [k["id"] for k in listed["keys"]] == [key_id]
        assert (await admin.call("GET", "/keys?team=other"))[1]["keys"] == []
        assert secret not in str(listed)

        status, updated = await admin.call(
            "PATCH", f"/keys/{key_id}", {"rpm": None, "models": None, "name": "renamed"}
        )
        assert status == 200, updated
        assert updated["rpm"] is None and updated["models"] == [] and updated["name"] == "renamed"
        assert updated["tpm"] == 10000 and updated["max_budget"] == 0.5  # untouched

        status, rotated = await admin.call("POST", f"/keys/{key_id}/rotate")
        assert status == 200 and rotated["id"] == key_id and rotated["key"] != secret
        assert rotated["tpm"] == 10000 and rotated["metadata"] == {"owner": "ops"}
        store = admin.store()
        try:
            assert await store.key_by_digest(digest(secret)) is None  # the old key stops
            found = await store.key_by_digest(digest(rotated["key"]))
            assert found is not None and found.id == key_id
        finally:
            await store.close()

        status, revoked = await admin.call("POST", f"/keys/{key_id}/revoke")
        assert status == 200 and revoked["status"] == "revoked" and revoked["revoked_at"]
        # Revocation is final.
        for method, path, body in (
            ("POST", f"/keys/{key_id}/rotate", None),
            ("PATCH", f"/keys/{key_id}", {"rpm": 5}),
        ):
            status, answer = await admin.call(method, path, body)
            assert status == 422 and answer["error"]["code"] == "key_revoked", answer
        assert (await admin.call("GET", "/keys"))[1]["keys"] == []
        listed = (await admin.call("GET", "/keys?include_revoked=true"))[1]["keys"]
        assert [k["status"] for k in listed] == ["revoked"]

        # DELETE is revoke's alias; revoking twice changes nothing.
        second = (await admin.call("POST", "/keys", {}))[1]
        status, deleted = await admin.call("DELETE", f"/keys/{second['id']}")
        assert status == 200 and deleted["status"] == "revoked"
        again = (await admin.call("DELETE", f"/keys/{second['id']}"))[1]
        assert again["revoked_at"] == deleted["revoked_at"]


async def test_teams_and_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with admin_app(tmp_path, monkeypatch) as admin:
        status, teams = await admin.call("GET", "/teams")
        assert status == 200
        assert teams["teams"] == [
            {
                "kind": "team",
                "id": "research",
                "max_budget": 100.0,
                "budget_period": "monthly",
                "rpm": 600,
                "tpm": None,
                "metadata": {},
                "updated_at": 0.0,
                "source": "config",
            }
        ]
        status, put = await admin.call(
            "PUT", "/teams/research", {"max_budget": 20, "tpm": 5000, "metadata": {"cc": "42"}}
        )
        assert status == 200 and put["source"] == "store" and put["rpm"] is None
        status, shown = await admin.call("GET", "/teams/research")
        assert shown["max_budget"] == 20 and shown["tpm"] == 5000 and shown["source"] == "store"
        assert [t["source"] for t in (await admin.call("GET", "/teams"))[1]["teams"]] == ["store"]
        status, _ = await admin.call("DELETE", "/teams/research")
        assert status == 200
        assert (await admin.call("GET", "/teams/research"))[1]["source"] == "config"
        # Only the config defines it now: nothing to delete in the store.
        status, answer = await admin.call("DELETE", "/teams/research")
        assert status == 404 and "config" in answer["error"]["message"]

        assert (await admin.call("GET", "/users/bob"))[0] == 404
        assert (await admin.call("DELETE", "/users/bob"))[0] == 404
        status, bob = await admin.call("PUT", "/users/bob@example.com", {"rpm": 3})
        assert status == 200 and bob["id"] == "bob@example.com"
        users = {u["id"]: u["source"] for u in (await admin.call("GET", "/users"))[1]["users"]}
        assert users == {"bob@example.com": "store", "alice": "config"}


async def test_spend_and_budgets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with admin_app(tmp_path, monkeypatch) as admin:
        key = (await admin.call("POST", "/keys", {"max_budget": 1, "team": "research"}))[1]
        now = time.time()
        store = admin.store()
        try:
            await store.open()
            records = [
                SpendRecord(
                    id=new_id("sp"),
                    ts=now - age,
                    cost=cost,
                    key_id=key["id"],
                    user="alice",
                    team="research",
                    model=model,
                    input_tokens=10,
                    output_tokens=5,
                    periods=period_names(now - age, ZoneInfo("UTC")),
                )
                for age, cost, model in ((1, 0.25, "gpt-4o-mini"), (2, 0.5, "gpt-4o"))
            ]
            assert await store.record_spend(records) == 2
        finally:
            await store.close()

        status, report = await admin.call("GET", "/spend")
        assert status == 200 and report["group_by"] == ["key"]
        assert report["rows"] == [
            {
                "key": key["id"],
                "requests": 2,
                "input_tokens": 20,
                "output_tokens": 10,
                "cost": 0.75,
            }
        ]
        assert report["total_cost"] == pytest.approx(0.75)
        status, report = await admin.call("GET", "/spend?group_by=key,model&model=gpt-4o")
        assert status == 200 and [r["model"] for r in report["rows"]] == ["gpt-4o"]
        assert report["total_cost"] == pytest.approx(0.5)
        status, report = await admin.call("GET", f"/spend?group_by=team&start={now + 60:.0f}")
        assert status == 200 and report["rows"] == [] and report["total_cost"] == 0
        status, report = await admin.call(
            "GET", "/spend?group_by=model&start=2000-01-01T00:00:00Z&end=2100-01-01"
        )
        assert status == 200 and report["total_cost"] == pytest.approx(0.75)

        status, budget = await admin.call("GET", f"/budgets/key/{key['id']}")
        assert status == 200, budget
        assert budget["max_budget"] == 1 and budget["budget_period"] == "total"
        assert budget["spent"] == pytest.approx(0.75)
        assert budget["remaining"] == pytest.approx(0.25)
        assert budget["period"] == "total" and budget["resets_at"] is None
        status, team = await admin.call("GET", "/budgets/team/research")
        assert team["max_budget"] == 100 and team["budget_period"] == "monthly"
        assert team["period"].startswith("m") and team["resets_at"] > now
        assert team["spent"] == pytest.approx(0.75)
        status, nobody = await admin.call("GET", "/budgets/user/nobody")
        assert status == 200 and nobody["max_budget"] is None and nobody["spent"] == 0
        assert (await admin.call("GET", "/budgets/key/key_missing"))[0] == 404
        assert (await admin.call("GET", "/budgets/org/x"))[0] == 404


BAD_KEY_BODIES: list[tuple[Any, str]] = [
    ({"max_budget": -1}, "max_budget"),
    ({"max_budget": 1e12}, "max_budget"),
    ({"max_budget": "5"}, "max_budget"),
    ({"max_budget": True}, "max_budget"),
    ({"budget_period": "yearly"}, "budget_period"),
    ({"rpm": 0}, "rpm"),
    ({"rpm": 1.5}, "rpm"),
    ({"tpm": -5}, "tpm"),
    ({"expires_in": "0d"}, "expires_in"),
    ({"expires_in": -60}, "expires_in"),
    ({"expires_in": "soon"}, "expires_in"),
    ({"expires_in": "99999w"}, "expires_in"),
    ({"expires_at": 1}, "expires_at"),
    ({"expires_in": "1d", "expires_at": 1e10}, "expires_at"),
    ({"metadata": {"a": 1}}, "metadata"),
    ({"metadata": ["a=b"]}, "metadata"),
    ({"models": "gpt-4o"}, ""),  # a comma-separated string is fine
    ({"models": [1]}, "models"),
    ({"models": ["a b"]}, "models"),
    ({"user": "a/b"}, "user"),
    ({"team": 5}, "team"),
    ({"name": "x\ny"}, "name"),
    ({"max_budgte": 5}, "max_budgte"),
    ({"key": "sk-cw-chosen"}, "key"),
]


@pytest.mark.parametrize(("body", "field"), BAD_KEY_BODIES, ids=[f for _, f in BAD_KEY_BODIES])
async def test_bad_key_bodies_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: Any, field: str
) -> None:
    async with admin_app(tmp_path, monkeypatch) as admin:
        live = (await admin.call("POST", "/keys", {}))[1]
        for method, path in (("POST", "/keys"), ("PATCH", f"/keys/{live['id']}")):
            status, answer = await admin.call(method, path, body)
            if not field:
                assert status in (200, 201), answer
                continue
            assert status == 400, (method, answer)
            error = answer["error"]
            assert error["type"] == "invalid_request_error"
            assert field in error["message"], error
        keys = (await admin.call("GET", "/keys"))[1]["keys"]
        if field:  # nothing written: no second key, the first one unchanged
            live.pop("key")
            assert keys == [live]


async def test_bad_requests_on_every_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with admin_app(tmp_path, monkeypatch) as admin:
        key_id = (await admin.call("POST", "/keys", {}))[1]["id"]
        for method, path in (
            ("POST", "/keys"),
            ("PATCH", f"/keys/{key_id}"),
            ("PUT", "/teams/t1"),
            ("PUT", "/users/u1"),
        ):
            for raw, status in (
                (b"{not json", 400),
                (b"[1, 2]", 400),
                (b'"text"', 400),
                (b"null", 400),
                (b"{" + b'"name": "' + b"x" * (70 * 1024) + b'"}', 413),
            ):
                got, answer = await admin.call(method, path, raw=raw)
                assert got == status, (method, path, raw[:20], answer)
                assert answer["error"]["message"]
        for path in ("/teams/t1", "/users/u1"):
            for body, field in (
                ({"max_budget": -3}, "max_budget"),
                ({"budget_period": "hourly"}, "budget_period"),
                ({"rpm": 2_000_000_000}, "rpm"),
                ({"models": ["x"]}, "models"),
                ({"metadata": {"k": None}}, "metadata"),
            ):
                status, answer = await admin.call("PUT", path, body)
                assert status == 400 and field in answer["error"]["message"], answer
        status, answer = await admin.call("PUT", "/teams/a%20b", {})
        assert status == 400 and "team" in answer["error"]["message"]
        for path in ("/keys/key_nope", "/keys/key_nope/rotate", "/keys/key_nope/revoke"):
            method = "GET" if path.count("/") == 2 else "POST"
            status, answer = await admin.call(method, path)
            assert status == 404 and answer["error"]["code"] == "key_not_found"
        assert (await admin.call("PATCH", "/keys/key_nope", {"rpm": 1}))[0] == 404
        for path, name in (
            ("/keys?colour=red", "colour"),
            ("/keys?include_revoked=maybe", "include_revoked"),
            (f"/keys/{key_id}?x=1", "x"),
            ("/spend?group_by=key,colour", "colour"),
            ("/spend?start=yesterday", "start"),
            ("/spend?end=-5", "end"),
            ("/spend?start=200&end=100", "end"),
            ("/spend?group_by=key&group_by=team", "group_by"),
            ("/teams?all=1", "all"),
        ):
            status, answer = await admin.call("GET", path)
            assert status == 400 and name in answer["error"]["message"], (path, answer)
        assert (await admin.call("PUT", "/keys"))[0] == 405
        assert (await admin.call("POST", "/teams"))[0] == 405


ROUTES = [
    ("POST", "/keys", {}),
    ("GET", "/keys", None),
    ("GET", "/keys/key_x", None),
    ("PATCH", "/keys/key_x", {"rpm": 1}),
    ("DELETE", "/keys/key_x", None),
    ("POST", "/keys/key_x/rotate", None),
    ("POST", "/keys/key_x/revoke", None),
    ("GET", "/teams", None),
    ("GET", "/teams/t", None),
    ("PUT", "/teams/t", {}),
    ("DELETE", "/teams/t", None),
    ("GET", "/users", None),
    ("GET", "/users/u", None),
    ("PUT", "/users/u", {}),
    ("DELETE", "/users/u", None),
    ("GET", "/spend", None),
    ("GET", "/budgets/team/t", None),
]


async def test_every_route_needs_the_token_when_one_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with admin_app(tmp_path, monkeypatch, f"{{token: {TOKEN}}}") as admin:
        for method, path, body in ROUTES:
            for headers in (
                {},
                {"authorization": "Bearer wrong"},
                {"authorization": TOKEN},
                {"x-api-key": TOKEN},
            ):
                status, answer = await admin.call(method, path, body, headers=headers)
                assert status == 401, (method, path, headers, answer)
                assert answer["error"]["type"] == "authentication_error"
        ok = {"authorization": f"Bearer {TOKEN}", "origin": "https://ops.example"}
        for method, path, body in ROUTES:
            status, answer = await admin.call(method, path, body, headers=ok)
            assert status in (200, 201, 404), (method, path, answer)


async def test_without_a_token_browsers_and_non_loopback_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with admin_app(tmp_path, monkeypatch) as admin:
        evil = {"origin": "https://evil.example"}
        for method, path, body in ROUTES:
            status, answer = await admin.call(method, path, body, headers=evil)
            assert status == 403 and "browser" in answer["error"]["message"], (path, answer)
        assert (await admin.call("GET", "/keys"))[1]["keys"] == []  # the refused POST wrote none
    async with admin_app(tmp_path, monkeypatch, "{host: 0.0.0.0}") as admin:
        for method, path, body in ROUTES:
            status, answer = await admin.call(method, path, body)
            assert status == 403 and "set admin.token" in answer["error"]["message"], answer


async def test_without_a_token_a_rebound_host_name_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a page at evil.example re-pointed to 127.0.0.1 sends its own name as Host,
    and a same-origin GET has no Origin header."""
    async with admin_app(tmp_path, monkeypatch) as admin:
        for host in ("evil.example", "evil.example:15000", "127.0.0.1.evil.example"):
            status, answer = await admin.call("GET", "/keys", None, headers={"host": host})
            assert status == 403, (host, answer)
            assert "admin.token" in answer["error"]["message"]
        for host in ("127.0.0.1", "localhost:15000", "[::1]:15000"):
            status, _ = await admin.call("GET", "/keys", None, headers={"host": host})
            assert status == 200, host
