"""The pooled upstream HTTP client shared by every backend in a worker (the hot path).

One `aiohttp.ClientSession` per worker process keeps keep-alive connections to every upstream,
and one more per distinct upstream TLS setting (`tls:` of a backend or provider), all made by
`crossway.proxy.outbound.create_session` (no cookie jar; redirects are never followed here).
Timeouts are per request (connect / first byte / idle between body chunks), so backends with
different limits share the pool. Every failure is mapped into the gateway error tree here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Final

import aiohttp
from yarl import URL

from crossway.config.common import Timeouts, UpstreamTls
from crossway.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from crossway.proxy.outbound import create_session, effective_tls, outbound_headers

DEFAULT_POOL_LIMIT: Final = 1024
DEFAULT_POOL_LIMIT_PER_HOST: Final = 512
DEFAULT_KEEPALIVE_SECONDS: Final = 60.0
URL_CACHE_SIZE: Final = 4096
_SKIP_AUTO_HEADERS: Final = ("User-Agent", "Accept-Encoding", "Content-Type")

_session: aiohttp.ClientSession | None = None
_tls_sessions: dict[UpstreamTls, aiohttp.ClientSession] = {}


def _new_session(tls: UpstreamTls | None) -> aiohttp.ClientSession:
    return create_session(
        tls=tls,
        limit=DEFAULT_POOL_LIMIT,
        limit_per_host=DEFAULT_POOL_LIMIT_PER_HOST,
        keepalive_timeout=DEFAULT_KEEPALIVE_SECONDS,
        auto_decompress=False,
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        timeout=aiohttp.ClientTimeout(total=None),
    )


def get_session(tls: UpstreamTls | None = None) -> aiohttp.ClientSession:
    """The worker's shared session for `tls` (None: the default one), created on first use
    inside the running loop; one per distinct TLS setting."""
    global _session
    if tls is not None:
        tls = effective_tls(tls)
    if tls is None:
        if _session is None or _session.closed:
            _session = _new_session(None)
        return _session
    session = _tls_sessions.get(tls)
    if session is None or session.closed:
        session = _tls_sessions[tls] = _new_session(tls)
    return session


async def close_session() -> None:
    """Close the shared sessions (at worker shutdown)."""
    global _session
    sessions = [_session, *_tls_sessions.values()]
    _session = None
    _tls_sessions.clear()
    for session in sessions:
        if session is not None and not session.closed:
            await session.close()


_timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}
_urls: dict[str, URL] = {}


def _timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    """aiohttp's own per-read timer covers the larger of first-byte and idle; an asyncio timer
    is added only for the smaller one when they differ (the default, equal, costs no timer)."""
    key = (t.connect, max(t.first_byte, t.idle))
    value = _timeouts.get(key)
    if value is None:
        value = _timeouts[key] = aiohttp.ClientTimeout(
            total=None, sock_connect=t.connect, connect=t.connect, sock_read=key[1]
        )
    return value


def _url(url: str) -> URL:
    """Parsed URLs, cached: most upstream URLs repeat (one per provider endpoint)."""
    parsed = _urls.get(url)
    if parsed is None:
        if len(_urls) >= URL_CACHE_SIZE:
            _urls.clear()
        parsed = _urls[url] = URL(url, encoded=True)
    return parsed


async def send(
    method: str,
    url: str,
    headers: Mapping[str, str] | list[tuple[str, str]],
    body: bytes,
    timeouts: Timeouts,
    tls: UpstreamTls | None = None,
) -> aiohttp.ClientResponse:
    """Send a request and return once the response headers arrived (redirects are answers,
    never followed). `tls` is the upstream's TLS setting (None: system CAs, no client cert).

    The caller must release the response (`read_body`/`iter_body` do, or `resp.release()`).
    """
    session = get_session(tls)
    request = session.request(
        method,
        _url(url),
        headers=outbound_headers(headers),
        data=body or None,
        allow_redirects=False,
        timeout=_timeout(timeouts),
        server_hostname=tls.server_name if tls is not None else None,
    )
    try:
        if timeouts.first_byte < timeouts.idle:
            async with asyncio.timeout(timeouts.connect + timeouts.first_byte):
                return await request
        return await request
    except aiohttp.ConnectionTimeoutError as exc:
        raise UpstreamTimeout(f"upstream connect timed out ({url_host(url)})") from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"upstream did not answer in time ({url_host(url)})") from exc
    except aiohttp.ClientConnectorCertificateError as exc:
        raise UpstreamUnreachable(
            f"upstream TLS certificate not trusted ({url_host(url)}): {_cert_reason(exc)}"
        ) from exc
    except aiohttp.ClientSSLError as exc:
        raise UpstreamUnreachable(f"upstream TLS handshake failed ({url_host(url)})") from exc
    except aiohttp.ClientConnectorError as exc:
        reason = exc.strerror or "cannot connect"
        raise UpstreamUnreachable(f"upstream unreachable ({url_host(url)}): {reason}") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(
            f"upstream connection failed ({url_host(url)}): {_reason(exc)}"
        ) from exc


async def read_body(resp: aiohttp.ClientResponse, timeouts: Timeouts) -> bytes:
    """Read a whole (non-streamed) response body."""
    try:
        if timeouts.idle < timeouts.first_byte:
            async with asyncio.timeout(timeouts.idle):
                return await resp.read()
        return await resp.read()
    except TimeoutError as exc:
        raise UpstreamTimeout("upstream stopped sending the response body") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"upstream connection closed before the answer was complete ({_reason(exc)})"
        ) from exc
    finally:
        resp.release()


async def iter_body(resp: aiohttp.ClientResponse, timeouts: Timeouts) -> AsyncIterator[bytes]:
    """Yield body chunks as they arrive; an idle gap longer than `timeouts.idle` ends with
    `UpstreamTimeout`, a broken connection with `UpstreamError`."""
    content = resp.content
    timer = timeouts.idle < timeouts.first_byte  # else aiohttp's read timer is the idle limit
    try:
        while True:
            try:
                if timer:
                    async with asyncio.timeout(timeouts.idle):
                        chunk = await content.readany()
                else:
                    chunk = await content.readany()
            except TimeoutError as exc:
                raise UpstreamTimeout("upstream stream went idle") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"upstream stream ended unexpectedly ({_reason(exc)})") from exc
            if not chunk:
                return
            yield chunk
    finally:
        resp.release()


def _cert_reason(exc: aiohttp.ClientConnectorCertificateError) -> str:
    error = exc.certificate_error
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    return "certificate verify failed"


def _reason(exc: aiohttp.ClientError) -> str:
    """A few words for a client about a broken upstream connection. aiohttp's own messages
    (payload states, transfer-encoding internals, socket details) stay in the logs: the
    exception is chained to the gateway error."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the upstream closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response body was cut short"
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        return "connection reset"
    return "connection error"


def url_host(url: str) -> str:
    """The `host[:port]` of a URL, for error messages that must not leak paths or keys."""
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]


__all__ = [
    "GatewayError",
    "close_session",
    "get_session",
    "iter_body",
    "read_body",
    "send",
    "url_host",
]
