"""The interface every backend kind (http, llm, mcp, a2a) implements."""

from __future__ import annotations

import abc
from typing import ClassVar

import orjson

from crossway.errors import GatewayError
from crossway.server.context import RequestContext
from crossway.types import Receive, Scope, Send


class Backend(abc.ABC):
    """A destination for matched requests.

    A backend is built once per config snapshot (and carried over to the next snapshot when its
    config is unchanged), started before it serves, and closed after the last request that
    started on its snapshot has finished.
    """

    parses: ClassVar[bool] = False
    """Whether this backend runs the policy chain's `parsed` phase itself, once it decoded
    what is being called; for others the app runs it right after the `request` phase."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open pools, spawn children, warm caches."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything `start` acquired."""

    @abc.abstractmethod
    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        """Serve one request. Raise `crossway.errors.GatewayError` before the response started
        for the app to render it; after the response started, end it in the protocol's own way."""

    def render_error(self, exc: GatewayError, scope: Scope, ctx: RequestContext) -> ErrorResponse:
        """Render a gateway error in this backend's wire format (default: the OpenAI error shape)."""
        return render_json_error(exc)


ErrorResponse = tuple[int, list[tuple[bytes, bytes]], bytes]


def render_json_error(exc: GatewayError) -> ErrorResponse:
    """The OpenAI-style error body `{"error": {"message", "type", "param", "code"}}`."""
    body = orjson.dumps(
        {
            "error": {
                "message": exc.message,
                "type": exc.type,
                "param": exc.param,
                "code": exc.code,
            }
        }
    )
    headers = [(b"content-type", b"application/json"), *error_headers(exc)]
    return exc.status_code, headers, body


def error_headers(exc: GatewayError) -> list[tuple[bytes, bytes]]:
    """An error's extra headers (`WWW-Authenticate`, `Retry-After`...) as raw ASGI headers; a
    character a header cannot carry becomes `?` (an error must always be sendable)."""
    return [
        (k.lower().encode("latin-1", "replace"), v.encode("latin-1", "replace"))
        for k, v in exc.headers.items()
    ]
