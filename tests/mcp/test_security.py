"""MCP security through a real gateway process with the mcp SDK client: OAuth (RFC 9728),
CEL authorization, tool-definition pinning, and an OpenAPI-described REST upstream."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from mcp import Client
from tests.helpers import free_port, start_gateway
from tests.mcp.conftest import mcp_config, notes_stdio, spawn, stop
from tests.mcp.petstore import SPEC, running_petstore

ISSUER = "https://idp.test"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWK = {**jwt.get_algorithm_by_name("RS256").to_jwk(KEY.public_key(), as_dict=True), "kid": "k1"}


def _token(sub: str, **claims: Any) -> str:
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, KEY, algorithm="RS256", headers={"kid": "k1"})


def _client(url: str, token: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    transport = streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
    return Client(transport, mode="legacy")


def _names(tools: Any) -> set[str]:
    return {t.name for t in tools.tools}


AUDIENCE = "crossway-tests"
# The deprecated MCP-backend form (`auth:`), migrated into a `jwt` policy at load.
AUTH = f"""
auth:
  authorization_servers: ["{ISSUER}"]
  scopes_supported: [mcp]
  resource: "http://127.0.0.1:${{CROSSWAY_PORT}}/mcp"
  jwt: {{issuer: "{ISSUER}", audiences: [{AUDIENCE}], jwks: {json.dumps({"keys": [JWK]})}}}
"""


def _routes_like_the_example(config: str) -> str:
    """Routes as in examples/mcp-secure.yaml: `/mcp` and the metadata prefix, nothing else."""
    routes = (
        "routes:\n"
        "  - {name: mcp, backend: tools, match: {path: {prefix: /mcp}}}\n"
        "  - {name: meta, backend: tools, match: {path: {prefix: /.well-known/oauth-protected-resource}}}\n"
    )
    return routes + config[config.index("backends:") :]


async def test_token_less_request_gets_401_with_rfc9728_metadata() -> None:
    config = _routes_like_the_example(mcp_config({"alpha": notes_stdio("alpha")}, AUTH))
    with start_gateway(config) as gw:
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        headers = {"accept": "application/json, text/event-stream"}
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.url + "/mcp", json=initialize, headers=headers) as resp:
                assert resp.status == 401
                challenge = resp.headers["www-authenticate"]
            metadata_url = f"{gw.url}/.well-known/oauth-protected-resource/mcp"
            assert challenge.startswith(f'Bearer resource_metadata="{metadata_url}"')
            async with http.get(metadata_url) as resp:
                assert resp.status == 200
                metadata = await resp.json()
            assert metadata["resource"] == f"{gw.url}/mcp"
            assert metadata["authorization_servers"] == [ISSUER]
            assert metadata["scopes_supported"] == ["mcp"]
            assert metadata["bearer_methods_supported"] == ["header"]
            async with http.get(f"{gw.url}/.well-known/oauth-protected-resource") as resp:
                assert (await resp.json())["resource"] == f"{gw.url}/mcp"

            bad = {**headers, "authorization": "Bearer " + _token("x", exp=int(time.time()) - 600)}
            async with http.post(gw.url + "/mcp", json=initialize, headers=bad) as resp:
                assert resp.status == 401
                assert 'error="invalid_token"' in resp.headers["www-authenticate"]

        with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the 401 as a transport error
            async with _client(gw.url + "/mcp") as client:
                await client.list_tools()

        async with _client(gw.url + "/mcp", _token("alice")) as client:
            assert "alpha_add" in _names(await client.list_tools())


async def test_forbidden_tool_is_neither_listed_nor_callable() -> None:
    rules = (
        AUTH
        + """
authorization:
  allow:
    - 'mcp.kind != "tool" || mcp.target in ["add", "whoami"]'
    - '"admins" in jwt.groups'
  deny:
    - 'mcp.target == "add" && mcp.arguments.a > 100'
