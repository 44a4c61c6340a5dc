"""Listener TLS and mutual TLS through a real `crossway serve` with a real HTTPS client, and
the mtls policy against the ASGI TLS extension (a built scope: granian 2.8 verifies client
certificates but does not pass them to the application)."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crossway.config.policy import MtlsAuthConfig
from crossway.config.tls import ListenTls
from crossway.errors import Forbidden, Unauthenticated
from crossway.policy.mtls import MtlsPolicy
from crossway.server.context import RequestContext
from tests.helpers import free_port, start_gateway, wait_for
from tests.policy.counting_upstream import call, counting_upstream

Key = ec.EllipticCurvePrivateKey


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(**attrs: str) -> x509.Name:
    oids = {"cn": NameOID.COMMON_NAME, "o": NameOID.ORGANIZATION_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


class Ca:
    """A certificate authority that issues server and client certificates."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn=name))
            .issuer_name(_name(cn=name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
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
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self, subject: x509.Name, sans: list[x509.GeneralName], client: bool
    ) -> tuple[x509.Certificate, Key]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


@dataclass
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path
    client_pem: str
    issuer: Ca

    def client_context(self, with_cert: bool = True, stranger: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if stranger:
            context.load_cert_chain(str(self.stranger_cert), str(self.stranger_key))
        elif with_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca, other = Ca("Crossway Test CA"), Ca("Someone Else's CA")
    server, server_key = ca.issue(
        _name(cn="localhost"),
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        client=False,
    )
    client, client_key = ca.issue(
        _name(cn="agent-1", o="Research"), [x509.DNSName("agent-1.agents.example")], client=True
    )
    stranger, stranger_key = other.issue(_name(cn="agent-1"), [], client=True)
    files = {
        "ca.pem": _pem(ca.cert),
        "server.pem": _pem(server),
        "server.key": _key_pem(server_key),
        "client.pem": _pem(client),
        "client.key": _key_pem(client_key),
        "stranger.pem": _pem(stranger),
        "stranger.key": _key_pem(stranger_key),
    }
    for name, data in files.items():
        (base / name).write_bytes(data)
    return Pki(
        base,
        base / "ca.pem",
        base / "server.pem",
        base / "server.key",
        base / "client.pem",
        base / "client.key",
        base / "stranger.pem",
        base / "stranger.key",
        _pem(client).decode(),
        ca,
    )


def _config(pki: Pki, port: int, upstream: str, client_auth: str) -> str:
    client = (
        f"    client_ca_file: {pki.ca}\n    client_auth: {client_auth}\n"
        if client_auth != "none"
        else ""
    )
    return f"""
listen:
  port: {port}
  tls:
    cert_file: {pki.server_cert}
    key_file: {pki.server_key}
{client}routes:
  - name: mtls
    match: {{path: {{prefix: /mtls}}}}
    backend: web
    policies:
      - {{type: mtls, identity: san}}
  - name: plain
    backend: web
backends:
  web:
    type: http
    url: {upstream}
"""


async def _refused(url: str, context: ssl.SSLContext | None) -> bool:
    """Whether the request fails before any HTTP answer (a TLS handshake refusal)."""
    try:
        await call(url, ssl_context=context)
    except (aiohttp.ClientError, ssl.SSLError, OSError):
        return True
    return False


async def test_client_certificates_required(pki: Pki) -> None:
    port = free_port()
    async with counting_upstream() as up:
        with start_gateway(_config(pki, port, up.url, "required"), port=port) as gw:
            url = f"https://127.0.0.1:{port}"
            status, _, body = await call(url + "/x", ssl_context=pki.client_context())
            assert status == 200, body
            assert up.count == 1
            # No certificate, or one from another CA: refused in the handshake.
            assert await _refused(url + "/x", pki.client_context(with_cert=False))
            assert await _refused(url + "/x", pki.client_context(stranger=True))
            # Plain HTTP to the TLS port gets nowhere either.
            assert await _refused(f"http://127.0.0.1:{port}/x", None)
            assert up.count == 1
            # granian 2.8 verified the certificate but does not tell the application which
            # one it was: the mtls policy finds none and refuses (and says why in the log).
            status, _, body = await call(url + "/mtls/x", ssl_context=pki.client_context())
            assert status == 401
            assert body["error"]["code"] == "client_certificate_required"
            assert up.count == 1
            assert "no ASGI 'tls' extension" in gw.log()
            assert "https://127.0.0.1" in gw.log()


async def test_client_certificates_optional_and_server_only_tls(pki: Pki) -> None:
    for client_auth in ("optional", "none"):
        port = free_port()
        async with counting_upstream() as up:
            with start_gateway(_config(pki, port, up.url, client_auth), port=port):
                url = f"https://127.0.0.1:{port}/x"
                for context in (pki.client_context(with_cert=False), pki.client_context()):
                    status, _, _ = await call(url, ssl_context=context)
                    assert status == 200, client_auth
                if client_auth == "optional":  # a presented certificate must still verify
                    assert await _refused(url, pki.client_context(stranger=True))
                # The server certificate is what a client verifies: an untrusting client fails.
                assert await _refused(url, ssl.create_default_context())


def _scope(tls: dict[str, object] | None, scheme: str = "https") -> dict[str, object]:
    extensions: dict[str, object] = {"http.response.pathsend": {}}
    if tls is not None:
        extensions["tls"] = tls
    return {"type": "http", "scheme": scheme, "headers": [], "extensions": extensions}


def _tls(chain: list[str], error: str | None = None) -> dict[str, object]:
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": None,
        "client_cert_error": error,
        "tls_version": 0x0304,
        "cipher_suite": 0x1301,
    }


def _ctx() -> RequestContext:
    return RequestContext("r", "b", "1", "/")


async def test_mtls_policy_reads_the_asgi_tls_extension(pki: Pki) -> None:
    by_subject = MtlsPolicy(MtlsAuthConfig(type="mtls"))
    ctx = _ctx()
    await by_subject.on_request(_scope(_tls([pki.client_pem])), ctx)
    assert ctx.identity is not None
    assert ctx.identity["sub"] == "O=Research,CN=agent-1"
    assert ctx.identity["method"] == "mtls"
    assert ctx.identity["san"] == ["agent-1.agents.example"]
    assert len(ctx.identity["fingerprint"]) == 64

    by_san = MtlsPolicy(
        MtlsAuthConfig(type="mtls", identity="san", allowed=["agent-1.agents.example"])
    )
    ctx = _ctx()
    await by_san.on_request(_scope(_tls([pki.client_pem])), ctx)
    assert ctx.identity is not None and ctx.identity["sub"] == "agent-1.agents.example"

    others = MtlsPolicy(MtlsAuthConfig(type="mtls", identity="san", allowed=["agent-2"]))
    with pytest.raises(Forbidden):
        await others.on_request(_scope(_tls([pki.client_pem])), _ctx())

    # No certificate (no extension, plain HTTP, an empty chain): refused in strict mode...
    for scope in (_scope(None), _scope(None, "http"), _scope(_tls([]))):
        with pytest.raises(Unauthenticated) as err:
            await by_subject.on_request(scope, _ctx())
        assert err.value.code == "client_certificate_required"
    # ...anonymous in optional mode; a certificate the server could not verify is refused.
    optional = MtlsPolicy(MtlsAuthConfig(type="mtls", mode="optional"))
    ctx = _ctx()
    await optional.on_request(_scope(_tls([])), ctx)
    assert ctx.identity is None
    for bad in (_tls([pki.client_pem], error="unknown issuer"), _tls(["not a certificate"])):
        with pytest.raises(Unauthenticated) as err:
            await optional.on_request(_scope(bad), _ctx())
        assert err.value.code == "invalid_client_certificate"


def test_listen_tls_config_errors(pki: Pki, tmp_path: Path) -> None:
    base = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    ListenTls.model_validate(base)
    with pytest.raises(ValueError, match="client_auth required needs client_ca_file"):
        ListenTls.model_validate({**base, "client_auth": "required"})
    with pytest.raises(ValueError, match="set client_auth to optional or required"):
        ListenTls.model_validate({**base, "client_ca_file": str(pki.ca)})
    with pytest.raises(ValueError, match="cannot load cert_file"):
        ListenTls.model_validate({**base, "key_file": str(pki.client_key)})  # wrong key
    with pytest.raises(ValueError, match="cannot load cert_file"):
        ListenTls.model_validate({**base, "cert_file": str(tmp_path / "missing.pem")})
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ValueError, match="cannot load client_ca_file"):
        ListenTls.model_validate(
            {**base, "client_ca_file": str(tmp_path / "junk.pem"), "client_auth": "optional"}
        )


