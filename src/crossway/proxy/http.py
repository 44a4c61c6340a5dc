"""The plain HTTP backend: a reverse proxy that forwards requests and streams answers back."""

from __future__ import annotations

from typing import Final

from crossway.config.models import HttpBackendConfig
from crossway.proxy import client
from crossway.server.asgi import (
    HOP_BY_HOP,
    connection_options,
    header,
    read_body,
    send_response,
    stream_response,
)
from crossway.server.backend import Backend
from crossway.server.context import CONSUMED_HEADERS, RequestContext
from crossway.server.forwarded import CLIENT_FORWARDING_HEADERS, FORWARDED, Forwarded
from crossway.server.paths import encode_path
from crossway.types import Receive, Scope, Send

# The client's X-Forwarded-* and x-request-id are replaced by the gateway's own.
_SKIP_REQUEST = (
    HOP_BY_HOP | CLIENT_FORWARDING_HEADERS | {b"host", b"content-length", b"x-request-id"}
)
_SKIP_RESPONSE = HOP_BY_HOP | {b"content-length", b"x-request-id"}
WHOLE_BODY_MAX: Final = 1024 * 1024


class HttpBackend(Backend):
    """Forwards each request to `url` + the (normalised) request path, with the headers and
    body unchanged except: hop-by-hop headers are dropped both ways (also those a `Connection`
    header names), and `X-Forwarded-For`/`-Proto`/`-Host` and `x-request-id` are the
    gateway's (see `crossway.server.forwarded`)."""

    def __init__(self, name: str, config: HttpBackendConfig, max_body_bytes: int) -> None:
        self.name = name
        self.config = config
        self.max_body_bytes = max_body_bytes
        self._extra = [(k.lower(), v.get_secret_value()) for k, v in config.headers.items()]
        self._extra_names = {k.encode() for k, _ in self._extra}

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        body = await read_body(scope, receive, ctx.max_body_bytes or self.max_body_bytes)
        request_headers = scope["headers"]
        skip = (
            _SKIP_REQUEST
            | self._extra_names
            | ctx.attrs.get(CONSUMED_HEADERS, frozenset())
            | connection_options(request_headers)
        )
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request_headers if k not in skip
        ]
        headers.extend(self._forwarding(scope, ctx))
        headers.extend(self._extra)
        query = scope.get("query_string", b"")
        raw_path = scope.get("raw_path")
        if raw_path is not None and ctx.path == scope["path"]:
            path = raw_path.decode("latin-1")  # forward the client's encoding untouched
        else:
            path = encode_path(ctx.path)  # decoded once: '%' is sent as '%25'
        url = self.config.url + path + ("?" + query.decode("latin-1") if query else "")
        timeouts = self.config.timeouts
        resp = await client.send(scope["method"], url, headers, body, timeouts, self.config.tls)
        drop = _SKIP_RESPONSE | connection_options(resp.raw_headers)
        out = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in drop]
        length = resp.content_length
        if length is not None and length <= WHOLE_BODY_MAX:
            # A small sized body: read it whole and answer in one go (no watcher task).
            data = await client.read_body(resp, timeouts)
            await send_response(send, resp.status, data, out)
            return
        if length is not None:
            out.append((b"content-length", str(length).encode()))
        await stream_response(receive, send, resp.status, out, client.iter_body(resp, timeouts))

    def _forwarding(self, scope: Scope, ctx: RequestContext) -> list[tuple[str, str]]:
        """`X-Forwarded-For`/`-Proto`/`-Host` and `x-request-id` for the upstream (a header
        the backend config sets itself wins)."""
        forwarded: Forwarded | None = ctx.attrs.get(FORWARDED)
        if forwarded is not None:
            chain, proto, host = forwarded.chain, forwarded.proto, forwarded.host
        else:
            chain, proto, host = ctx.client_ip, None, None
        if host is None:
            own = header(scope, b"host")
            host = own.decode("latin-1") if own is not None else ""
        values = [
            ("x-forwarded-for", chain),
            ("x-forwarded-proto", proto or scope.get("scheme", "http")),
            ("x-forwarded-host", host),
        ]
        values.append(("x-request-id", ctx.request_id))
        extra = self._extra_names
        return [(k, v) for k, v in values if v and k.encode() not in extra]
