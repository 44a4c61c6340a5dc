"""The plain HTTP backend: a reverse proxy that forwards requests and streams answers back."""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from crossway.config.models import HttpBackendConfig
from crossway.proxy import client
from crossway.server.asgi import HOP_BY_HOP, read_body, send_response, stream_response
from crossway.server.backend import Backend
from crossway.server.context import CONSUMED_HEADERS, RequestContext
from crossway.types import Receive, Scope, Send

_SKIP_REQUEST = HOP_BY_HOP | {b"host", b"content-length"}
_SKIP_RESPONSE = HOP_BY_HOP | {b"content-length"}
WHOLE_BODY_MAX: Final = 1024 * 1024
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~%"


class HttpBackend(Backend):
    """Forwards each request to `url` + the request path, headers and body unchanged."""

    def __init__(self, name: str, config: HttpBackendConfig, max_body_bytes: int) -> None:
        self.name = name
        self.config = config
        self.max_body_bytes = max_body_bytes
        self._extra = [(k.lower(), v.get_secret_value()) for k, v in config.headers.items()]
        self._extra_names = {k.encode() for k, _ in self._extra}

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        body = await read_body(scope, receive, self.max_body_bytes)
        skip = _SKIP_REQUEST | self._extra_names | ctx.attrs.get(CONSUMED_HEADERS, frozenset())
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in skip
        ]
        headers.extend(self._extra)
        query = scope.get("query_string", b"")
        raw_path = scope.get("raw_path")
        if raw_path is not None and ctx.path == scope["path"]:
            path = raw_path.decode("latin-1")  # forward the client's encoding untouched
        else:
            path = quote(ctx.path, safe=_PATH_SAFE)
        url = self.config.url + path + ("?" + query.decode("latin-1") if query else "")
        timeouts = self.config.timeouts
        resp = await client.send(scope["method"], url, headers, body, timeouts, self.config.tls)
        out = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in _SKIP_RESPONSE]
        length = resp.content_length
        if length is not None and length <= WHOLE_BODY_MAX:
            # A small sized body: read it whole and answer in one go (no watcher task).
            data = await client.read_body(resp, timeouts)
            await send_response(send, resp.status, data, out)
            return
        if length is not None:
            out.append((b"content-length", str(length).encode()))
        await stream_response(receive, send, resp.status, out, client.iter_body(resp, timeouts))
