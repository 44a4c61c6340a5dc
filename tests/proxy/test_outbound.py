"""The one outbound door: redirects, cookies, TLS to upstreams, and the clients built on it.

Real servers on loopback throughout: plain aiohttp servers for redirects and cookies, and an
HTTPS server whose certificates come from a CA made in the test (`cryptography`).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from crossway.config.common import Timeouts, UpstreamTls
from crossway.config.llm import ProviderConfig
from crossway.config.mcp import McpTimeouts, StreamableHttpServerConfig
from crossway.config.policy import JwtConfig
from crossway.errors import UpstreamError, UpstreamUnreachable
from crossway.llm.providers.vertex import VertexProvider
from crossway.mcp.upstream.base import ClientHello, JsonObject
from crossway.mcp.upstream.http import StreamableHttpUpstream
from crossway.policy.jwt import JwtValidator
from crossway.proxy import client
from crossway.proxy.outbound import OutboundClient
from tests.helpers import ROOT, start_gateway

SECRET = "sekrit-api-key"


# -- servers -----------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer_cert: Any = None


@dataclass
class Origin:
    url: str
    seen: list[Recorded] = field(default_factory=list)


@asynccontextmanager
async def serving(
    routes: dict[str, Any] | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    host: str = "localhost",
) -> AsyncIterator[Origin]:
    """A server recording every request; `routes` maps a path to a handler (default 404)."""
    origin = Origin("")
    table = routes or {}

    async def record(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        origin.seen.append(
            Recorded(
                request.method,
                request.raw_path,
                dict(request.headers),
                await request.read(),
                peer,
            )
        )
        handler = table.get(request.path)
        if handler is None:
            return web.Response(status=404, text="nothing here")
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "https" if ssl_context is not None else "http"
    origin.url = f"{scheme}://{host}:{port}"
    try:
        yield origin
    finally:
        await runner.cleanup()


def redirect(location: str, status: int = 302) -> Any:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": location})

    return handler


async def ok(_: web.Request) -> web.Response:
    response = web.json_response({"ok": True})
    response.set_cookie("session", "belongs-to-the-first-caller")
    return response


# -- one door ----------------------------------------------------------------------------------


def test_exactly_one_place_creates_a_client_session() -> None:
    sites = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"ClientSession\(", line):
                sites.append(f"{path.relative_to(ROOT)}:{number}")
    assert len(sites) == 1, sites
    assert sites[0].startswith("src/crossway/proxy/outbound.py:"), sites


async def test_redirects_are_not_followed_by_default() -> None:
    async with serving() as other:
        async with serving({"/start": redirect(other.url + "/landing")}) as server:
            http = OutboundClient()
            try:
                async with http.get(server.url + "/start", headers={"x-api-key": SECRET}) as r:
                    assert r.status == 302
                resp = await http.post(server.url + "/start", data=b"{}")
                assert resp.status == 302
                resp.release()
            finally:
                await http.close()
        assert len(server.seen) == 2 and other.seen == []


async def test_followed_redirects_drop_credentials_on_another_origin() -> None:
    async with serving({"/landing": ok}) as other:
        routes = {
            "/start": redirect("/same-origin"),
            "/same-origin": redirect(other.url + "/landing", 301),
        }
        async with serving(routes) as server:
            http = OutboundClient(follow_redirects=True)
            try:
                headers = {
                    "x-api-key": SECRET,
                    "Authorization": f"Bearer {SECRET}",
                    "Cookie": f"s={SECRET}",
                    "accept": "application/json",
                }
                async with http.get(server.url + "/start", headers=headers) as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"ok": True}
            finally:
                await http.close()
        # Same origin: the credentials still go along.
        assert [r.path for r in server.seen] == ["/start", "/same-origin"]
        assert server.seen[1].headers["x-api-key"] == SECRET
        # Another origin: none of them, though the harmless headers do.
        (landed,) = other.seen
        assert landed.headers.get("Accept") == "application/json"
        assert SECRET not in str(landed.headers)


async def test_cross_origin_redirect_never_resends_a_body() -> None:
    async with serving({"/token": ok}) as other:
        async with serving({"/token": redirect(other.url + "/token", 307)}) as server:
            http = OutboundClient(follow_redirects=True)
            try:
                async with http.post(server.url + "/token", data={"secret": SECRET}) as resp:
                    assert resp.status == 307
            finally:
                await http.close()
        assert other.seen == []


async def test_per_use_follow_redirects_overrides_the_client() -> None:
    async with serving({"/landing": ok}) as server:
        routes = {"/start": redirect(server.url + "/landing")}
        async with serving(routes) as start:
            http = OutboundClient()
            try:
                async with http.get(start.url + "/start", follow_redirects=True) as resp:
                    assert resp.status == 200
            finally:
                await http.close()


async def test_no_cookie_jar_anywhere() -> None:
    async with serving({"/c": ok}) as server:
        http = OutboundClient()
        try:
            for _ in range(2):
                async with http.get(server.url + "/c") as resp:
                    assert resp.status == 200
        finally:
            await http.close()
        t = Timeouts()
        for _ in range(2):
            resp = await client.send("GET", server.url + "/c", {}, b"", t)
            await client.read_body(resp, t)
        await client.close_session()
        assert len(server.seen) == 4
        assert all("Cookie" not in r.headers for r in server.seen)


# -- clients that used to follow redirects -----------------------------------------------------


async def test_jwks_fetch_does_not_follow_redirects(caplog: pytest.LogCaptureFixture) -> None:
    async def jwks(_: web.Request) -> web.Response:
        return web.json_response({"keys": []})

    async with serving({"/jwks": jwks}) as other:
        async with serving({"/jwks": redirect(other.url + "/jwks")}) as server:
            validator = JwtValidator(JwtConfig(jwks_url=server.url + "/jwks"))
            with caplog.at_level(logging.WARNING):
                await validator.start()
            await validator.close()
        assert server.seen and other.seen == []
        assert "HTTP 302" in caplog.text


async def test_vertex_token_fetch_never_carries_the_assertion_elsewhere() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    async with serving({"/token": ok}) as other:
        async with serving({"/token": redirect(other.url + "/token", 307)}) as server:
            account = {
                "type": "service_account",
                "project_id": "p",
                "private_key": pem,
                "client_email": "sa@p.iam.gserviceaccount.com",
                "token_uri": server.url + "/token",
            }
            cfg = ProviderConfig.model_validate(
                {
                    "type": "vertex",
                    "base_url": server.url,
                    "service_account_json": orjson.dumps(account).decode(),
                }
            )
            provider = VertexProvider("v", cfg)
            await provider.start()
            try:
                with pytest.raises(UpstreamError, match="307"):
                    await provider.chat_request(
                        {"messages": [{"role": "user", "content": "hi"}]}, "gemini-2.5-pro", False
                    )
            finally:
                await provider.close()
        assert server.seen and other.seen == []


# -- TLS ---------------------------------------------------------------------------------------


@dataclass
class Pki:
    """A CA made for one test, with a server and a client certificate signed by it."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_server_cert: Path  # for the name `api.internal` only
    other_server_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    subject: str,
    sans: list[x509.GeneralName],
    client: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    usage = x509.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.ExtendedKeyUsageOID.SERVER_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Crossway Test CA")
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "ca.pem", ca, None)
    loopback = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server, server_key = _issue(ca_key, ca_name, "localhost", loopback)
    _write(folder / "server.pem", server, server_key)
    other, other_key = _issue(ca_key, ca_name, "api.internal", [x509.DNSName("api.internal")])
    _write(folder / "other.pem", other, other_key)
    agent, agent_key = _issue(ca_key, ca_name, "crossway-client", [], client=True)
    _write(folder / "client.pem", agent, agent_key)
    return Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_server_cert=folder / "other.pem",
        other_server_key=folder / "other.key",
    )


