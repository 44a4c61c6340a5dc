"""AWS Signature Version 4 for Bedrock, with botocore's signer.

botocore's `SigV4Auth` builds the canonical request and the string to sign; this module only
saves it work that repeats on every request: the derived signing key is cached per day, region
and service, the payload hash is computed once from the bytes we already hold, and the `host`
header is set up front. Credentials come from the config or botocore's own chain (environment,
shared files, container and instance roles), resolved off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any, Final
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MAX_CACHED_KEYS: Final = 64

_signing_keys: dict[tuple[str, str, str, str], bytes] = {}


class _CachedSigV4Auth(SigV4Auth):  # type: ignore[misc]
    """botocore's SigV4 with the signing key cached and the payload hash precomputed."""

    def headers_to_sign(self, request: Any) -> Any:
        # Asked twice per signature (canonical request, then Authorization): build it once.
        cached = request.context.get("headers_to_sign")
        if cached is None:
            cached = request.context["headers_to_sign"] = super().headers_to_sign(request)
        return cached

    def payload(self, request: Any) -> str:
        known = request.context.get("payload_sha256")
        return str(known) if known else str(super().payload(request))

    def signature(self, string_to_sign: str, request: Any) -> str:
        date = request.context["timestamp"][0:8]
        cache_key = (self.credentials.secret_key, date, self._region_name, self._service_name)
        key = _signing_keys.get(cache_key)
        if key is None:
            k_date = self._sign(f"AWS4{self.credentials.secret_key}".encode(), date)
            k_region = self._sign(k_date, self._region_name)
            k_service = self._sign(k_region, self._service_name)
            key = self._sign(k_service, "aws4_request")
            if len(_signing_keys) >= MAX_CACHED_KEYS:
                _signing_keys.clear()
            _signing_keys[cache_key] = key
        return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_headers(
    credentials: Any, region: str, service: str, url: str, headers: dict[str, str], body: bytes
) -> dict[str, str]:
    """`headers` plus `host`, `x-amz-date`, `authorization` (and the session token) for a POST."""
    signed = {"host": urlsplit(url).netloc, **headers}
    request = AWSRequest(method="POST", url=url, data=body, headers=signed)
    request.context["payload_sha256"] = hashlib.sha256(body).hexdigest()
    _CachedSigV4Auth(credentials, service, region).add_auth(request)
    signed["x-amz-date"] = request.headers["X-Amz-Date"]
    signed["authorization"] = request.headers["Authorization"]
    token = request.headers.get("X-Amz-Security-Token")
    if token:
        signed["x-amz-security-token"] = token
    return signed


def static_credentials(access_key: str, secret_key: str, token: str | None) -> Credentials:
    return Credentials(access_key, secret_key, token)


def default_credentials() -> Any:
    """botocore's credential chain (blocking: call it in a thread)."""
    import botocore.session

    return botocore.session.Session().get_credentials()


async def frozen(credentials: Any) -> Any:
    """Current key, secret and token; a refresh (blocking I/O) runs in a thread."""
    refresh_needed = getattr(credentials, "refresh_needed", None)
    if refresh_needed is not None and refresh_needed():
        return await asyncio.to_thread(credentials.get_frozen_credentials)
    return credentials.get_frozen_credentials()
