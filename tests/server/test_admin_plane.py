"""The admin plane beyond loopback: every route but the probes needs the admin token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import serve_admin

TOKEN = "admin-plane-test-token"


@pytest.fixture
async def admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """An admin plane whose config says `request.param` for `admin:` (bound to 127.0.0.1
    here whatever its host says, as a container's 0.0.0.0 would be reached)."""
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "crossway.yaml"
    path.write_text(f"admin: {request.param}\n")
    async with serve_admin(path) as base:
        yield base


ROUTES = ("/metrics", "/config", "/stats", "/pins", "/keys", "/logs", "/openapi.json")


@pytest.mark.parametrize("admin", ["{host: 0.0.0.0}"], indirect=True)
async def test_beyond_loopback_without_token_only_probes_answer(admin: str) -> None:
    async with aiohttp.ClientSession() as http:
        for probe in ("/healthz", "/readyz"):
            async with http.get(admin + probe) as resp:
                assert resp.status in (200, 503), probe  # readiness: no workers in this test
        for path in ROUTES:
            async with http.get(admin + path) as resp:
                assert resp.status == 403, path
                body = await resp.json()
                assert "admin.token" in body["error"]["message"]
        async with http.get(admin + "/ui/", allow_redirects=False) as resp:
            assert resp.status == 403
            assert "admin.token" in await resp.text()


@pytest.mark.parametrize("admin", [f"{{host: 0.0.0.0, token: {TOKEN}}}"], indirect=True)
async def test_beyond_loopback_with_token_every_route_needs_it(admin: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(admin + "/healthz") as resp:
            assert resp.status == 200
        for path in ROUTES:
            async with http.get(admin + path) as resp:
                assert resp.status == 401, path
                assert resp.headers["www-authenticate"] == "Bearer"
            async with http.get(admin + path, headers={"authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401, path
        good = {"authorization": f"Bearer {TOKEN}"}
        for path in ("/metrics", "/config", "/stats", "/keys", "/openapi.json"):
            async with http.get(admin + path, headers=good) as resp:
                assert resp.status == 200, path
        async with http.get(admin + "/config", headers=good) as resp:
            assert TOKEN not in await resp.text()
        async with http.get(admin + "/ui/keys", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["location"].startswith("/ui/login")


@pytest.mark.parametrize("admin", ["{}"], indirect=True)
async def test_loopback_without_token_stays_open(admin: str) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/metrics", "/config", "/stats"):
            async with http.get(admin + path) as resp:
                assert resp.status == 200, path
        async with http.get(admin + "/ui/") as resp:
            assert resp.status == 200
            assert "Open console" in await resp.text()
        # DNS rebinding: another host name for this loopback listener is refused.
        async with http.get(admin + "/ui/", headers={"host": "evil.example:80"}) as resp:
            assert resp.status == 403


@pytest.mark.parametrize("admin", [f"{{host: 0.0.0.0, token: {TOKEN}}}"], indirect=True)
async def test_login_over_plain_http_beyond_loopback_explains_https(admin: str) -> None:
    import re

    remote = {"host": "gateway.internal:15000"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(admin + "/ui/login", headers=remote) as resp:
            found = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
            assert found is not None
            pre = {**remote, "cookie": resp.headers["set-cookie"].split(";")[0]}
        form = {"csrf": found.group(1), "next": "/ui/", "token": TOKEN}
        async with http.post(
            admin + "/ui/login", data=form, headers=pre, allow_redirects=False
        ) as resp:
            assert resp.status == 400
            assert "HTTPS" in await resp.text()
        behind_tls = {**pre, "x-forwarded-proto": "https"}
        async with http.post(
            admin + "/ui/login", data=form, headers=behind_tls, allow_redirects=False
        ) as resp:
            assert resp.status == 303


@pytest.mark.parametrize("admin", [f"{{host: 0.0.0.0, token: {TOKEN}}}"], indirect=True)
async def test_csrf_site_check_behind_a_proxy_that_rewrites_host(admin: str) -> None:
    """nginx's default `proxy_pass` sends the upstream's name as Host; the browser's Origin then
    matches X-Forwarded-Host. Another site's Origin is still refused."""
    import re

    proxied = {"host": "127.0.0.1:15000", "x-forwarded-host": "admin.example.com"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(admin + "/ui/login", headers=proxied) as resp:
            found = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
            assert found is not None
            cookie = resp.headers["set-cookie"].split(";")[0]
        form = {"csrf": found.group(1), "next": "/ui/", "token": TOKEN}
        for origin, status in (("https://evil.example", 403), ("https://admin.example.com", 303)):
            headers = {**proxied, "cookie": cookie, "origin": origin, "x-forwarded-proto": "https"}
            async with http.post(
                admin + "/ui/login", data=form, headers=headers, allow_redirects=False
            ) as resp:
                assert resp.status == status, origin