def server_context(
    pki: Pki, *, require_client: bool = False, other: bool = False
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if other:
        context.load_cert_chain(pki.other_server_cert, pki.other_server_key)
    else:
        context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    return context


async def _get(url: str, tls: UpstreamTls | None) -> tuple[int, bytes]:
    t = Timeouts(connect=3, first_byte=5, idle=5)
    resp = await client.send("GET", url, {}, b"", t, tls=tls)
    return resp.status, await client.read_body(resp, t)


@pytest.fixture
async def closing() -> AsyncIterator[None]:
    yield
    await client.close_session()


@pytest.mark.usefixtures("closing")
async def test_tls_verified_against_a_custom_ca(pki: Pki) -> None:
    async with serving({"/x": ok}, ssl_context=server_context(pki), host="127.0.0.1") as server:
        with pytest.raises(UpstreamUnreachable, match="certificate") as info:
            await _get(server.url + "/x", None)
        assert info.value.status_code == 502
        assert "127.0.0.1" in info.value.message
        status, body = await _get(server.url + "/x", UpstreamTls(ca_file=str(pki.ca)))
        assert status == 200 and orjson.loads(body) == {"ok": True}


@pytest.mark.usefixtures("closing")
async def test_tls_server_name_override(pki: Pki) -> None:
    context = server_context(pki, other=True)
    async with serving({"/x": ok}, ssl_context=context, host="127.0.0.1") as server:
        with pytest.raises(UpstreamUnreachable, match="certificate"):
            await _get(server.url + "/x", UpstreamTls(ca_file=str(pki.ca)))
        tls = UpstreamTls(ca_file=str(pki.ca), server_name="api.internal")
        assert (await _get(server.url + "/x", tls))[0] == 200


@pytest.mark.usefixtures("closing")
async def test_tls_client_certificate_when_the_server_requires_one(pki: Pki) -> None:
    context = server_context(pki, require_client=True)
    async with serving({"/x": ok}, ssl_context=context, host="127.0.0.1") as server:
        with pytest.raises(UpstreamError):
            await _get(server.url + "/x", UpstreamTls(ca_file=str(pki.ca)))
        tls = UpstreamTls(
            ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)
        )
        assert (await _get(server.url + "/x", tls))[0] == 200
    presented = [r.peer_cert for r in server.seen if r.peer_cert]
    assert presented, "no client certificate reached the server"
    subject = dict(item[0] for item in presented[-1]["subject"])
    assert subject["commonName"] == "crossway-client"


