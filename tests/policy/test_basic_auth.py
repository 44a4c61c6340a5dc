"""Basic auth from an htpasswd file (bcrypt): through a real `crossway serve`, and the
policy's own guarantees (bcrypt off the event loop, cached successes, no user enumeration)."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from pathlib import Path

import bcrypt
import pytest

from crossway.config.policy import BasicAuthConfig
from crossway.errors import Unauthenticated
from crossway.policy.basic_auth import BasicAuthPolicy, HtpasswdError, read_htpasswd
from crossway.server.context import CONSUMED_HEADERS, RequestContext
from tests.helpers import start_gateway
from tests.policy.counting_upstream import call, counting_upstream, http_route_config


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _htpasswd(tmp_path: Path, users: dict[str, str], cost: int = 4) -> Path:
    lines = []
    for user, password in users.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
        lines.append(f"{user}:{hashed.replace('$2b$', '$2y$', 1)}")  # what `htpasswd -B` writes
    path = tmp_path / "htpasswd"
    path.write_text("# users\n" + "\n".join(lines) + "\n")
    return path


def _scope(authorization: str | None) -> dict[str, object]:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return {"type": "http", "method": "GET", "path": "/", "headers": headers}


def _ctx() -> RequestContext:
    return RequestContext("r", "b", "1", "/")


async def test_basic_auth_through_the_gateway(tmp_path: Path) -> None:
    htpasswd = _htpasswd(tmp_path, {"alice": "wonderland", "bob": "builder"})
    policies = f"""      - type: basic_auth
        htpasswd: {htpasswd}
        realm: agents
"""
    async with counting_upstream() as up:
        with start_gateway(http_route_config(up.url, policies)) as gw:
            # no credentials: 401 with the challenge, the upstream never sees it
            status, headers, body = await call(gw.url + "/x")
            assert status == 401
            assert headers["www-authenticate"] == 'Basic realm="agents", charset="UTF-8"'
            assert body["error"]["code"] == "missing_credentials"
            # wrong password, unknown user, malformed: 401, never forwarded
            for auth in (
                _basic("alice", "WRONG"),
                _basic("mallory", "wonderland"),
                "Basic !!!not-base64",
                "Basic " + base64.b64encode(b"no-colon").decode(),
            ):
                status, headers, body = await call(gw.url + "/x", headers={"authorization": auth})
                assert status == 401, auth
                assert body["error"]["code"] == "invalid_credentials"
                assert "www-authenticate" in headers
            assert up.count == 0
            # valid: forwarded, and the Authorization header is consumed
            status, _, body = await call(
                gw.url + "/x", headers={"authorization": _basic("alice", "wonderland")}
            )
            assert status == 200, body
            status, _, _ = await call(
                gw.url + "/y", headers={"authorization": _basic("bob", "builder")}
            )
            assert status == 200
            assert up.count == 2
            assert all("authorization" not in seen.headers for seen in up.seen)


def test_non_bcrypt_entries_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    for entry in (
        "alice:$apr1$abc$0123456789abcdefghijkl",
        "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
        "alice:plaintext",
        "alice:$2y$04$short",
    ):
        path.write_text(f"# comment\n\n{entry}\n")
        with pytest.raises(HtpasswdError, match=r"line 3: user 'alice' is not a bcrypt entry"):
            read_htpasswd(str(path))
        with pytest.raises(ValueError, match="htpasswd -B"):
            BasicAuthConfig.model_validate({"type": "basic_auth", "htpasswd": str(path)})
    with pytest.raises(ValueError, match="cannot read htpasswd file"):
        BasicAuthConfig.model_validate({"type": "basic_auth", "htpasswd": str(tmp_path / "none")})


async def test_bcrypt_runs_off_the_loop_and_successes_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    htpasswd = _htpasswd(tmp_path, {"alice": "wonderland"})
    policy = BasicAuthPolicy(BasicAuthConfig(type="basic_auth", htpasswd=str(htpasswd)))
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real_checkpw = bcrypt.checkpw

    def spying_checkpw(password: bytes, hashed: bytes) -> bool:
        threads.append(threading.get_ident())
        return bool(real_checkpw(password, hashed))

    monkeypatch.setattr(bcrypt, "checkpw", spying_checkpw)
    good = _basic("alice", "wonderland")

    # Eight concurrent requests with the same credentials share one bcrypt run.
    ctxs = [_ctx() for _ in range(8)]
    await asyncio.gather(*(policy.on_request(_scope(good), c) for c in ctxs))
    assert len(threads) == 1 and loop_thread not in threads
    assert all(c.identity == {"sub": "alice", "method": "basic"} for c in ctxs)
    assert all(b"authorization" in c.attrs[CONSUMED_HEADERS] for c in ctxs)

    # Cached: no more bcrypt for the same pair.
    started = time.perf_counter()
    for _ in range(100):
        await policy.on_request(_scope(good), _ctx())
    assert len(threads) == 1
    assert time.perf_counter() - started < 0.5

    # Failures are not cached, and an unknown user costs a bcrypt run too (no enumeration).
    for auth in (_basic("alice", "nope"), _basic("alice", "nope"), _basic("nobody", "x")):
        with pytest.raises(Unauthenticated):
            await policy.on_request(_scope(auth), _ctx())
    assert len(threads) == 4


async def test_modes_and_other_schemes(tmp_path: Path) -> None:
    htpasswd = str(_htpasswd(tmp_path, {"alice": "wonderland"}))
    optional = BasicAuthPolicy(
        BasicAuthConfig(type="basic_auth", htpasswd=htpasswd, mode="optional")
    )
    ctx = _ctx()
    assert await optional.on_request(_scope(None), ctx) is None and ctx.identity is None
    # A bearer token is not this policy's credential: left alone.
    ctx = _ctx()
    assert await optional.on_request(_scope("Bearer abc"), ctx) is None
    assert CONSUMED_HEADERS not in ctx.attrs
    with pytest.raises(Unauthenticated):
        await optional.on_request(_scope(_basic("alice", "bad")), _ctx())
    permissive = BasicAuthPolicy(
        BasicAuthConfig(type="basic_auth", htpasswd=htpasswd, mode="permissive")
    )
    ctx = _ctx()
    await permissive.on_request(_scope(_basic("alice", "bad")), ctx)
    assert ctx.identity is None


async def test_htpasswd_changes_are_picked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crossway.policy.basic_auth as module

    monkeypatch.setattr(module, "HTPASSWD_POLL_SECONDS", 0.01)
    path = _htpasswd(tmp_path, {"alice": "wonderland"})
    policy = BasicAuthPolicy(BasicAuthConfig(type="basic_auth", htpasswd=str(path)))
    await policy.start()
    try:
        await policy.on_request(_scope(_basic("alice", "wonderland")), _ctx())
        _htpasswd(tmp_path, {"carol": "secret"})  # alice removed, carol added
        deadline = time.monotonic() + 5
        while "carol" not in policy.users:
            assert time.monotonic() < deadline, "htpasswd not reloaded"
            await asyncio.sleep(0.01)
        with pytest.raises(Unauthenticated):  # the cached success went with the old file
            await policy.on_request(_scope(_basic("alice", "wonderland")), _ctx())
        await policy.on_request(_scope(_basic("carol", "secret")), _ctx())
    finally:
        await policy.close()