def _served_serial(port: int, pki: Pki) -> int | None:
    """Serial number of the certificate the listener presents now (None: not reachable)."""
    context = pki.client_context(with_cert=False)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return x509.load_der_x509_certificate(der).serial_number if der else None


def test_sighup_with_workers_loads_rotated_certificates(pki: Pki, tmp_path: Path) -> None:
    """Workers read the certificate files when they start: after a rotation, SIGHUP respawns
    them gracefully and new connections get the new certificate."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    port = free_port()
    config = f"""
listen:
  port: {port}
  tls: {{cert_file: {cert}, key_file: {key}}}
routes:
  - name: plain
    backend: web
backends:
  web: {{type: http, url: "http://127.0.0.1:9"}}
"""
    with start_gateway(config, port=port, workers=2) as gw:
        first = _served_serial(port, pki)
        assert first == x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
        rotated, rotated_key = pki.issuer.issue(
            _name(cn="localhost"),
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
            client=False,
        )
        key.write_bytes(_key_pem(rotated_key))
        cert.write_bytes(_pem(rotated))
        gw.sighup()
        wait_for(lambda: _served_serial(port, pki) == rotated.serial_number, what="new cert")
        assert "listener TLS files changed" in gw.log()


# -- a verified certificate forwarded by a TLS-terminating proxy in front -----------------------

XFCC_POLICY = (
    "      - {type: mtls, source: header, identity: san, allowed: ['spiffe://corp/agent-a']}\n"
)


def _xfcc(cert_pem: bytes) -> str:
    from urllib.parse import quote

    return (
        f'By=spiffe://corp/gw;Hash=abc;Cert="{quote(cert_pem.decode())}";URI=spiffe://corp/agent-a'
    )


def test_xfcc_parsing_takes_the_last_element() -> None:
    from crossway.policy.mtls import parse_xfcc

    value = 'By=a;URI=spiffe://x/first,By=b;Subject="CN=agent, O=Corp; Inc";URI=spiffe://x/last'
    fields = parse_xfcc(value)
    assert fields["uri"] == ["spiffe://x/last"]
    assert fields["subject"] == ["CN=agent, O=Corp; Inc"]
    assert parse_xfcc("") == {}


async def test_a_forwarded_certificate_counts_only_from_a_trusted_proxy() -> None:
    port = free_port()
    trusted = f"listen:\n  port: {port}\n  trusted_proxies: [127.0.0.1/32]\n"
    header = {"x-forwarded-client-cert": "Hash=abc;URI=spiffe://corp/agent-a"}
    async with counting_upstream() as up:
        from tests.policy.counting_upstream import http_route_config

        # From a peer that is not a trusted proxy, the header is a client's claim: ignored.
        with start_gateway(http_route_config(up.url, XFCC_POLICY)) as gw:
            status, _, body = await call(gw.url + "/x", headers=header)
            assert status == 401
            assert body["error"]["code"] == "client_certificate_required"
        assert up.count == 0
        with start_gateway(http_route_config(up.url, XFCC_POLICY, trusted), port=port) as gw:
            status, _, _ = await call(gw.url + "/x", headers=header)
            assert status == 200
            assert up.count == 1
            assert "x-forwarded-client-cert" not in up.seen[0].headers
            other = {"x-forwarded-client-cert": "Hash=abc;URI=spiffe://corp/agent-b"}
            status, _, body = await call(gw.url + "/x", headers=other)
            assert status == 403
            assert body["error"]["code"] == "client_certificate_denied"
            assert up.count == 1


async def test_a_forwarded_pem_certificate_is_read(pki: Pki) -> None:
    policy = MtlsPolicy(MtlsAuthConfig(type="mtls", source="header", identity="subject"))
    ctx = RequestContext("r", "b", "1", "/")
    from crossway.server.forwarded import FORWARDED

    ctx.attrs[FORWARDED] = object()
    scope = {
        "type": "http",
        "headers": [(b"x-forwarded-client-cert", _xfcc(pki.client_pem.encode()).encode())],
    }
    await policy.on_request(scope, ctx)
    assert ctx.identity is not None and ctx.identity["method"] == "mtls"
    expected = x509.load_pem_x509_certificate(pki.client_pem.encode()).subject.rfc4514_string()
    assert ctx.identity["sub"] == expected
    assert len(ctx.identity["fingerprint"]) == 64
