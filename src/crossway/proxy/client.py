"""The pooled upstream HTTP client shared by every backend in a worker (the hot path).

Two engines sit behind one interface (`send`, `read_body`, `iter_body`, `discard`):

- **reqwest** (the default): one `pyreqwest` client (Rust: reqwest and hyper on a Tokio
  thread) per distinct (TLS setting, connect timeout, read timeout), each with its own pooled
  keep-alive connections. Connecting, writing the request, parsing the response and reading
  body chunks happen outside the interpreter; Python sees the status, the headers and whole
  chunks.
- **aiohttp**: one `aiohttp.ClientSession` per worker and one more per distinct TLS setting,
  made by `crossway.proxy.outbound.create_session`. An upstream whose TLS setting needs
  something the reqwest engine lacks (`server_name`: another SNI / verified name than the URL's
  host) uses it, and `CROSSWAY_UPSTREAM_CLIENT=aiohttp` makes it the engine of every upstream.

Both follow the outbound rules of `crossway.proxy.outbound`: no cookie store, redirects are
answers (never followed), no automatic decompression (bytes are relayed as sent), TLS per
upstream. Timeouts are per request (connect / first byte / idle between body chunks), so
backends with different limits share a pool per setting. Every failure is mapped into the
gateway error tree here, with the same messages for both engines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

from crossway import __version__
from crossway.config.common import Timeouts, UpstreamTls
from crossway.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from crossway.proxy.outbound import create_session, effective_tls, outbound_headers

if TYPE_CHECKING:  # aiohttp is imported on first use: an LLM-only config never loads it (12 MB)
    import aiohttp
    from yarl import URL

try:  # the Rust engine; without its wheel (an unusual platform) every upstream uses aiohttp
    from pyreqwest import exceptions as rq_errors
    from pyreqwest.client import ClientBuilder
    from pyreqwest.request import StreamRequest
    from pyreqwest.response import Response as RqResponse
except ImportError:  # pragma: no cover - pyreqwest ships wheels for the platforms we run on
    ClientBuilder = None  # type: ignore[assignment,misc]

log = logging.getLogger("crossway.proxy")

DEFAULT_POOL_LIMIT: Final = 1024
"""Least number of upstream requests one worker keeps in flight per pool; more when the
process may open more files (`pool_limit`)."""
DEFAULT_POOL_LIMIT_PER_HOST: Final = 512
DEFAULT_KEEPALIVE_SECONDS: Final = 60.0
URL_CACHE_SIZE: Final = 4096
CLOSE_GRACE_SECONDS: Final = 0.05
ENGINE_ENV: Final = "CROSSWAY_UPSTREAM_CLIENT"
"""Environment variable choosing the upstream client engine: `reqwest` (default) or `aiohttp`."""
ENGINES: Final = ("reqwest", "aiohttp")
USER_AGENT: Final = f"crossway/{__version__}"
"""Sent only when the request has no `User-Agent` of its own (reqwest always sends one)."""
_SKIP_AUTO_HEADERS: Final = ("User-Agent", "Accept-Encoding", "Content-Type")


class UpstreamResponse(Protocol):
    """What `send` returns, whichever engine made it: the status and headers are in; the body
    is read with `read_body` / `iter_body`, or dropped with `discard`."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive; `.get(name)` gives the first value."""

    @property
    def raw_headers(self) -> Iterable[tuple[bytes, bytes]]:
        """Every header line, in order, repeated names included."""

    @property
    def content_length(self) -> int | None: ...

    def release(self) -> None:
        """Give the connection back (or close it if the body was not read to its end)."""

    def close(self) -> None:
        """Close the connection without reading the rest of the body."""


def pool_limit() -> int:
    """Upstream requests one pool keeps in flight at once: half the process's open-file limit
    (each one also holds the caller's connection), at least `DEFAULT_POOL_LIMIT`. A request
    past it waits for a free slot no longer than its connect timeout."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):  # pragma: no cover - always available on Linux
        return DEFAULT_POOL_LIMIT
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(DEFAULT_POOL_LIMIT, soft // 2)


def _cancel_lost() -> bool:
    """Whether the current task was asked to stop while it waited on pyreqwest, but the
    request did not reach it: pyreqwest's awaitables may finish normally when a cancellation
    lands just as their result arrives (a client that left, a deadline), and the caller then
    carried on reading. Checked after every pyreqwest await (one C call)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


# -- engine choice -----------------------------------------------------------------------------


