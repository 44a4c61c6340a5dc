"""Admins by JWT (`admin.jwt`): a token with the admin role opens the API and the console."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest

from crossway.config import ConfigError, load_config
from tests.helpers import serve_admin

SECRET = "an-hmac-secret-of-at-least-32-characters!"
ADMIN = f"""admin:
  host: 0.0.0.0
  jwt:
    secret: {SECRET}
    algorithms: [HS256]
    issuer: https://idp.test
    audiences: [crossway-admin]
    role_claim: realm_access.roles
    role: gateway-admin
"""


def token(roles: list[str], *, secret: str = SECRET, audience: str = "crossway-admin") -> str:
    claims = {
        "iss": "https://idp.test",
        "aud": audience,
        "sub": "alice",
        "exp": int(time.time()) + 300,
        "realm_access": {"roles": roles},
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture
async def admin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "crossway.yaml"
    path.write_text(ADMIN)
    async with serve_admin(path) as base:
        yield base


async def test_admin_role_opens_the_api(admin: str) -> None:
    async with aiohttp.ClientSession() as http:
        good = {"authorization": f"Bearer {token(['gateway-admin'])}"}
        for path in ("/keys", "/config", "/metrics", "/pins"):
            async with http.get(admin + path, headers=good) as resp:
                assert resp.status == 200, path
        async with http.post(admin + "/keys", json={"name": "by-jwt"}, headers=good) as resp:
            assert resp.status == 201
        no_role = {"authorization": f"Bearer {token(['viewer'])}"}
        async with http.get(admin + "/keys", headers=no_role) as resp:
            assert resp.status == 403
            assert "gateway-admin" in (await resp.json())["error"]["message"]
        forged = {"authorization": f"Bearer {token(['gateway-admin'], secret='x' * 40)}"}
        wrong_aud = {"authorization": f"Bearer {token(['gateway-admin'], audience='other')}"}
        for headers in (forged, wrong_aud, {}):
            async with http.get(admin + "/keys", headers=headers) as resp:
                assert resp.status == 401
            async with http.get(admin + "/config", headers=headers) as resp:
                assert resp.status == 401


async def test_console_login_form_takes_an_admin_jwt(admin: str) -> None:
    # A Secure cookie over plain http: aiohttp's jar keeps it to itself, so send it by hand.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(admin + "/ui/login") as resp:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
            assert csrf is not None
            pre = {"cookie": resp.headers["set-cookie"].split(";")[0]}
        form = {"csrf": csrf.group(1), "next": "/ui/", "token": token(["viewer"])}
        async with http.post(
            admin + "/ui/login", data=form, headers=pre, allow_redirects=False
        ) as resp:
            assert resp.status == 401
        form["token"] = token(["gateway-admin"])
        async with http.post(
            admin + "/ui/login", data=form, headers=pre, allow_redirects=False
        ) as resp:
            assert resp.status == 303
            session = resp.headers["set-cookie"]
            assert session.startswith("__Host-crossway-session=")
        cookie = session.split(";")[0]
        async with http.get(
            admin + "/ui/", headers={"cookie": cookie}, allow_redirects=False
        ) as resp:
            assert resp.status == 200


def test_admin_jwt_needs_an_audience(tmp_path: Path) -> None:
    path = tmp_path / "crossway.yaml"
    path.write_text(f"admin:\n  jwt:\n    secret: {SECRET}\n    algorithms: [HS256]\n")
    with pytest.raises(ConfigError, match="audiences"):
        load_config(str(path))


async def test_jwt_only_admin_plane_guards_reads_on_loopback_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only `admin.jwt` (no token), the pin and task reads need the JWT as the token
    would: configured admin credentials are never optional."""
    monkeypatch.setenv("CROSSWAY_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "crossway.yaml"
    path.write_text(ADMIN.replace("  host: 0.0.0.0\n", "  host: 127.0.0.1\n"))
    async with serve_admin(path) as base:
        async with aiohttp.ClientSession() as http:
            base = base
            good = {"authorization": f"Bearer {token(['gateway-admin'])}"}
            for route in ("/pins", "/a2a/tasks", "/keys", "/logs"):
                async with http.get(base + route) as resp:
                    assert resp.status == 401, route
                async with http.get(base + route, headers=good) as resp:
                    assert resp.status == 200, route
