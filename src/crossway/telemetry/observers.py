"""Request observers: what sees every request from its start to its end — the tracing server
span (`crossway.telemetry.tracing`) and the access log (`crossway.telemetry.access_log`).

The app calls `begin(scope)` before routing and `end(...)` once the response is over (after the
policy chain's finish phase), in the request's own task, so a tracing observer's span is the
current context for everything in between. Observers must never raise and never block; a
runtime without any has an empty tuple and the app pays one truth test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from crossway.types import Scope

if TYPE_CHECKING:
    from crossway.config.models import Config
    from crossway.server.context import RequestContext


class RequestObserver(Protocol):
    """Sees each request begin and end."""

    def begin(self, scope: Scope) -> Any:
        """Called first; returns this observer's state for the request."""

    def end(
        self,
        state: Any,
        scope: Scope,
        ctx: RequestContext | None,
        route: str,
        status: int,
        seconds: float,
    ) -> None:
        """Called last (`ctx` is None when no route matched); `status` 499: client left."""

    async def close(self) -> None:
        """Flush and release (when the runtime retires or the gateway stops)."""


def build_observers(config: Config) -> tuple[RequestObserver, ...]:
    """The observers `config` asks for (none: an empty tuple)."""
    from crossway.telemetry import tracing

    observers: list[RequestObserver] = []
    tracer = tracing.build_observer(config.telemetry.tracing)
    if tracer is not None:
        observers.append(tracer)
    if config.telemetry.access_log is not None:
        from crossway.telemetry.access_log import AccessLogObserver

        observers.append(AccessLogObserver(config.telemetry.access_log, config.telemetry.redaction))
    if config.telemetry.request_log is not None and config.telemetry.request_log.enabled:
        from crossway.telemetry.request_log import RequestLogObserver

        observers.append(
            RequestLogObserver(config.telemetry.request_log, config.telemetry.redaction)
        )
    return tuple(observers)