def _engine_from_env() -> str:
    value = os.environ.get(ENGINE_ENV, "").strip().lower() or "reqwest"
    if value not in ENGINES:
        log.warning("%s=%r is not one of %s: using reqwest", ENGINE_ENV, value, ENGINES)
        value = "reqwest"
    if value == "reqwest" and ClientBuilder is None:  # pragma: no cover
        log.warning("pyreqwest is not installed: upstream requests use aiohttp")
        value = "aiohttp"
    return value


ENGINE: str = _engine_from_env()
"""The default engine of this process (see `ENGINE_ENV`)."""


def engine_for(tls: UpstreamTls | None) -> str:
    """The engine an upstream with TLS setting `tls` uses: reqwest unless the process says
    aiohttp, or `tls` needs what only aiohttp does (a `server_name` override)."""
    if ENGINE == "aiohttp" or (tls is not None and tls.server_name is not None):
        return "aiohttp"
    return "reqwest"


# -- aiohttp engine ----------------------------------------------------------------------------

_session: aiohttp.ClientSession | None = None
_tls_sessions: dict[UpstreamTls, aiohttp.ClientSession] = {}


def _new_session(tls: UpstreamTls | None) -> aiohttp.ClientSession:
    import aiohttp

    return create_session(
        tls=tls,
        limit=pool_limit(),
        limit_per_host=DEFAULT_POOL_LIMIT_PER_HOST,
        keepalive_timeout=DEFAULT_KEEPALIVE_SECONDS,
        auto_decompress=False,
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        timeout=aiohttp.ClientTimeout(total=None),
    )


def get_session(tls: UpstreamTls | None = None) -> aiohttp.ClientSession:
    """The worker's shared aiohttp session for `tls` (None: the default one), created on first
    use inside the running loop; one per distinct TLS setting."""
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


_timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}
_urls: dict[str, URL] = {}


def _timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    """aiohttp's own per-read timer covers the larger of first-byte and idle; an asyncio timer
    is added only for the smaller one when they differ (the default, equal, costs no timer)."""
    import aiohttp

    key = (t.connect, max(t.first_byte, t.idle))
    value = _timeouts.get(key)
    if value is None:
        value = _timeouts[key] = aiohttp.ClientTimeout(
            total=None, sock_connect=t.connect, connect=t.connect, sock_read=key[1]
        )
    return value


def _url(url: str) -> URL:
    """Parsed URLs, cached: most upstream URLs repeat (one per provider endpoint)."""
    from yarl import URL

    parsed = _urls.get(url)
    if parsed is None:
        if len(_urls) >= URL_CACHE_SIZE:
            _urls.clear()
        parsed = _urls[url] = URL(url, encoded=True)
    return parsed


async def _send_aiohttp(
    method: str,
    url: str,
    headers: Mapping[str, str] | list[tuple[str, str]],
    body: bytes,
    timeouts: Timeouts,
    tls: UpstreamTls | None,
) -> aiohttp.ClientResponse:
    import aiohttp

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


# -- reqwest engine ----------------------------------------------------------------------------

_clients: dict[tuple[UpstreamTls | None, float, float], Any] = {}
_pending_exits: set[asyncio.Task[None]] = set()


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UpstreamUnreachable(f"upstream TLS: cannot load {what} {path}: {exc}") from None


def _new_client(tls: UpstreamTls | None, connect: float, read: float) -> Any:
    builder = (
        ClientBuilder()
        .follow_redirects(False)
        .default_cookie_store(False)
        .referer(False)
        .gzip(False)
        .brotli(False)
        .zstd(False)
        .deflate(False)
        .user_agent(USER_AGENT)
        .http1_lower_case_headers()
        .connect_timeout(timedelta(seconds=connect))
        .read_timeout(timedelta(seconds=read))
        .pool_idle_timeout(timedelta(seconds=DEFAULT_KEEPALIVE_SECONDS))
        .pool_max_idle_per_host(DEFAULT_POOL_LIMIT_PER_HOST)
        .max_connections(pool_limit())
        .pool_timeout(timedelta(seconds=connect))  # a wait for a free slot, as aiohttp's connect
    )
    if tls is not None:
        if tls.ca_file is not None:
            pem = _read_file(tls.ca_file, "ca_file")
            try:
                builder = builder.add_root_certificate_pem(pem)
            except (ValueError, rq_errors.PyreqwestError) as exc:
                raise UpstreamUnreachable(
                    f"upstream TLS: cannot load ca_file {tls.ca_file}: {exc}"
                ) from None
        if tls.cert_file is not None:
            identity = _read_file(tls.cert_file, "cert_file/key_file")
            if tls.key_file is not None:
                identity += b"\n" + _read_file(tls.key_file, "cert_file/key_file")
            try:
                builder = builder.identity_pem(identity)
            except (ValueError, rq_errors.PyreqwestError) as exc:
                raise UpstreamUnreachable(
                    f"upstream TLS: cannot load cert_file/key_file {tls.cert_file}: {exc}"
                ) from None
        if tls.insecure_skip_verify:
            builder = builder.danger_accept_invalid_certs(True)
    try:
        return builder.build()
    except (ValueError, rq_errors.PyreqwestError) as exc:
        raise UpstreamUnreachable(f"upstream TLS setting cannot be used: {exc}") from None