"""
    )
    with start_gateway(mcp_config({"alpha": notes_stdio("alpha")}, rules)) as gw:
        async with _client(gw.url + "/mcp", _token("bob", groups=["staff"])) as client:
            tools = _names(await client.list_tools())
            assert tools == {"alpha_add", "alpha_whoami"}
            assert (await client.call_tool("alpha_add", {"a": 2, "b": 3})).content[0].text == "5"
            with pytest.raises(MCPError, match="not allowed") as info:
                await client.call_tool("alpha_fail", {})
            assert info.value.error.code == -32003
            with pytest.raises(MCPError, match="not allowed"):
                await client.call_tool("alpha_add", {"a": 101, "b": 1})
            # Prompts and resources are outside the tool rule.
            assert (await client.list_prompts()).prompts

        async with _client(gw.url + "/mcp", _token("carol", groups=["admins"])) as client:
            tools = _names(await client.list_tools())
            assert {"alpha_add", "alpha_fail", "alpha_slow"} <= tools
            result = await client.call_tool("alpha_fail", {})
            assert result.is_error  # allowed: the upstream's own error comes back


@pytest.fixture
def rugpull() -> Iterator[tuple[int, list[Any]]]:
    port = free_port()
    procs: list[Any] = []
    yield port, procs
    for proc in procs:
        stop(proc)


def _start_rugpull(port: int, variant: int, procs: list[Any]) -> None:
    for proc in procs:
        stop(proc)
    procs.append(
        spawn(
            [
                sys.executable,
                "-m",
                "tests.mcp.rugpull_server",
                str(port),
                "--variant",
                str(variant),
            ],
            port,
        )
    )


async def test_changed_tool_is_blocked_on_list_changed(rugpull: tuple[int, list[Any]]) -> None:
    port, procs = rugpull
    _start_rugpull(port, 1, procs)
    config = mcp_config({"rp": f"{{type: streamable_http, url: http://127.0.0.1:{port}/mcp}}"})
    with start_gateway(config) as gw:
        async with _client(gw.url + "/mcp") as client:
            assert _names(await client.list_tools()) == {"rp_forecast", "rp_stable", "rp_swap"}
            assert (await client.call_tool("rp_forecast", {"city": "Oslo"})).content[
                0
            ].text == "sunny in Oslo"
            assert (await client.call_tool("rp_swap", {})).content[0].text == "swapped"
            assert _names(await client.list_tools()) == {"rp_stable", "rp_swap"}
            with pytest.raises(MCPError, match="blocked"):
                await client.call_tool("rp_forecast", {"city": "Oslo"})
            assert (await client.call_tool("rp_stable", {"x": 7})).content[0].text == "7"
        assert "mcp tool definition changed: server=rp tool=forecast" in gw.log()


async def test_changed_tool_is_blocked_across_upstream_and_gateway_restarts(
    rugpull: tuple[int, list[Any]], tmp_path: Path
) -> None:
    port, procs = rugpull
    pins = tmp_path / "pins.sqlite3"
    config = mcp_config(
        {"rp": f"{{type: streamable_http, url: http://127.0.0.1:{port}/mcp}}"},
        f"pinning: {{mode: block, store: sqlite, path: '{pins}'}}",
    )
    _start_rugpull(port, 1, procs)
    with start_gateway(config) as gw:
        async with _client(gw.url + "/mcp") as client:
            assert "rp_forecast" in _names(await client.list_tools())
    assert pins.exists()

    _start_rugpull(port, 2, procs)  # the upstream now serves a poisoned definition
    with start_gateway(config) as gw:
        async with _client(gw.url + "/mcp") as client:
            assert _names(await client.list_tools()) == {"rp_stable", "rp_swap"}
            with pytest.raises(MCPError, match="blocked"):
                await client.call_tool("rp_forecast", {"city": "Oslo"})
        log = gw.log()
        assert "definition changed: server=rp tool=forecast" in log
        assert "prompt injection: server=rp tool=forecast" in log


async def test_flag_mode_keeps_changed_tool_and_marks_it(rugpull: tuple[int, list[Any]]) -> None:
    port, procs = rugpull
    _start_rugpull(port, 1, procs)
    config = mcp_config(
        {"rp": f"{{type: streamable_http, url: http://127.0.0.1:{port}/mcp}}"},
        "pinning: {mode: flag}",
    )
    with start_gateway(config) as gw:
        async with _client(gw.url + "/mcp") as client:
            await client.list_tools()
            await client.call_tool("rp_swap", {})
            tools = {t.name: t for t in (await client.list_tools()).tools}
            flag = (tools["rp_forecast"].meta or {})["crossway/pinning"]
            assert flag["changed"] is True and "important-tag" in flag["findings"]
            assert (await client.call_tool("rp_forecast", {"city": "Rome"})).content[
                0
            ].text == "sunny in Rome"


async def test_openapi_service_is_listed_and_called_through_the_gateway() -> None:
    async with running_petstore() as (base_url, _):
        config = mcp_config(
            {
                "pets": f'{{type: openapi, spec: "{SPEC}", base_url: "{base_url}", headers: {{X-Api-Key: k-1}}}}',
                "alpha": notes_stdio("alpha"),
            }
        )
        with start_gateway(config) as gw:
            async with _client(gw.url + "/mcp") as client:
                tools = {t.name: t for t in (await client.list_tools()).tools}
                assert {"pets_listPets", "pets_getPet", "pets_createPet", "alpha_add"} <= set(tools)
                assert tools["pets_getPet"].input_schema["required"] == ["petId"]
                result = await client.call_tool("pets_getPet", {"petId": 1})
                assert not result.is_error
                assert json.loads(result.content[0].text) == {"id": 1, "name": "Rex", "tag": "dog"}
                created = await client.call_tool("pets_createPet", {"name": "Kit"})
                assert json.loads(created.content[0].text)["name"] == "Kit"
                missing = await client.call_tool("pets_getPet", {"petId": 42})
                assert missing.is_error and missing.content[0].text == "HTTP 404 Not Found"
                me = await client.call_tool("pets_whoAmI", {})
                assert json.loads(me.content[0].text) == {"authorization": None, "api_key": "k-1"}


async def test_upstream_gets_its_own_client_credentials_token_not_the_callers() -> None:
    from aiohttp import web

    issued: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        issued.append(form)
        return web.json_response({"access_token": f"cc-{len(issued)}", "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    token_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    port = free_port()
    upstream = spawn([sys.executable, "-m", "tests.mcp.protected_server", str(port)], port)
    try:
        server = (
            f"{{type: streamable_http, url: http://127.0.0.1:{port}/mcp, credentials: "
            f"{{client_credentials: {{token_url: http://127.0.0.1:{token_port}/token, "
            f"client_id: crossway, client_secret: s3cret, scopes: [tools]}}}}}}"
        )
        with start_gateway(mcp_config({"prot": server}, AUTH)) as gw:
            caller = _token("alice")
            async with _client(gw.url + "/mcp", caller) as client:
                result = await client.call_tool("prot_seen_token", {})
                assert result.content[0].text == "cc-1"  # never the caller's JWT
            async with _client(gw.url + "/mcp", caller) as client:
                assert (await client.call_tool("prot_seen_token", {})).content[0].text == "cc-1"
        assert len(issued) == 1  # cached across sessions
        assert issued[0] == {"grant_type": "client_credentials", "scope": "tools"}
    finally:
        stop(upstream)
        await runner.cleanup()


async def test_token_exchange_swaps_the_callers_token_per_upstream() -> None:
    """RFC 8693: each caller's token is exchanged for an upstream token; the upstream (an MCP
    server and a REST API) sees only the exchanged one."""
    from aiohttp import web

    exchanges: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        exchanges.append(form)
        return web.json_response(
            {
                "access_token": f"cc-{len(exchanges)}",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "expires_in": 600,
            }
        )

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    token_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/token"  # type: ignore[union-attr]
    exchange = f"{{token_exchange: {{token_url: {token_url}, client_id: crossway, client_secret: s, audience: AUD}}}}"
    port = free_port()
    upstream = spawn([sys.executable, "-m", "tests.mcp.protected_server", str(port)], port)
    try:
        async with running_petstore() as (base_url, _):
            servers = {
                "prot": f"{{type: streamable_http, url: http://127.0.0.1:{port}/mcp, credentials: {exchange.replace('AUD', 'prot')}}}",
                "pets": f'{{type: openapi, spec: "{SPEC}", base_url: "{base_url}", credentials: {exchange.replace("AUD", "pets")}}}',
            }
            with start_gateway(mcp_config(servers, AUTH)) as gw:
                alice, bob = _token("alice"), _token("bob")
                async with _client(gw.url + "/mcp", alice) as client:
                    seen = (await client.call_tool("prot_seen_token", {})).content[0].text
                    me = json.loads((await client.call_tool("pets_whoAmI", {})).content[0].text)
                async with _client(gw.url + "/mcp", bob) as client:
                    seen_bob = (await client.call_tool("prot_seen_token", {})).content[0].text
        by_subject = {(e["audience"], e["subject_token"]): e for e in exchanges}
        assert {e["grant_type"] for e in exchanges} == {
            "urn:ietf:params:oauth:grant-type:token-exchange"
        }
        assert (
            ("prot", alice) in by_subject
            and ("pets", alice) in by_subject
            and ("prot", bob) in by_subject
        )
        assert seen.startswith("cc-") and seen_bob.startswith("cc-") and seen != seen_bob
        assert me["authorization"].startswith("Bearer cc-")
        assert alice not in (seen, seen_bob, me["authorization"])
    finally:
        stop(upstream)
        await runner.cleanup()
