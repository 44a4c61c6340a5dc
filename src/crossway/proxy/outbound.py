"""The one door for outbound HTTP: every request Crossway makes to anything goes through here.

`create_session` is the only place an `aiohttp.ClientSession` is made (a test greps for it),
so the rules hold for every upstream, JWKS, token and spec fetch alike:

- no cookie jar, ever: one caller's cookies never ride along with another caller's call;
- redirects are not followed unless a use asks for it (`follow_redirects`); a followed
  redirect to another origin carries none of the caller's credentials (only the harmless
  headers in `KEPT_ACROSS_ORIGINS`) and never re-sends a body;
- TLS per upstream (`UpstreamTls`): the system CA by default, or a CA file, a client
  certificate, another SNI / verified name, or (tests only) no verification;
- `outbound_headers` is the one place that adds Crossway's own headers to a request.

`OutboundClient` is the client the protocol packages hold (one per upstream, JWKS, token
endpoint); `crossway.proxy.client` keeps the pooled hot-path sessions built by the same
`create_session`.
"""

from __future__ import annotations

import ssl
from collections.abc import Generator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from crossway.config.common import UpstreamTls
from crossway.errors import UpstreamUnreachable
from crossway.telemetry import tracing

if TYPE_CHECKING:  # imported on first use: an LLM-only config never loads aiohttp (12 MB)
    import aiohttp
    from yarl import URL

DEFAULT_MAX_REDIRECTS: Final = 5
DEFAULT_POOL_LIMIT: Final = 100
DEFAULT_TOTAL_SECONDS: Final = 300.0
DEFAULT_CONNECT_SECONDS: Final = 30.0
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
KEPT_ACROSS_ORIGINS: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "content-type",
        "traceparent",
        "tracestate",
        "user-agent",
    }
)
"""Header names a redirect to another origin keeps; every other one may be a credential."""

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
_contexts: dict[UpstreamTls, ssl.SSLContext] = {}


def outbound_headers(headers: Headers) -> Headers:
    """The one place Crossway adds its own headers to every outbound request: with tracing
    on, the current trace context (`traceparent`, `tracestate`, `baggage`, replacing any the
    caller forwarded); with tracing off, `headers` as given (one global test)."""
    if tracing._tracer is None:
        return headers
    with_context: Headers = tracing.with_trace_context(headers)
    return with_context


def effective_tls(tls: UpstreamTls | None) -> UpstreamTls | None:
    """`tls`, or None when it asks for nothing but the defaults (so it shares their pool)."""
    if tls is None or tls == _DEFAULT_TLS:
        return None
    return tls


def ssl_context(tls: UpstreamTls) -> ssl.SSLContext:
    """The SSL context for `tls`, built once per distinct setting (the files are read then).

    Raises `UpstreamUnreachable` naming the file when a certificate or key cannot be loaded.
    """
    context = _contexts.get(tls)
    if context is not None:
        return context
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if tls.ca_file is not None:
            context.load_verify_locations(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamUnreachable(
            f"upstream TLS: cannot load ca_file {tls.ca_file}: {exc}"
        ) from None
    try:
        if tls.cert_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamUnreachable(
            f"upstream TLS: cannot load cert_file/key_file {tls.cert_file}: {exc}"
        ) from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    _contexts[tls] = context
    return context


def create_session(
    *,
    tls: UpstreamTls | None = None,
    timeout: aiohttp.ClientTimeout | None = None,
    limit: int = DEFAULT_POOL_LIMIT,
    limit_per_host: int = 0,
    keepalive_timeout: float | None = None,
    auto_decompress: bool = True,
    read_bufsize: int = 2**16,
    skip_auto_headers: Iterable[str] | None = None,
) -> aiohttp.ClientSession:
    """A new pooled session: no cookie jar, the TLS of `tls`. The only `ClientSession` maker.

    Call it inside the running event loop. `timeout` defaults to 300 s in all, 30 s to
    connect. Redirects are per request in aiohttp (`allow_redirects`), so use `OutboundClient`
    (off unless asked) or pass `allow_redirects=False` yourself, as `crossway.proxy.client` does.
    """
    import aiohttp

    tls = effective_tls(tls)
    connector_options: dict[str, Any] = {}
    if keepalive_timeout is not None:
        connector_options["keepalive_timeout"] = keepalive_timeout
    if tls is not None:
        connector_options["ssl"] = ssl_context(tls)
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        ttl_dns_cache=300,
        enable_cleanup_closed=False,
        **connector_options,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=timeout
        or aiohttp.ClientTimeout(total=DEFAULT_TOTAL_SECONDS, sock_connect=DEFAULT_CONNECT_SECONDS),
        auto_decompress=auto_decompress,
        read_bufsize=read_bufsize,
        skip_auto_headers=skip_auto_headers,
    )