def get_client(tls: UpstreamTls | None, timeouts: Timeouts) -> Any:
    """The worker's reqwest client for `tls` and the connect / read timeouts of `timeouts`
    (the read timer is the larger of first-byte and idle; the smaller gets an asyncio timer),
    made on first use. The TLS files are read then."""
    tls = effective_tls(tls)
    key = (tls, timeouts.connect, max(timeouts.first_byte, timeouts.idle))
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = _new_client(tls, key[1], key[2])
    return found


class ReqwestResponse:
    """A reqwest response behind the `UpstreamResponse` interface."""

    __slots__ = ("_raw", "_request", "_response", "content_length", "headers", "status")

    def __init__(self, request: StreamRequest, response: RqResponse) -> None:
        self._request: StreamRequest | None = request
        self._response = response
        self._raw: list[tuple[bytes, bytes]] | None = None
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers
        length = response.headers.get("content-length")
        self.content_length: int | None = int(length) if length and length.isdigit() else None

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        raw = self._raw
        if raw is None:
            try:
                raw = self._raw = [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()
                ]
            except (ValueError, UnicodeEncodeError) as exc:  # not text: reqwest cannot say
                self.release()
                raise UpstreamError(
                    "upstream answered with a header that is not valid text"
                ) from exc
        return raw

    async def aclose(self) -> None:
        """Release the response: a body read to its end gives the connection back to the
        pool, an unfinished one closes it."""
        request = self._request
        if request is not None:
            self._request = None
            await request.__aexit__(None, None, None)

    def release(self) -> None:
        request = self._request
        if request is not None:
            self._request = None
            _exit_later(request)

    close = release


def _exit_later(request: StreamRequest) -> None:
    """Release a response from synchronous code (a task ends it, kept until it is done)."""
    task = asyncio.ensure_future(request.__aexit__(None, None, None))
    _pending_exits.add(task)
    task.add_done_callback(_pending_exits.discard)


def _causes(exc: Any) -> list[str]:
    details = getattr(exc, "details", None) or {}
    return [c.get("message", "") for c in details.get("causes") or [] if isinstance(c, dict)]


def _connect_failure(url: str, exc: Any) -> GatewayError:
    causes = _causes(exc)
    text = " ".join(causes).lower()
    host = url_host(url)
    if "certificate" in text or "unknownissuer" in text:
        reason = next((c for c in causes if "certificate" in c.lower()), "verify failed")
        return UpstreamUnreachable(
            f"upstream TLS certificate not trusted ({host}): certificate verify failed: {reason}"
        )
    if "tls" in text or "handshake" in text or "alert" in text or "corrupt message" in text:
        return UpstreamUnreachable(f"upstream TLS handshake failed ({host})")
    if "tcp connect error" in text or "dns error" in text or "(os error" in text:
        return UpstreamUnreachable(f"upstream unreachable ({host}): {_os_reason(causes)}")
    return UpstreamUnreachable(f"upstream connection failed ({host}): connection error")


def _os_reason(causes: list[str]) -> str:
    """The last cause, the OS's own words (`Connection refused`), without its error number."""
    last = causes[-1] if causes else "cannot connect"
    return last.split(" (os error", 1)[0] or "cannot connect"


