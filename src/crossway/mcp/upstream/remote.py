"""What the two HTTP-based upstream kinds (Streamable HTTP and legacy SSE) share: their config
headers, their own credentials and one outbound client per upstream (its `tls:`, no cookie
jar, redirects never followed: see `crossway.proxy.outbound`)."""

from __future__ import annotations

from typing import Final

import aiohttp

from crossway.config.mcp import McpTimeouts, SseServerConfig, StreamableHttpServerConfig
from crossway.mcp.auth import UpstreamCredentials
from crossway.mcp.upstream.base import Upstream
from crossway.proxy.outbound import OutboundClient

READ_BUFFER_BYTES: Final = 2**18


class RemoteUpstream(Upstream):
    """Base of the MCP upstreams reached over HTTP."""

    shared = False

    def __init__(
        self,
        name: str,
        cfg: StreamableHttpServerConfig | SseServerConfig,
        timeouts: McpTimeouts,
        max_bytes: int,
    ) -> None:
        self.name = name
        self.timeouts = timeouts
        self.max_bytes = max_bytes
        self.headers = {k: v.get_secret_value() for k, v in cfg.headers.items()}
        self.credentials = UpstreamCredentials(cfg.credentials, cfg.headers)
        self._http = OutboundClient(
            tls=cfg.tls,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect),
            limit=0,
            read_bufsize=READ_BUFFER_BYTES,
        )

    async def token_headers(self) -> dict[str, str]:
        """This server's OAuth token (`credentials:`) for the next request, renewed or
        exchanged as needed; `{}` without credentials."""
        if not self.credentials.dynamic:
            return {}
        return await self.credentials.token_headers()

    @property
    def http(self) -> OutboundClient:
        """This server's client; its session is (re)made on first use in the running loop."""
        return self._http

    async def close(self) -> None:
        await self.credentials.close()
        await self._http.close()
