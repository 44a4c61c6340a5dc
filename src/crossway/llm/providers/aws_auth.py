"""AWS Signature Version 4 for Bedrock.

The signature is computed here, in a few string joins and one HMAC per request, rather than
through botocore's `SigV4Auth` (whose `AWSRequest`, `HTTPHeaders` and canonicalisation cost
about 50 µs a request): what repeats is cached -- the derived signing key per secret, day,
region and service; the canonical request but for its date and payload hash, per URL, headers
and session token; the `x-amz-date` string per second. The canonical form follows botocore's
rules exactly (tests compare the two signers' output for the same request and time): header
names lowercased, botocore's unsigned header list left out, values trimmed with inner runs of spaces collapsed, the path normalized and
percent-encoded once more (`safe='/~'`), the payload's SHA-256 signed.

Credentials come from the config or botocore's own chain (environment, shared files,
container and instance roles), resolved off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any, Final, NamedTuple
from urllib.parse import quote, urlsplit

from botocore.auth import SIGNED_HEADERS_BLACKLIST
from botocore.credentials import Credentials
from botocore.utils import normalize_url_path

ALGORITHM: Final = "AWS4-HMAC-SHA256"
MAX_CACHED_KEYS: Final = 64
"""Derived signing keys kept (one per secret, day, region and service)."""
MAX_CACHED_URLS: Final = 256
"""Entries kept in each per-URL cache (a cache that fills up starts again empty)."""

_UNSIGNED: Final = frozenset(SIGNED_HEADERS_BLACKLIST)

_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_SHA256_BLOCK: Final = 64

_signers: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
# url -> (host, canonical path, canonical query)
_url_parts: dict[str, tuple[str, str, str]] = {}
_stamp: list[Any] = [-1, ""]  # the last second signed and its `x-amz-date`


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived SigV4 key for one day, region and service."""
    key = f"AWS4{secret_key}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def _signer(secret_key: str, date: str, region: str, service: str) -> tuple[Any, Any]:
    """HMAC-SHA256 with the derived key, as its two SHA-256 states after the padded key
    (cached): copying them costs half of `hmac.digest`, which looks the digest up by name."""
    cache_key = (secret_key, date, region, service)
    pads = _signers.get(cache_key)
    if pads is None:
        block = signing_key(secret_key, date, region, service).ljust(_SHA256_BLOCK, b"\0")
        pads = (hashlib.sha256(block.translate(_IPAD)), hashlib.sha256(block.translate(_OPAD)))
        if len(_signers) >= MAX_CACHED_KEYS:
            _signers.clear()
        _signers[cache_key] = pads
    return pads


def _hmac_hex(pads: tuple[Any, Any], message: bytes) -> str:
    inner = pads[0].copy()
    inner.update(message)
    outer = pads[1].copy()
    outer.update(inner.digest())
    return str(outer.hexdigest())


def _parts_of(url: str) -> tuple[str, str, str]:
    parts = _url_parts.get(url)
    if parts is None:
        split = urlsplit(url)
        query = ""
        if split.query:
            pairs = sorted(pair.partition("=")[::2] for pair in split.query.split("&"))
            query = "&".join(f"{k}={v}" for k, v in pairs)
        parts = (split.netloc, quote(normalize_url_path(split.path), safe="/~"), query)
        if len(_url_parts) >= MAX_CACHED_URLS:
            _url_parts.clear()
        _url_parts[url] = parts
    return parts


def amz_date(now: float | None = None) -> str:
    """`YYYYMMDDTHHMMSSZ` for `now` (default: the current time), formatted once a second."""
    second = int(time.time() if now is None else now)
    if _stamp[0] != second:
        _stamp[1] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        _stamp[0] = second
    return str(_stamp[1])


class _Template(NamedTuple):
    """What the signature of one (URL, headers, token) repeats on every request."""

    headers: dict[str, str]  # host, the caller's headers lowercased, the session token
    head: str  # the canonical request up to the `x-amz-date` line
    tail: str  # from the line after it to the signed header names' line
    signed_names: str


_templates: dict[tuple[str, tuple[tuple[str, str], ...], str | None], _Template] = {}


def _template(url: str, headers: dict[str, str], token: str | None) -> _Template:
    cache_key = (url, tuple(headers.items()), token)
    template = _templates.get(cache_key)
    if template is None:
        host, path, query = _parts_of(url)
        base = {"host": host}
        for name, value in headers.items():
            base[name.lower()] = value
        base.pop("x-amz-date", None)
        if token:
            base["x-amz-security-token"] = token
        names = sorted({*base, "x-amz-date"} - _UNSIGNED)
        lines = [f"{n}:{' '.join(base[n].split())}\n" if n != "x-amz-date" else "" for n in names]
        at = names.index("x-amz-date")
        signed_names = ";".join(names)
        template = _Template(
            base,
            f"POST\n{path}\n{query}\n" + "".join(lines[:at]),
            "".join(lines[at + 1 :]) + f"\n{signed_names}\n",
            signed_names,
        )
        if len(_templates) >= MAX_CACHED_URLS:
            _templates.clear()
        _templates[cache_key] = template
    return template


def sign_headers(
    credentials: Any,
    region: str,
    service: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    now: float | None = None,
) -> dict[str, str]:
    """`headers` plus `host`, `x-amz-date`, `authorization` (and the session token) for a POST
    of `body` to `url`, signed with `credentials` (`access_key`, `secret_key`, `token`)."""
    template = _template(url, headers, credentials.token)
    stamp = amz_date(now)
    canonical = (
        f"{template.head}x-amz-date:{stamp}\n{template.tail}{hashlib.sha256(body).hexdigest()}"
    )
    date = stamp[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signer = _signer(credentials.secret_key, date, region, service)
    signature = _hmac_hex(signer, to_sign.encode())
    signed = dict(template.headers)
    signed["x-amz-date"] = stamp
    signed["authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={template.signed_names}, Signature={signature}"
    )
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
