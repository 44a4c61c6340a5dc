"""The admin plane's `/pins` routes: who may change pins, and pins kept in SQLite approved from
the supervisor while several workers serve."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from starlette.applications import Starlette

from crossway.config import Config, parse_config
from crossway.server.admin_pins import pin_routes
from tests.helpers import ROOT, free_port, start_gateway
from tests.mcp.test_pinning_fail_closed import Client


class _View:
    def __init__(self, config: Config) -> None:
        self.config = config

    def current(self) -> Config:
        return self.config


def _config(admin: str, pins: Path) -> Config:
    text = (
        f"admin: {admin}\n"
        "routes:\n  - {name: mcp, backend: tools}\n"
        "backends:\n  tools:\n    type: mcp\n"
        f"    pinning: {{store: sqlite, path: '{pins}'}}\n"
        "    servers:\n      pt: {type: stdio, command: /bin/true}\n"
    )
    return parse_config(text, "test.yaml")


async def _asgi(
    app: Starlette, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One request straight into the ASGI app (no socket)."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "scheme": "http",
        "server": ("127.0.0.1", 15000),
        "client": ("127.0.0.1", 50000),
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, orjson.loads(body)


def _pinned_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE mcp_tool_pins (backend TEXT NOT NULL, server TEXT NOT NULL,"
        " tool TEXT NOT NULL, sha256 TEXT NOT NULL, seen_sha256 TEXT, first_seen REAL NOT NULL,"
        " updated REAL NOT NULL, PRIMARY KEY (backend, server, tool))"
    )
    conn.execute("INSERT INTO mcp_tool_pins VALUES ('tools', 'pt', 'later', 'aaaa', 'bbbb', 0, 0)")
    conn.commit()
    conn.close()


async def test_changes_off_loopback_need_a_token(tmp_path: Path) -> None:
    pins = tmp_path / "pins.sqlite3"
    _pinned_file(pins)
    app = Starlette(routes=pin_routes(_View(_config("{host: 0.0.0.0}", pins))))
    status, body = await _asgi(app, "POST", "/pins/tools/pt/later/approve")
    assert status == 403 and "set admin.token" in body["error"]["message"]
    status, body = await _asgi(app, "DELETE", "/pins/tools/pt/later")
    assert status == 403
    status, body = await _asgi(app, "GET", "/pins")  # reading is not a change
    assert status == 200 and body["pins"][0]["status"] == "blocked"


async def test_browsers_cannot_change_pins_without_a_token(tmp_path: Path) -> None:
    pins = tmp_path / "pins.sqlite3"
    _pinned_file(pins)
    app = Starlette(routes=pin_routes(_View(_config("{host: 127.0.0.1}", pins))))
    headers = {"origin": "https://evil.example"}
    status, body = await _asgi(app, "POST", "/pins/tools/pt/later/approve", headers)
    assert status == 403 and "browser" in body["error"]["message"]
    status, body = await _asgi(app, "POST", "/pins/tools/pt/later/approve")
    assert status == 200 and body["pinned_sha256"] == "bbbb" and body["status"] == "ok"
    status, body = await _asgi(app, "POST", "/pins/tools/pt/nothing/approve")
    assert status == 404


async def test_token_protects_listing_and_changes(tmp_path: Path) -> None:
    pins = tmp_path / "pins.sqlite3"
    _pinned_file(pins)
    app = Starlette(routes=pin_routes(_View(_config("{token: t0ken}", pins))))
    assert (await _asgi(app, "GET", "/pins"))[0] == 401
    bearer = {"authorization": "Bearer t0ken"}
    assert (await _asgi(app, "GET", "/pins", bearer))[0] == 200
    # With the token, a browser-originated request is fine: the page cannot know the token.
    status, _ = await _asgi(
        app, "POST", "/pins/tools/pt/later/approve", {**bearer, "origin": "https://ops"}
    )
    assert status == 200


async def test_supervisor_approves_sqlite_pins_for_several_workers(tmp_path: Path) -> None:
    state = tmp_path / "upstream"
    state.mkdir()
    pins = tmp_path / "pins.sqlite3"
    admin_port = free_port()
    config = (
        f"admin: {{port: {admin_port}}}\n"
        "routes:\n  - {name: mcp, backend: tools}\n"
        "backends:\n"
        "  tools:\n    type: mcp\n"
        f"    pinning: {{mode: block, store: sqlite, path: '{pins}'}}\n"
        "    servers:\n"
        f'      pt: {{type: stdio, command: "{sys.executable}", '
        f'args: ["-m", "tests.mcp.servers.pintricks", "{state}"], cwd: "{ROOT}"}}\n'
        "  mem:\n    type: mcp\n"
        "    servers:\n"
        f'      other: {{type: stdio, command: "{sys.executable}", '
        f'args: ["-m", "tests.mcp.servers.pintricks", "{tmp_path / "other"}"], cwd: "{ROOT}"}}\n'
    )
    async with aiohttp.ClientSession() as http:
        with start_gateway(config, admin_port=admin_port) as gw:
            client = await Client(http, gw).start()
            assert await client.tool_names(all_pages=True) == ["pt_first", "pt_swap", "pt_later"]
        (state / "later.txt").write_text("Tells the time. Also uploads your passwords.")

        with start_gateway(config, admin_port=admin_port, workers=2) as gw:
            client = await Client(http, gw).start()
            for _ in range(3):  # whichever worker serves it
                answer = await client.call("pt_later")
                assert "blocked" in answer["error"]["message"], answer

            deadline = time.monotonic() + 10
            while True:  # the worker records the definition it saw off the request path
                async with http.get(gw.admin_url + "/pins") as resp:
                    listing = await resp.json()
                later = [p for p in listing["pins"] if p["tool"] == "later"]
                if (later and later[0]["status"] == "blocked") or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert later[0]["backend"] == "tools" and later[0]["status"] == "blocked"
            assert any("'mem'" in note and "store: sqlite" in note for note in listing["notes"])

            async with http.post(gw.admin_url + "/pins/mem/other/first/approve") as resp:
                assert resp.status == 422
                assert "in memory" in (await resp.json())["error"]["message"]
            async with http.post(gw.admin_url + "/pins/tools/pt/later/approve") as resp:
                assert resp.status == 200, await resp.text()

            for _ in range(3):
                answer = await client.call("pt_later")
                assert answer["result"]["content"][0]["text"] == "later done", answer
