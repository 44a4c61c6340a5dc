"""The backend registry: one factory per `type` of backend config."""

from __future__ import annotations

from crossway.config.models import BackendConfig, Config, HttpBackendConfig
from crossway.server.backend import Backend


def build_backend(name: str, config: BackendConfig, root: Config) -> Backend:
    """Build the runtime backend for one configured backend."""
    if isinstance(config, HttpBackendConfig):
        from crossway.proxy.http import HttpBackend

        return HttpBackend(name, config, root.listen.max_body_bytes)
    if config.type == "llm":
        from crossway.llm.backend import LlmBackend

        return LlmBackend(name, config, root.listen.max_body_bytes)
    if config.type == "mcp":
        from crossway.mcp.backend import McpBackend

        return McpBackend.from_config(name, config)
    if config.type == "a2a":
        from crossway.a2a.backend import A2aBackend

        return A2aBackend.from_config(name, config, root)
    raise ValueError(f"unsupported backend type {config.type!r}")  # pragma: no cover
