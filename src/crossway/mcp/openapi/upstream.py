"""`OpenApiUpstream`: loads the document at start and serves `tools/list` and `tools/call`."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Final
from urllib.parse import urljoin

import aiohttp
import orjson
from yarl import URL

from crossway.config.mcp import McpTimeouts, OpenApiServerConfig
from crossway.errors import GatewayError, UpstreamUnreachable
from crossway.mcp.auth import UpstreamCredentials
from crossway.mcp.openapi.request import (
    ArgumentError,
    PathSegmentError,
    build_request,
    render_response,
)
from crossway.mcp.openapi.schema import OpenApiError, Operation, build_operations
from crossway.mcp.upstream.base import (
    ClientHello,
    JsonObject,
    RequestOptions,
    Upstream,
    UpstreamEvents,
    UpstreamRpcError,
    UpstreamSession,
)
from crossway.proxy.outbound import OutboundClient

log = logging.getLogger("crossway.mcp.openapi")

MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
PROTOCOL_VERSION: Final = "2025-06-18"


def _parse_document(raw: bytes) -> JsonObject:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        from ruamel.yaml import YAML

        try:
            document = YAML(typ="safe", pure=True).load(io.BytesIO(raw))
        except Exception as exc:
            raise OpenApiError(f"document is neither JSON nor YAML: {exc}") from None
    if not isinstance(document, dict):
        raise OpenApiError("document is not an object")
    return document


def _server_url(document: JsonObject, spec: str) -> str | None:
    servers = document.get("servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return None
    server = servers[0]
    url = str(server.get("url", ""))
    for var, definition in (server.get("variables") or {}).items():
        if isinstance(definition, dict) and "default" in definition:
            url = url.replace("{" + var + "}", str(definition["default"]))
    if url.startswith(("http://", "https://")):
        return url
    if spec.startswith(("http://", "https://")):
        return urljoin(spec, url)
    return None


class OpenApiUpstream(Upstream):
    """A REST API described by an OpenAPI 3 document, served as an MCP server with tools only."""

    shared = True

    def __init__(self, name: str, cfg: OpenApiServerConfig, timeouts: McpTimeouts) -> None:
        self.name = name
        self.cfg = cfg
        self.timeouts = timeouts
        self.credentials = UpstreamCredentials(cfg.credentials, cfg.headers)
        self.operations: dict[str, Operation] = {}
        self.base_url = cfg.base_url or ""
        self.info: JsonObject = {}
        self._http: OutboundClient | None = None
        self._loading: asyncio.Lock = asyncio.Lock()
        self._loaded = False

    async def start(self) -> None:
        self._http = OutboundClient(
            tls=self.cfg.tls, timeout=aiohttp.ClientTimeout(total=self.timeouts.call)
        )
        try:
            await self._load()
        except (OpenApiError, UpstreamUnreachable) as exc:
            log.error("openapi server %s: %s (will retry on the next session)", self.name, exc)

    async def close(self) -> None:
        await self.credentials.close()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _read_spec(self) -> bytes:
        spec = self.cfg.spec
        if spec.startswith(("http://", "https://")):
            assert self._http is not None
            try:
                async with self._http.get(
                    spec, timeout=aiohttp.ClientTimeout(total=self.timeouts.connect)
                ) as response:
                    if response.status != 200:
                        raise UpstreamUnreachable(f"{spec} answered HTTP {response.status}")
                    return await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamUnreachable(f"cannot fetch {spec}: {exc}") from None
        try:
            return await asyncio.to_thread(Path(spec).read_bytes)
        except OSError as exc:
            raise OpenApiError(f"cannot read {spec}: {exc.strerror}") from None

    async def _load(self) -> None:
        async with self._loading:
            if self._loaded:
                return
            document = _parse_document(await self._read_spec())
            operations = build_operations(document)
            base_url = self.cfg.base_url or _server_url(document, self.cfg.spec)
            if not base_url:
                raise OpenApiError("no base URL: set base_url or an absolute servers[0].url")
            include, exclude = set(self.cfg.include), set(self.cfg.exclude)
            self.operations = {
                op.tool_name: op
                for op in operations
                if (not include or op.tool_name in include) and op.tool_name not in exclude
            }
            self.base_url = base_url
            info = document.get("info")
            self.info = info if isinstance(info, dict) else {}
            self._loaded = True
            log.info(
                "openapi server %s: %d tools from %s",
                self.name,
                len(self.operations),
                self.cfg.spec,
            )

    async def open_session(
        self, hello: ClientHello, events: UpstreamEvents, *, resume: str | None = None
    ) -> UpstreamSession:
        if not self._loaded:
            try:
                await self._load()
            except OpenApiError as exc:
                raise UpstreamUnreachable(f"openapi server {self.name}: {exc}") from None
        return _OpenApiSession(self)

    def init_result(self) -> JsonObject:
        """What this server answers to `initialize`."""
        result: JsonObject = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {
                "name": str(self.info.get("title") or self.name),
                "version": str(self.info.get("version") or "0"),
            },
        }
        if isinstance(self.info.get("description"), str):
            result["instructions"] = self.info["description"]
        return result

    async def call(self, name: str, arguments: JsonObject, call_timeout: float) -> JsonObject:
        """Run one operation; API failures are tool errors (`isError`), not JSON-RPC errors."""
        operation = self.operations.get(name)
        if operation is None:
            raise UpstreamRpcError(INVALID_PARAMS, f"unknown tool: {name}")
        try:
            prepared = build_request(operation, arguments, self.base_url)
        except PathSegmentError as exc:
            raise UpstreamRpcError(INVALID_PARAMS, str(exc)) from None
        except ArgumentError as exc:
            return {"content": [{"type": "text", "text": str(exc)}], "isError": True}
        try:
            headers = {**await self.credentials.headers(), **prepared.headers}
        except GatewayError as exc:
            return {"content": [{"type": "text", "text": exc.message}], "isError": True}
        headers.setdefault("Accept", "application/json, */*;q=0.5")
        assert self._http is not None
        try:
            async with self._http.request(
                prepared.method,
                URL(prepared.url, encoded=True),
                params=prepared.params,
                headers=headers,
                data=prepared.body,
                timeout=aiohttp.ClientTimeout(total=call_timeout),
            ) as response:
                body = await response.content.read(MAX_RESPONSE_BYTES + 1)
                truncated = len(body) > MAX_RESPONSE_BYTES
                result = render_response(
                    response.status,
                    response.reason or "",
                    response.headers.get("content-type", ""),
                    body[:MAX_RESPONSE_BYTES],
                )
                if truncated:
                    result["content"].append(
                        {"type": "text", "text": f"(response cut at {MAX_RESPONSE_BYTES} bytes)"}
                    )
                return result
        except TimeoutError:
            message = f"{prepared.method} {prepared.url} timed out after {call_timeout:g}s"
        except aiohttp.ClientError as exc:
            message = f"{prepared.method} {prepared.url} failed: {exc}"
        return {"content": [{"type": "text", "text": message}], "isError": True}


class _OpenApiSession(UpstreamSession):
    def __init__(self, upstream: OpenApiUpstream) -> None:
        self.upstream = upstream
        self.server = upstream.name
        self.init_result = upstream.init_result()

    async def request(
        self, method: str, params: JsonObject | None, options: RequestOptions
    ) -> JsonObject:
        params = params or {}
        if method == "tools/list":
            return {"tools": [op.tool() for op in self.upstream.operations.values()]}
        if method == "tools/call":
            name = params.get("name")
            arguments = params.get("arguments") or {}
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise UpstreamRpcError(
                    INVALID_PARAMS, "tools/call needs a name and an arguments object"
                )
            return await self.upstream.call(name, arguments, options.timeout)
        if method == "ping":
            return {}
        if method in ("prompts/list", "resources/list", "resources/templates/list"):
            return {method.split("/")[0] if "templates" not in method else "resourceTemplates": []}
        raise UpstreamRpcError(METHOD_NOT_FOUND, f"method not found: {method}")

    async def notify(self, method: str, params: JsonObject | None) -> None:
        return None

    async def close(self) -> None:
        return None


__all__ = ["OpenApiUpstream"]
