"""What the two HTTP-based upstream kinds (Streamable HTTP and legacy SSE) share: their config
headers, their own credentials and one aiohttp session per upstream."""

from __future__ import annotations

import aiohttp

from crossway.config.mcp import McpTimeouts, SseServerConfig, StreamableHttpServerConfig
from crossway.mcp.auth import UpstreamCredentials
from crossway.mcp.upstream.base import Upstream


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
        self._http: aiohttp.ClientSession | None = None

    async def token_headers(self) -> dict[str, str]:
        """This server's OAuth token (`credentials:`) for the next request, renewed or
        exchanged as needed; `{}` without credentials."""
        if not self.credentials.dynamic:
            return {}
        return await self.credentials.token_headers()

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeouts.connect),
                auto_decompress=True,
                read_bufsize=2**18,
            )
        return self._http

    async def close(self) -> None:
        await self.credentials.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