async def _send_reqwest(
    method: str,
    url: str,
    headers: Mapping[str, str] | list[tuple[str, str]],
    body: bytes,
    timeouts: Timeouts,
    tls: UpstreamTls | None,
    stream: bool,
) -> ReqwestResponse:
    builder = get_client(tls, timeouts).request(method, url).headers(outbound_headers(headers))
    if body:
        builder = builder.body_bytes(body)
    if stream:  # else the first 64 KiB of the body are read before the call returns
        builder = builder.streamed_read_buffer_limit(0)
    try:
        request = builder.build_streamed()
        if timeouts.first_byte < timeouts.idle:
            async with asyncio.timeout(timeouts.connect + timeouts.first_byte):
                response = await request.__aenter__()
        else:
            response = await request.__aenter__()
    except rq_errors.PoolTimeoutError as exc:
        raise UpstreamTimeout(
            f"upstream connect timed out ({url_host(url)}): every pooled connection is busy"
        ) from exc
    except rq_errors.ConnectTimeoutError as exc:
        if any("(Connect)" in c for c in _causes(exc)):
            raise UpstreamTimeout(f"upstream connect timed out ({url_host(url)})") from exc
        raise UpstreamTimeout(f"upstream did not answer in time ({url_host(url)})") from exc
    except (TimeoutError, rq_errors.RequestTimeoutError) as exc:
        raise UpstreamTimeout(f"upstream did not answer in time ({url_host(url)})") from exc
    except rq_errors.ConnectError as exc:
        raise _connect_failure(url, exc) from exc
    except rq_errors.BuilderError as exc:
        raise UpstreamUnreachable(
            f"upstream request cannot be sent ({url_host(url)}): {exc.message}"
        ) from exc
    except rq_errors.PyreqwestError as exc:
        raise UpstreamUnreachable(
            f"upstream connection failed ({url_host(url)}): {_rq_reason(exc)}"
        ) from exc
    if _cancel_lost():
        _exit_later(request)
        raise asyncio.CancelledError
    try:
        return ReqwestResponse(request, response)
    except ValueError as exc:  # a Content-Length that is not text
        await request.__aexit__(None, None, None)
        raise UpstreamError("upstream answered with a header that is not valid text") from exc


def _rq_reason(exc: Any) -> str:
    text = " ".join(_causes(exc)).lower()
    if "connection closed" in text or "incomplete message" in text or "closed before" in text:
        return "the upstream closed the connection"
    if "reset" in text or "broken pipe" in text:
        return "connection reset"
    if "body" in text:
        return "the response body was cut short"
    return "connection error"


async def _reqwest_chunks(resp: ReqwestResponse, timeouts: Timeouts) -> AsyncIterator[bytes]:
    reader = resp._response.body_reader
    timer = timeouts.idle < timeouts.first_byte  # else reqwest's read timer is the idle limit
    try:
        while True:
            try:
                if timer:
                    async with asyncio.timeout(timeouts.idle):
                        chunk = await reader.read_chunk()
                else:
                    chunk = await reader.read_chunk()
            except (TimeoutError, rq_errors.RequestTimeoutError) as exc:
                raise UpstreamTimeout("upstream stream went idle") from exc
            except rq_errors.PyreqwestError as exc:
                raise UpstreamError(
                    f"upstream stream ended unexpectedly ({_rq_reason(exc)})"
                ) from exc
            if _cancel_lost():
                raise asyncio.CancelledError
            if chunk is None:
                return
            yield chunk.to_bytes()
    finally:
        await resp.aclose()


async def _reqwest_read(resp: ReqwestResponse, timeouts: Timeouts, limit: int | None) -> bytes:
    reader = resp._response.body_reader
    try:
        if timeouts.idle < timeouts.first_byte:
            async with asyncio.timeout(timeouts.idle):
                data = await (reader.bytes() if limit is None else reader.read(limit + 1))
        else:
            data = await (reader.bytes() if limit is None else reader.read(limit + 1))
    except (TimeoutError, rq_errors.RequestTimeoutError) as exc:
        raise UpstreamTimeout("upstream stopped sending the response body") from exc
    except rq_errors.PyreqwestError as exc:
        raise UpstreamError(
            f"upstream connection closed before the answer was complete ({_rq_reason(exc)})"
        ) from exc
    finally:
        await resp.aclose()
    if _cancel_lost():
        raise asyncio.CancelledError
    return b"" if data is None else data.to_bytes()


# -- the interface -----------------------------------------------------------------------------


