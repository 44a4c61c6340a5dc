"""`A2aBackend`: the `type: a2a` backend (being built: see docs/a2a.md for what answers today)."""

from __future__ import annotations

from crossway.config.a2a import A2aBackendConfig
from crossway.config.models import Config
from crossway.errors import GatewayError
from crossway.server.backend import Backend
from crossway.server.context import RequestContext
from crossway.types import Receive, Scope, Send


class A2aBackend(Backend):
    """Serves A2A clients from the configured agents."""

    parses = True

    def __init__(self, name: str, config: A2aBackendConfig, root: Config) -> None:
        self.name = name
        self.config = config
        self.root = root

    @classmethod
    def from_config(cls, name: str, config: A2aBackendConfig, root: Config) -> A2aBackend:
        return cls(name, config, root)

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        raise GatewayError("the A2A backend is not available yet", status=501, code="a2a_todo")
