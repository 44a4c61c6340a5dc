"""MCP session ids are capabilities: they expire, a DELETE revokes them everywhere, they only
work for the caller they were issued to, and they are sealed under an HKDF-derived key that
Crossway refuses to take weak (issue #7, hole 3).

Real `crossway serve` processes, raw HTTP (aiohttp), a real `redis-server` for the shared store.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crossway.mcp.sealing import HKDF_INFO, NONCE_BYTES, SessionSealer
from tests.helpers import ROOT, Gateway, free_port, redis_server, start_gateway, wait_for
from tests.mcp.conftest import mcp_config, notes_stdio

ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
STRONG_KEY = "5b0d1e3f-session-key-for-tests-only-9c4a7e21"
ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-fedcba9876543210xyz"
PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


def config(extra: str = "", policies: str = "") -> str:
    text = mcp_config({"notes": notes_stdio()}, f"session_key: {STRONG_KEY}\n{extra}")
    if policies:
        text = text.replace(
            "  - {name: mcp, backend: tools}", f"  - {{name: mcp, backend: tools, {policies}}}"
        )
    return text


TWO_KEYS = f"policies: [{{type: api_key, keys: {{alice: {ALICE}, bob: {BOB}}}}}]"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    gw: Gateway,
    body: Any,
    session_id: str | None = None,
    key: str | None = None,
) -> tuple[int, Any, dict[str, str]]:
    headers = dict(ACCEPT)
    if session_id is not None:
        headers["mcp-session-id"] = session_id
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    async with http.post(gw.url + "/mcp", json=body, headers=headers) as resp:
        parsed = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, parsed, {k.lower(): v for k, v in resp.headers.items()}


async def delete(
    http: aiohttp.ClientSession, gw: Gateway, session_id: str, key: str | None = None
) -> int:
    headers = {"mcp-session-id": session_id}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    async with http.delete(gw.url + "/mcp", headers=headers) as resp:
        return resp.status


async def initialize(http: aiohttp.ClientSession, gw: Gateway, key: str | None = None) -> str:
    status, body, headers = await post(http, gw, INIT, key=key)
    assert status == 200, body
    return headers["mcp-session-id"]


def assert_gone(status: int, body: Any) -> None:
    """The spec's answer for a session the server no longer knows: 404, here with a JSON-RPC
    error body that does not say why."""
    assert status == 404, body
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32600
    assert body["error"]["message"] == "unknown or expired session"


# -- revocation -------------------------------------------------------------------------------


async def test_a_deleted_session_never_works_again(http: aiohttp.ClientSession) -> None:
    with start_gateway(config()) as gw:
        sid = await initialize(http, gw)
        status, body, _ = await post(http, gw, PING, sid)
        assert status == 200, body
        assert await delete(http, gw, sid) == 200
        status, body, _ = await post(http, gw, PING, sid)
        assert_gone(status, body)
        async with http.get(
            gw.url + "/mcp", headers={"accept": "text/event-stream", "mcp-session-id": sid}
        ) as resp:
            assert resp.status == 404
        assert await delete(http, gw, sid) == 404


# -- expiry -----------------------------------------------------------------------------------


async def test_a_session_past_its_maximum_age_gets_404(http: aiohttp.ClientSession) -> None:
    with start_gateway(config("session_max_seconds: 1")) as gw:
        sid = await initialize(http, gw)
        status, body, _ = await post(http, gw, PING, sid)
        assert status == 200, body
        deadline = time.monotonic() + 15
        while True:  # requests keep coming: only the absolute lifetime can end it
            status, body, _ = await post(http, gw, PING, sid)
            if status != 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # poll interval, not a wait for the expiry itself
        assert_gone(status, body)
        # A replica that never held it refuses it too: the issue time is sealed into the id.
    with start_gateway(config("session_max_seconds: 1")) as other:
        status, body, _ = await post(http, other, PING, sid)
        assert_gone(status, body)


async def test_an_idle_session_expires_and_is_not_re_attached() -> None:
    from crossway.config.mcp import McpBackendConfig
    from crossway.mcp.federation import Federation
    from crossway.mcp.hooks import McpHooks
    from crossway.mcp.store import SessionStore
    from crossway.mcp.upstream.base import ClientHello
    from crossway.store.revocations import MemoryRevocations

    cfg = McpBackendConfig.model_validate(
        {
            "type": "mcp",
            "session_idle_seconds": 60,
            "servers": {"x": {"type": "stdio", "command": "true"}},
        }
    )
    store = SessionStore(
        Federation(cfg, {}, McpHooks()), SessionSealer(STRONG_KEY), MemoryRevocations()
    )
    session = await store.create(ClientHello(protocol_version="2025-11-25"), connect=False)
    assert session.id is not None
    assert await store.get(session.id, None) is session
    session.last_used -= 61  # as if a minute had passed without a request
    assert await store.get(session.id, None) is None
    # The sealed id still opens, but this replica knows it went idle: no re-attach.
    assert session.id not in store.sessions
    assert await store.get(session.id, None) is None
    await store.close()


# -- binding ----------------------------------------------------------------------------------


async def test_another_callers_session_id_gets_404(http: aiohttp.ClientSession) -> None:
    with start_gateway(config(policies=TWO_KEYS)) as gw:
        sid = await initialize(http, gw, key=ALICE)
        status, body, _ = await post(http, gw, PING, sid, key=BOB)
        assert_gone(status, body)
        assert await delete(http, gw, sid, key=BOB) == 404
        status, body, _ = await post(http, gw, PING, sid, key=ALICE)
        assert status == 200, body  # bob's attempts did not end alice's session
        wait_for(lambda: "another caller" in gw.log(), what="the refusal logged")
        assert sid not in gw.log()
    # A replica that only has the sealed id checks the binding too.
    with start_gateway(config(policies=TWO_KEYS)) as other:
        status, body, _ = await post(http, other, PING, sid, key=BOB)
        assert_gone(status, body)
        status, body, _ = await post(http, other, PING, sid, key=ALICE)
        assert status == 200, body


async def test_a_legacy_sse_session_is_bound_to_its_caller(http: aiohttp.ClientSession) -> None:
    with start_gateway(config(policies=TWO_KEYS)) as gw:
        async with http.get(
            gw.url + "/sse",
            headers={"accept": "text/event-stream", "authorization": f"Bearer {ALICE}"},
        ) as stream:
            assert stream.status == 200
            endpoint = ""
            async for line in stream.content:
                if line.startswith(b"data: "):
                    endpoint = line[6:].decode().strip()
                    break
            assert "sessionId=" in endpoint
            for key, expected in ((BOB, 404), (ALICE, 202)):
                async with http.post(
                    gw.url + endpoint,
                    json=PING,
                    headers={**ACCEPT, "authorization": f"Bearer {key}"},
                ) as resp:
                    assert resp.status == expected


# -- revocation across replicas (Redis) -------------------------------------------------------


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


async def test_a_revocation_reaches_another_replica_through_redis(
    http: aiohttp.ClientSession, redis_port: int
) -> None:
    store = f"session_store: {{type: redis, url: 'redis://127.0.0.1:{redis_port}/0'}}"
    text = config(f"session_max_seconds: 600\n{store}")
    with start_gateway(text) as one, start_gateway(text) as two:
        sid = await initialize(http, one)
        for gw in (one, two):  # two re-attaches from the sealed id
            status, body, _ = await post(http, gw, PING, sid)
            assert status == 200, body
        assert await delete(http, one, sid) == 200
        for gw in (two, one):
            status, body, _ = await post(http, gw, PING, sid)
            assert_gone(status, body)
        r = redis.Redis(port=redis_port)
        keys = r.keys("crossway:mcp:revoked:*")
        assert keys == [
            b"crossway:mcp:revoked:" + hashlib.sha256(sid.encode()).hexdigest()[:32].encode()
        ]
        assert 0 < r.ttl(keys[0]) <= 600  # only as long as the id could have lived
        r.close()
    # A replica started later (nothing in memory) still refuses it.
    with start_gateway(text) as three:
        status, body, _ = await post(http, three, PING, sid)
        assert_gone(status, body)


async def test_an_unreachable_revocation_store_fails_closed(http: aiohttp.ClientSession) -> None:
    store = f"session_store: {{type: redis, url: 'redis://127.0.0.1:{free_port()}/0'}}"
    with start_gateway(config(store)) as gw:
        sid = await initialize(http, gw)
        status, body, _ = await post(http, gw, PING, sid)
        assert status == 503, body
        assert body["jsonrpc"] == "2.0" and body["error"]["message"]
        assert "Traceback" not in gw.log()


# -- keys -------------------------------------------------------------------------------------


def validate(text: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = Path(tempfile.mkdtemp(prefix="crossway-validate-")) / "config.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "crossway", "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("key_line", "why"),
    [
        ("session_key: change-me", "weak"),
        ("session_key: changeme", "weak"),
        ("session_key: password", "weak"),
        ("session_key: short-but-random-x7Qp", "at least 32"),
        ("session_key: ${UNSET_SESSION_KEY_FOR_TEST:-}", "missing"),
        ("", "missing"),
    ],
)
def test_a_weak_or_missing_key_is_refused_on_a_public_listener(key_line: str, why: str) -> None:
    body = mcp_config({"notes": notes_stdio()}, key_line)
    public = validate("listen: {host: 0.0.0.0, port: 8080}\n" + body)
    assert public.returncode == 2, public.stdout
    assert "backends.tools.session_key" in public.stderr, public.stderr
    assert why in public.stderr
    # The same file on a loopback listener is fine: a per-process key is generated.
    assert validate("listen: {host: 127.0.0.1, port: 8080}\n" + body).returncode == 0


def test_a_strong_key_and_rotated_keys_pass_on_a_public_listener() -> None:
    body = mcp_config({"notes": notes_stdio()}, f"session_key: {STRONG_KEY}")
    assert validate("listen: {host: 0.0.0.0}\n" + body).returncode == 0
    rotated = mcp_config({"notes": notes_stdio()}, f"session_keys: [{STRONG_KEY}2, change-me]")
    result = validate("listen: {host: '::'}\n" + rotated)
    assert result.returncode == 2
    assert "backends.tools.session_keys[1]" in result.stderr, result.stderr


def test_the_sealing_key_is_derived_with_hkdf() -> None:
    secret = STRONG_KEY
    sid = SessionSealer(secret).seal({"p": "2025-11-25"})
    prefix, _, text = sid.partition(".")
    blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
    aad = (prefix + ".").encode()
    with pytest.raises(InvalidTag):  # the old derivation no longer opens new ids
        AESGCM(hashlib.sha256(secret.encode()).digest()).decrypt(nonce, sealed, aad)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(
        secret.encode()
    )
    assert AESGCM(key).decrypt(nonce, sealed, aad).startswith(b"{")


def test_rotated_keys_open_old_ids_and_seal_with_the_first() -> None:
    old, new = SessionSealer("o" * 16 + STRONG_KEY), SessionSealer(["n" * 16 + STRONG_KEY])
    both = SessionSealer(["n" * 16 + STRONG_KEY, "o" * 16 + STRONG_KEY])
    sealed_old = old.seal({"x": 1})
    assert both.open(sealed_old) == {"x": 1}
    sealed_new = both.seal({"x": 2})
    assert new.open(sealed_new) == {"x": 2}
    assert old.open(sealed_new) is None
