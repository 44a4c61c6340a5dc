"""Access logs (issue 10): one JSON line per request. (Skeleton: filled in by the logs work.)"""

from __future__ import annotations

from typing import Any

from crossway.config.telemetry_logs import AccessLogConfig
from crossway.server.context import RequestContext
from crossway.types import Scope


class AccessLogObserver:
    """Writes one JSON line per request."""

    def __init__(self, config: AccessLogConfig) -> None:
        self.config = config

    def begin(self, scope: Scope) -> Any:
        return None

    def end(
        self,
        state: Any,
        scope: Scope,
        ctx: RequestContext | None,
        route: str,
        status: int,
        seconds: float,
    ) -> None:
        return None

    async def close(self) -> None:
        return None
