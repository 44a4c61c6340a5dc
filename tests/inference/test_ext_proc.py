"""The external endpoint picker client against a real ext_proc gRPC server on loopback."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from crossway.config.inference import EndpointPickerConfig
from crossway.errors import ServiceUnavailable
from crossway.inference.ext_proc import (
    BODY_CHUNK_BYTES,
    EndpointPickerClient,
    EndpointPickerError,
    PickResult,
    normalize_endpoint,
)
from tests.helpers import free_port
from tests.inference.epp_server import Behaviour, EppServer

POOL = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]
BODY = json.dumps({"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEADERS = [
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    ("host", "gw.example"),
    ("content-type", "application/json"),
    ("authorization", "Bearer sk-crossway-client-key"),
    ("x-request-id", "req-1"),
]


def ok(result: PickResult | EndpointPickerError) -> PickResult:
    assert isinstance(result, PickResult), result
    return result


def client_for(address: str, timeout: float = 2.0, **kw: object) -> EndpointPickerClient:
    return EndpointPickerClient(
        EndpointPickerConfig(address=address, timeout=timeout, **kw), "sims"
    )


async def pick_once(
    behaviour: Behaviour,
    body: bytes = BODY,
    candidates: list[str] = POOL,
    picker_timeout: float = 2.0,
) -> tuple[EppServer, PickResult | EndpointPickerError]:
    async with EppServer(behaviour) as epp:
        client = client_for(epp.address, picker_timeout)
        await client.start()
        try:
            result: PickResult | EndpointPickerError = await client.pick(HEADERS, body, candidates)
        except EndpointPickerError as exc:
            result = exc
        finally:
            await client.close()
        return epp, result


async def test_fixed_endpoint_by_header_and_what_the_picker_sees() -> None:
    behaviour = Behaviour(endpoints=["127.0.0.1:8002"], set_headers={"x-gateway-model": "m"})
    async with EppServer(behaviour) as epp:
        client = client_for(epp.address)
        await client.start()
        result = await client.pick(HEADERS, BODY, POOL)
        await epp.wait_finished(1)  # the stream was ended, not left open
        await client.close()
    assert ok(result).endpoints == ["127.0.0.1:8002"]
    assert ok(result).body is None and result.immediate is None
    assert ok(result).set_headers == {"x-gateway-model": "m"}

    first = epp.streams[0][0]
    assert first.request_headers.end_of_stream is False
    assert first.protocol_config.request_body_mode == 4  # FULL_DUPLEX_STREAMED
    headers = epp.headers()
    assert list(headers)[:4] == [":method", ":path", ":scheme", ":authority"]
    assert headers[":method"] == "POST" and headers[":authority"] == "gw.example"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(BODY))
    assert headers["x-request-id"] == "req-1"
    assert "authorization" not in headers and "host" not in headers
    assert epp.candidates() == POOL
    assert epp.body() == BODY
    last = epp.streams[0][-1]
    assert last.request_body.end_of_stream is True


async def test_primary_and_fallbacks_in_order_deduplicated() -> None:
    _, result = await pick_once(
        Behaviour(endpoints=["127.0.0.1:8003", "127.0.0.1:8001", "127.0.0.1:8003", "10.1.1.1:80"])
    )
    assert ok(result).endpoints == ["127.0.0.1:8003", "127.0.0.1:8001"]


@pytest.mark.parametrize("via", ["metadata", "both"])
async def test_endpoint_in_dynamic_metadata(via: str) -> None:
    _, result = await pick_once(Behaviour(endpoints=["127.0.0.1:8001", "127.0.0.1:8002"], via=via))
    assert ok(result).endpoints == ["127.0.0.1:8001", "127.0.0.1:8002"]


@pytest.mark.parametrize("body_as", ["streamed", "buffered"])
async def test_mutated_body(body_as: str) -> None:
    new = json.dumps({"model": "sim-model-lora", "messages": []}).encode() * 50
    _, result = await pick_once(Behaviour(body=new, body_as=body_as, chunk=100))
    assert ok(result).body == new
    assert ok(result).endpoints == ["127.0.0.1:8001"]
    assert "content-length" not in ok(result).set_headers


async def test_large_body_is_chunked_and_an_echoed_body_is_no_mutation() -> None:
    big = b'{"model":"sim-model","prompt":"' + b"x" * (3 * BODY_CHUNK_BYTES) + b'"}'
    epp, result = await pick_once(Behaviour(echo_body=True), body=big)
    chunks = [r for r in epp.streams[0] if r.HasField("request_body")]
    assert len(chunks) == 4 and [c.request_body.end_of_stream for c in chunks][-2:] == [False, True]
    assert epp.body() == big
    assert ok(result).body is None


async def test_no_body_ends_the_stream_at_the_headers() -> None:
    epp, result = await pick_once(Behaviour(), body=b"")
    assert epp.streams[0][0].request_headers.end_of_stream is True
    assert len(epp.streams[0]) == 1
    assert ok(result).endpoints == ["127.0.0.1:8001"]


async def test_immediate_response() -> None:
    _, result = await pick_once(Behaviour(immediate=(429, b"sheddable request dropped")))
    assert ok(result).immediate == (429, b"sheddable request dropped", {"retry-after": "1"})
    assert ok(result).endpoints == []


async def test_chooses_by_the_body() -> None:
    behaviour = Behaviour(by_model={"a": "127.0.0.1:8001", "b": "127.0.0.1:8003"})
    async with EppServer(behaviour) as epp:
        client = client_for(epp.address)
        picks = [
            (await client.pick(HEADERS, json.dumps({"model": m}).encode(), POOL)).endpoints
            for m in ("a", "b", "a")
        ]
        await client.close()
    assert picks == [["127.0.0.1:8001"], ["127.0.0.1:8003"], ["127.0.0.1:8001"]]


async def test_endpoint_outside_the_pool_is_refused() -> None:
    _, result = await pick_once(Behaviour(endpoints=["10.9.9.9:8000"]))
    assert isinstance(result, EndpointPickerError)
    assert "picked endpoint 10.9.9.9:8000 is not in the pool" in str(result)
    assert isinstance(result, ServiceUnavailable) and result.status_code == 503


async def test_malformed_endpoint() -> None:
    _, result = await pick_once(Behaviour(endpoints=["not an endpoint"]))
    assert isinstance(result, EndpointPickerError)
    assert "malformed" in str(result) and "not host:port" in str(result)


async def test_no_endpoint_named() -> None:
    _, result = await pick_once(Behaviour(endpoints=[]))
    assert isinstance(result, EndpointPickerError) and "named no endpoint" in str(result)


async def test_ipv6_endpoints_match_in_any_spelling() -> None:
    pool = ["[::1]:8000", "[fd00::2]:8000"]
    _, result = await pick_once(
        Behaviour(endpoints=["[0:0::1]:8000", "[FD00:0::2]:8000"]), candidates=pool
    )
    assert ok(result).endpoints == pool


async def test_closed_without_an_answer() -> None:
    _, result = await pick_once(Behaviour(close_without_answer=True))
    assert isinstance(result, EndpointPickerError)
    assert "closed the stream without an answer" in str(result)


async def test_picker_error_status() -> None:
    _, result = await pick_once(Behaviour(abort=grpc.StatusCode.INTERNAL))
    assert isinstance(result, EndpointPickerError)
    assert "failed: INTERNAL picker failed" in str(result)


async def test_timeout() -> None:
    async with EppServer(Behaviour(hang=True)) as epp:
        client = client_for(epp.address, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(EndpointPickerError, match=r"no answer within 0.3s"):
            await client.pick(HEADERS, BODY, POOL)
        elapsed = time.monotonic() - started
        await epp.wait_finished(1)
        await client.close()
    assert 0.25 <= elapsed < 2.0


async def test_picker_down_fails_fast() -> None:
    client = client_for(f"127.0.0.1:{free_port()}", timeout=5.0)
    await client.start()
    for _ in range(2):  # the first connects, the second finds the channel failed
        started = time.monotonic()
        with pytest.raises(EndpointPickerError, match="unavailable"):
            await client.pick(HEADERS, BODY, POOL)
        assert time.monotonic() - started < 2.0
    await client.close()


async def test_no_candidates() -> None:
    client = client_for(f"127.0.0.1:{free_port()}")
    with pytest.raises(EndpointPickerError, match="no endpoint of the pool is ready"):
        await client.pick(HEADERS, BODY, [])


async def test_concurrent_picks_share_one_channel_and_leave_no_tasks() -> None:
    async with EppServer(Behaviour(endpoints=["127.0.0.1:8002", "127.0.0.1:8001"])) as epp:
        client = client_for(epp.address)
        await client.start()
        before = asyncio.all_tasks()
        results = await asyncio.gather(*(client.pick(HEADERS, BODY, POOL) for _ in range(20)))
        await epp.wait_finished(20)
        # the test server's own tasks aside (it shares this loop), the picks left none
        extra = [t for t in asyncio.all_tasks() - before if "aio/server" not in repr(t)]
        assert extra == []
        await client.close()
    assert all(r.endpoints == ["127.0.0.1:8002", "127.0.0.1:8001"] for r in results)


def _self_signed(tmp_path: Path) -> tuple[bytes, bytes, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test epp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert_pem)
    return cert_pem, key_pem, ca


async def test_tls_with_ca_file(tmp_path: Path) -> None:
    cert, key, ca = _self_signed(tmp_path)
    async with EppServer(Behaviour(), tls=(cert, key)) as epp:
        client = client_for(epp.address, ca_file=str(ca))
        result = await client.pick(HEADERS, BODY, POOL)
        await client.close()
        plain = client_for(epp.address, timeout=5.0)  # TLS off against a TLS picker
        started = time.monotonic()
        with pytest.raises(EndpointPickerError, match="unavailable"):
            await plain.pick(HEADERS, BODY, POOL)
        assert time.monotonic() - started < 2.0
        await plain.close()
    assert ok(result).endpoints == ["127.0.0.1:8001"]


def test_unreadable_ca_file(tmp_path: Path) -> None:
    with pytest.raises(EndpointPickerError, match="cannot read ca_file"):
        client_for("127.0.0.1:1", ca_file=str(tmp_path / "missing.pem"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.5:8000", "10.0.0.5:8000"),
        (" VLLM-0.internal:80 ", "vllm-0.internal:80"),
        ("[::1]:8000", "[::1]:8000"),
        ("[0:0:0::1]:8000", "[::1]:8000"),
        ("::1:8000", None),
        ("[::1]", None),
        ("10.0.0.5", None),
        ("10.0.0.5:0", None),
        ("10.0.0.5:65536", None),
        ("[not-v6]:80", None),
        ("host:port", None),
        ("", None),
    ],
)
def test_normalize_endpoint(value: str, expected: str | None) -> None:
    assert normalize_endpoint(value) == expected
