"""The interface every backend kind (http, llm, mcp, a2a) implements."""

from __future__ import annotations

import abc

from crossway.server.context import RequestContext
from crossway.types import Receive, Scope, Send


class Backend(abc.ABC):
    """A destination for matched requests.

    A backend is built once per config snapshot (and carried over to the next snapshot when its
    config is unchanged), started before it serves, and closed after the last request that
    started on its snapshot has finished.
    """

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open pools, spawn children, warm caches."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything `start` acquired."""

    @abc.abstractmethod
    async def __call__(self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext) -> None:
        """Serve one request. Raise `crossway.errors.GatewayError` before the response started
        for the app to render it; after the response started, end it in the protocol's own way."""