def request_options(tls: UpstreamTls | None) -> dict[str, Any]:
    """Per-request aiohttp options a TLS setting needs (the SNI / verified name override)."""
    if tls is not None and tls.server_name is not None:
        return {"server_hostname": tls.server_name}
    return {}


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def same_origin(a: str | URL, b: str | URL) -> bool:
    """Whether two absolute URLs share scheme, host and port (default ports made explicit)."""
    from yarl import URL

    return _origin(URL(a) if isinstance(a, str) else a) == _origin(
        URL(b) if isinstance(b, str) else b
    )


class OutboundRequest:
    """One request under way: `await` it for the response (release it yourself), or use it as
    `async with` to have the response released at the end, like aiohttp's own."""

    __slots__ = ("_coro", "_response")

    def __init__(self, coro: Any) -> None:
        self._coro = coro
        self._response: aiohttp.ClientResponse | None = None

    def __await__(self) -> Generator[Any, None, aiohttp.ClientResponse]:
        result: aiohttp.ClientResponse = yield from self._coro.__await__()
        return result

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._response = await self._coro
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._response is not None:
            self._response.release()
            await self._response.wait_for_close()


class OutboundClient:
    """An HTTP client held by one user (an upstream, a JWKS or token endpoint).

    Its session is made on first use (inside the running loop), through `create_session`.
    `follow_redirects` is the default for its requests; each request may say otherwise.
    """

    def __init__(
        self,
        *,
        tls: UpstreamTls | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        follow_redirects: bool = False,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        limit: int = DEFAULT_POOL_LIMIT,
        auto_decompress: bool = True,
        read_bufsize: int = 2**16,
    ) -> None:
        self.tls = effective_tls(tls)
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self._timeout = timeout
        self._limit = limit
        self._auto_decompress = auto_decompress
        self._read_bufsize = read_bufsize
        self._options = request_options(self.tls)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = create_session(
                tls=self.tls,
                timeout=self._timeout,
                limit=self._limit,
                auto_decompress=self._auto_decompress,
                read_bufsize=self._read_bufsize,
            )
        return self._session

    @property
    def closed(self) -> bool:
        return self._session is None or self._session.closed

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def request(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool | None = None,
        **options: Any,
    ) -> OutboundRequest:
        """Send `method url`; `options` are aiohttp's (`data`, `json`, `params`, `auth`,
        `timeout`...). `follow_redirects` overrides the client's default for this request."""
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        return OutboundRequest(self._send(method, url, dict(headers or {}), follow, options))

    def get(self, url: str | URL, **options: Any) -> OutboundRequest:
        return self.request("GET", url, **options)

    def post(self, url: str | URL, **options: Any) -> OutboundRequest:
        return self.request("POST", url, **options)

    def delete(self, url: str | URL, **options: Any) -> OutboundRequest:
        return self.request("DELETE", url, **options)

    async def _send(
        self,
        method: str,
        url: str | URL,
        headers: dict[str, str],
        follow: bool,
        options: dict[str, Any],
    ) -> aiohttp.ClientResponse:
        from yarl import URL

        session = self.session
        sent = outbound_headers(headers)
        options = {**self._options, **options, "allow_redirects": False}
        response = await session.request(method, url, headers=sent, **options)
        if not follow:
            return response
        start = response.url
        for _ in range(self.max_redirects):
            location = response.headers.get("Location")
            if response.status not in REDIRECT_STATUSES or not location:
                return response
            target = response.url.join(URL(location))
            if target.scheme not in ("http", "https"):
                return response
            options.pop("params", None)  # the Location carries its own query
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method = "HEAD" if method == "HEAD" else "GET"
                options.pop("data", None)
                options.pop("json", None)
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            if not same_origin(start, target):
                if options.get("data") is not None or options.get("json") is not None:
                    return response  # a body may hold credentials: never to another origin
                headers = {k: v for k, v in headers.items() if k.lower() in KEPT_ACROSS_ORIGINS}
                options.pop("auth", None)
                options.pop("server_hostname", None)
            response.release()
            response = await session.request(
                method, target, headers=outbound_headers(headers), **options
            )
        return response


_DEFAULT_TLS: Final = UpstreamTls()

__all__ = [
    "KEPT_ACROSS_ORIGINS",
    "OutboundClient",
    "OutboundRequest",
    "create_session",
    "effective_tls",
    "outbound_headers",
    "request_options",
    "same_origin",
    "ssl_context",
]