@pytest.mark.usefixtures("closing")
async def test_tls_insecure_skip_verify_works_and_warns(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        tls = UpstreamTls.model_validate({"insecure_skip_verify": True})
    assert any(
        r.levelno == logging.WARNING and "insecure_skip_verify" in r.getMessage()
        for r in caplog.records
    )
    async with serving({"/x": ok}, ssl_context=server_context(pki), host="127.0.0.1") as server:
        assert (await _get(server.url + "/x", tls))[0] == 200


@pytest.mark.usefixtures("closing")
async def test_one_session_per_tls_setting(pki: Pki) -> None:
    a = UpstreamTls(ca_file=str(pki.ca))
    b = UpstreamTls(ca_file=str(pki.ca))
    assert client.get_session(a) is client.get_session(b)
    assert client.get_session(a) is not client.get_session(None)
    assert client.get_session(UpstreamTls()) is client.get_session(None)


def test_tls_config_validation() -> None:
    with pytest.raises(ValueError, match="cert_file"):
        UpstreamTls(key_file="/k.pem")


async def test_tls_unreadable_ca_file_is_a_clear_502(tmp_path: Path) -> None:
    tls = UpstreamTls(ca_file=str(tmp_path / "missing.pem"))
    try:
        with pytest.raises(UpstreamUnreachable, match="ca_file") as info:
            await _get("https://127.0.0.1:9/", tls)
        assert info.value.status_code == 502
    finally:
        await client.close_session()


async def test_mcp_upstream_uses_its_tls_setting(pki: Pki) -> None:
    async def mcp(request: web.Request) -> web.Response:
        message = orjson.loads(await request.read())
        if "id" not in message:
            return web.Response(status=202)
        result = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "serverInfo": {"name": "tls", "version": "1"},
        }
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})

    class Events:
        async def on_notification(self, server: str, message: JsonObject) -> None:
            return None

        async def on_request(self, server: str, message: JsonObject) -> JsonObject:
            return {}

        async def on_closed(self, server: str) -> None:
            return None

    async with serving({"/mcp": mcp}, ssl_context=server_context(pki)) as server:
        for tls, works in [(None, False), ({"ca_file": str(pki.ca)}, True)]:
            cfg = StreamableHttpServerConfig.model_validate(
                {"type": "streamable_http", "url": server.url + "/mcp", "tls": tls}
            )
            upstream = StreamableHttpUpstream("t", cfg, McpTimeouts(connect=3), 1 << 20)
            try:
                if works:
                    session = await upstream.open_session(ClientHello("2025-06-18"), Events())
                    assert session.init_result["serverInfo"]["name"] == "tls"
                    await session.close()
                else:
                    with pytest.raises(UpstreamError):
                        await upstream.open_session(ClientHello("2025-06-18"), Events())
            finally:
                await upstream.close()


GATEWAY = """
routes:
  - name: trusted
    match:
      path:
        prefix: /trusted
    strip_prefix: true
    backend: trusted
  - name: untrusted
    backend: untrusted
backends:
  trusted:
    type: http
    url: {url}
    tls:
      ca_file: {ca}
  untrusted:
    type: http
    url: {url}
"""


async def test_http_backend_tls_through_the_gateway(pki: Pki) -> None:
    async with serving({"/x": ok}, ssl_context=server_context(pki), host="127.0.0.1") as server:
        with start_gateway(GATEWAY.format(url=server.url, ca=pki.ca)) as gw:

            def fetch(path: str) -> tuple[int, bytes]:
                try:
                    with urllib.request.urlopen(gw.url + path, timeout=10) as resp:
                        return int(resp.status), resp.read()
                except urllib.error.HTTPError as exc:
                    return int(exc.code), exc.read()

            status, body = await asyncio.to_thread(fetch, "/trusted/x")
            assert status == 200 and orjson.loads(body) == {"ok": True}
            status, body = await asyncio.to_thread(fetch, "/x")
            assert status == 502
            error = orjson.loads(body)["error"]
            assert "certificate" in error["message"]
