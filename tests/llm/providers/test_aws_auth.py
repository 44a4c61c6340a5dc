"""Crossway's SigV4 signer gives exactly botocore's signature for the same request and time."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from crossway.llm.providers import aws_auth

NOW = datetime.datetime(2026, 12, 2, 3, 4, 5, tzinfo=datetime.UTC)

URLS = [
    "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-v1:0/converse",
    "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile%2Fus.anthropic.claude/converse-stream",
    "http://127.0.0.1:8443/model/m/./x/../invoke",
    "http://127.0.0.1:8443//model/a b~c/invoke?b=2&a=1&a=0",
]

HEADERS = [
    {"content-type": "application/json", "accept": "application/json"},
    {
        "Content-Type": "application/json",
        "accept": "application/vnd.amazon.eventstream",
        "x-custom": "  spaced   value  ",
        "user-agent": "not signed",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    },
]


def botocore_headers(
    credentials: Credentials, region: str, url: str, headers: dict[str, str], body: bytes
) -> dict[str, str]:
    """What botocore's own SigV4Auth signs for the same POST, at `NOW`."""
    from urllib.parse import urlsplit

    request = AWSRequest(
        method="POST", url=url, data=body, headers={"host": urlsplit(url).netloc, **headers}
    )
    SigV4Auth(credentials, "bedrock", region).add_auth(request)
    return {k.lower(): v for k, v in request.headers.items()}


@pytest.fixture
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("headers", HEADERS)
@pytest.mark.parametrize("token", [None, "session-token-xyz"])
def test_same_signature_as_botocore(
    frozen_botocore: None, url: str, headers: dict[str, str], token: str | None
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    ours = aws_auth.sign_headers(
        credentials, "us-east-1", "bedrock", url, headers, body, now=NOW.timestamp()
    )
    theirs = botocore_headers(credentials, "us-east-1", url, headers, body)
    assert ours["authorization"] == theirs["authorization"]
    assert ours["x-amz-date"] == theirs["x-amz-date"] == "20261202T030405Z"
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token") == token
    assert ours["host"] == theirs["host"]


def test_new_day_new_key_and_empty_body(frozen_botocore: None) -> None:
    credentials = Credentials("AKIDEXAMPLE", "secret", None)
    url = URLS[0]
    headers: dict[str, Any] = {"content-type": "application/json"}
    first = aws_auth.sign_headers(credentials, "eu-west-1", "bedrock", url, headers, b"", now=0)
    day_later = aws_auth.sign_headers(
        credentials, "eu-west-1", "bedrock", url, headers, b"", now=86_400
    )
    assert first["x-amz-date"] == "19700101T000000Z"
    assert day_later["x-amz-date"] == "19700102T000000Z"
    assert "19700102/eu-west-1/bedrock/aws4_request" in day_later["authorization"]
    assert first["authorization"] != day_later["authorization"]
    # The same second signed again (cached date string and key) gives the same signature.
    again = aws_auth.sign_headers(credentials, "eu-west-1", "bedrock", url, headers, b"", now=0)
    assert again == first


def test_cached_hmac_states_give_hmac_sha256() -> None:
    import hashlib
    import hmac

    for secret in ("s", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "x" * 100):
        key = aws_auth.signing_key(secret, "20261202", "us-east-1", "bedrock")
        pads = aws_auth._signer(secret, "20261202", "us-east-1", "bedrock")
        for message in (b"", b"AWS4-HMAC-SHA256\n20261202T030405Z", b"m" * 1000):
            expected = hmac.new(key, message, hashlib.sha256).hexdigest()
            assert aws_auth._hmac_hex(pads, message) == expected
            assert aws_auth._hmac_hex(pads, message) == expected  # the cached states are intact