async def send(
    method: str,
    url: str,
    headers: Mapping[str, str] | list[tuple[str, str]],
    body: bytes,
    timeouts: Timeouts,
    tls: UpstreamTls | None = None,
    *,
    stream: bool = True,
) -> UpstreamResponse:
    """Send a request and return once the response headers arrived (redirects are answers,
    never followed). `tls` is the upstream's TLS setting (None: system CAs, no client cert).
    `stream=False` says the body will be read whole: the reqwest engine then reads up to
    64 KiB of it before returning, in the same trip; with `stream=True` (the default) every
    chunk reaches the caller as soon as it arrives.

    The caller must release the response (`read_body`/`iter_body`/`discard` do).
    """
    if engine_for(tls) == "reqwest":
        return await _send_reqwest(method, url, headers, body, timeouts, tls, stream)
    return await _send_aiohttp(method, url, headers, body, timeouts, tls)


async def read_body(resp: UpstreamResponse, timeouts: Timeouts, limit: int | None = None) -> bytes:
    """Read a whole (non-streamed) response body and release the response. With `limit`, at
    most `limit + 1` bytes are read (the caller tells a too-large body by its length)."""
    if isinstance(resp, ReqwestResponse):
        return await _reqwest_read(resp, timeouts, limit)
    return await _aiohttp_read(resp, timeouts, limit)  # type: ignore[arg-type]


async def _aiohttp_read(
    resp: aiohttp.ClientResponse, timeouts: Timeouts, limit: int | None
) -> bytes:
    import aiohttp

    if limit is not None and (resp.content_length is None or resp.content_length > limit):
        return await _aiohttp_read_capped(resp, timeouts, limit)
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


async def _aiohttp_read_capped(
    resp: aiohttp.ClientResponse, timeouts: Timeouts, limit: int
) -> bytes:
    """An unsized body read chunk by chunk, stopping (and closing the connection) once it
    passed `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    chunks = _aiohttp_chunks(resp, timeouts)
    try:
        async for chunk in chunks:
            size += len(chunk)
            parts.append(chunk)
            if size > limit:
                resp.close()
                break
    finally:
        await chunks.aclose()
    return b"".join(parts)


def iter_body(resp: UpstreamResponse, timeouts: Timeouts) -> AsyncIterator[bytes]:
    """Body chunks as they arrive; an idle gap longer than `timeouts.idle` ends with
    `UpstreamTimeout`, a broken connection with `UpstreamError`. Releases the response when
    it ends or is closed (`aclose`)."""
    if isinstance(resp, ReqwestResponse):
        return _reqwest_chunks(resp, timeouts)
    return _aiohttp_chunks(resp, timeouts)  # type: ignore[arg-type]


async def discard(resp: UpstreamResponse) -> None:
    """Close the response's connection without reading the rest of its body."""
    if isinstance(resp, ReqwestResponse):
        await resp.aclose()
    else:
        resp.close()


async def _aiohttp_chunks(
    resp: aiohttp.ClientResponse, timeouts: Timeouts
) -> AsyncGenerator[bytes, None]:
    import aiohttp

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


async def close_session() -> None:
    """Close every pooled client and session (at worker shutdown)."""
    global _session
    sessions = [_session, *_tls_sessions.values()]
    _session = None
    _tls_sessions.clear()
    await close_clients()
    for session in sessions:
        if session is not None and not session.closed:
            await session.close()


async def close_clients() -> None:
    """Close the reqwest engine's clients (their pools go with them)."""
    clients = list(_clients.values())
    _clients.clear()
    loop = asyncio.get_running_loop()
    pending = [t for t in _pending_exits if not t.done() and t.get_loop() is loop]
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for rq in clients:
        await rq.close()
    if clients:
        # The Tokio thread drops the closed pools' connections shortly after; let it finish
        # while the interpreter is still up (a drop during interpreter shutdown aborts it).
        await asyncio.sleep(CLOSE_GRACE_SECONDS)


def _cert_reason(exc: aiohttp.ClientConnectorCertificateError) -> str:
    error = exc.certificate_error
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    return "certificate verify failed"


def _reason(exc: aiohttp.ClientError) -> str:
    """A few words for a client about a broken upstream connection. aiohttp's own messages
    (payload states, transfer-encoding internals, socket details) stay in the logs: the
    exception is chained to the gateway error."""
    import aiohttp

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
    "ENGINE",
    "ENGINE_ENV",
    "GatewayError",
    "UpstreamResponse",
    "close_clients",
    "close_session",
    "discard",
    "engine_for",
    "get_client",
    "get_session",
    "iter_body",
    "read_body",
    "send",
    "url_host",
]
