"""Many MCP servers as one: lists merged, calls routed, names and URIs rewritten.

`Federation.handle` serves one client request within a `Session` and returns its `result`
(or raises an error that `crossway.mcp.jsonrpc` renders). Requests are forwarded as the dicts
they arrived as, with only the routed name or URI replaced.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from crossway.config.mcp import McpBackendConfig
from crossway.errors import (
    Forbidden,
    GatewayError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from crossway.mcp import guard as mcp_guard
from crossway.mcp import jsonrpc, pinning
from crossway.mcp.hooks import Kind, McpHooks, PinVerdict, TrustAllTools, allow_all
from crossway.mcp.jsonrpc import JsonRpcCodeError
from crossway.mcp.naming import Naming
from crossway.mcp.session import ClientChannel, Session
from crossway.mcp.upstream.base import (
    JsonObject,
    RequestOptions,
    Upstream,
    UpstreamRpcError,
    UpstreamSession,
)
from crossway.policy.guardrails import guarded
from crossway.server.context import RequestContext
from crossway.telemetry import tracing
from crossway.telemetry.metrics_mcp_a2a import observe_mcp_call, observe_pinning
from crossway.telemetry.request_log import current as current_capture

logger = logging.getLogger(__name__)

HANDSHAKE_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS: Final = ("2026-07-28",)
LATEST_HANDSHAKE: Final = HANDSHAKE_VERSIONS[-1]
SERVER_INFO_META_KEY: Final = "io.modelcontextprotocol/serverInfo"
MAX_VERIFY_PAGES: Final = 32
"""A tool called before its definition was verified is looked up in its server's whole tool
list, read up to this many pages; a longer list cannot verify it (refused in `block` mode)."""

SERVER_CAPABILITIES: Final[JsonObject] = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "completions": {},
    "logging": {},
}


@dataclass(frozen=True, slots=True)
class _ListKind:
    capability: str
    field: str
    kind: Kind
    key: str  # "name", "uri" or "uriTemplate"


LISTS: Final = {
    "tools/list": _ListKind("tools", "tools", "tool", "name"),
    "prompts/list": _ListKind("prompts", "prompts", "prompt", "name"),
    "resources/list": _ListKind("resources", "resources", "resource", "uri"),
    "resources/templates/list": _ListKind(
        "resources", "resourceTemplates", "resource_template", "uriTemplate"
    ),
}

Handler = Callable[["Federation", Session, JsonObject, "Call"], Awaitable[JsonObject]]


class _ToolItems(list[JsonObject]):
    """One page's rewritten tools, with the pins' generation they were reviewed under."""

    __slots__ = ("pins",)

    def __init__(self, pins: int) -> None:
        super().__init__()
        self.pins = pins


class _TooManyPages(Exception):
    """A tool list longer than `MAX_VERIFY_PAGES`."""


@dataclass(slots=True)
class _ToolVerdicts:
    """Pinning verdicts of the tool definitions one server lists now (by upstream name)."""

    generation: tuple[int, int]
    """(the upstream's list generation, the pins' generation) they hold for."""
    verdicts: dict[str, PinVerdict]


@dataclass(slots=True)
class Call:
    """One client request being served."""

    request_id: Any
    identity: dict[str, Any] | None
    channel: ClientChannel | None
    meta: JsonObject | None = None
    """A 2026-07-28 request's own `params._meta` (its envelope included): the request is
    forwarded in that era, with it, to servers that speak it."""
    headers: dict[str, str] | None = None
    """A 2026-07-28 request's `Mcp-Param-*` headers, passed on with it (the server checks
    them against the arguments)."""
    ctx: RequestContext | None = None
    """The HTTP request carrying this call: its route's policy chain decides what the caller
    may see (lists) and use (calls)."""
    span: Any = None
    """This request's span while tracing is on (the server it goes to is noted on it)."""


class Federation:
    """The federated server of one MCP backend."""

    def __init__(
        self, cfg: McpBackendConfig, upstreams: dict[str, Upstream], hooks: McpHooks
    ) -> None:
        self.cfg = cfg
        self.upstreams = upstreams
        self.hooks = hooks
        self.naming = Naming({n: s.prefix for n, s in cfg.servers.items()}, cfg.separator)
        self.shared_cache: dict[tuple[str, str], tuple[int, JsonObject]] = {}
        """First pages listed by shared upstreams (one child serves every session)."""
        self._shared_rewritten: dict[tuple[str, str], tuple[JsonObject, list[JsonObject]]] = {}
        self._timeouts = {
            name: server.timeouts or cfg.timeouts for name, server in cfg.servers.items()
        }
        self._tool_verdicts: dict[str, _ToolVerdicts] = {}
        """What pinning said of each server's current tools, for `tools/call` (any session)."""

    # -- lifecycle of a session ----------------------------------------------------------------

    async def connect_all(self, session: Session) -> list[str]:
        """Open `session`'s upstream sessions in parallel; returns the servers that failed."""

        async def one(server: str) -> None:
            await asyncio.wait_for(session.upstream(server), self._timeouts[server].connect)

        names = list(self.upstreams)
        results = await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
        failed = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("MCP server %s unavailable: %s", name, _describe(result))
                failed.append(name)
        if failed and self.cfg.fail_closed:
            raise ServiceUnavailable(
                f"MCP servers unavailable: {', '.join(failed)}", detail={"servers": failed}
            )
        return failed

    def initialize_result(self, session: Session, protocol_version: str) -> JsonObject:
        instructions = self.cfg.instructions
        if instructions is None:
            parts = [
                f"{name}: {up.init_result['instructions']}"
                for name, up in session.upstreams.items()
                if isinstance(up.init_result.get("instructions"), str)
            ]
            instructions = "\n\n".join(parts) or None
        result: JsonObject = {
            "protocolVersion": protocol_version,
            "capabilities": SERVER_CAPABILITIES,
            "serverInfo": {"name": self.cfg.server_name, "version": "0.1.0"},
        }
        if instructions:
            result["instructions"] = instructions
        return result

    # -- dispatch -------------------------------------------------------------------------------

    async def handle(self, session: Session, message: JsonObject, call: Call) -> JsonObject:
        """Serve one request; returns its result."""
        method = message.get("method")
        handler = _HANDLERS.get(method) if isinstance(method, str) else None
        if handler is None:
            raise JsonRpcCodeError(jsonrpc.METHOD_NOT_FOUND, f"method not found: {method}")
        params = message.get("params")
        if params is None:
            params = {}
        elif not isinstance(params, dict):
            raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, "params must be an object")
        capture = current_capture()
        if capture is not None:  # access / request log: method, tool, arguments, result
            handler = capture.wrap_mcp(str(method), handler)
        if not tracing.enabled():
            return await handler(self, session, params, call)
        target = params.get("name") if method in NAMED_METHODS else params.get("uri")
        name = f"{method} {target}" if isinstance(target, str) else str(method)
        with tracing.span(name) as span:
            if span is not None:
                call.span = span
                _request_attributes(span, str(method), target, session, call)
            return await handler(self, session, params, call)

    async def notification(self, session: Session, message: JsonObject) -> None:
        """A notification from the client."""
        method = message.get("method")
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        assert isinstance(params, dict)
        if method == "notifications/cancelled":
            task = session.inflight.get(params.get("requestId"))
            if task is not None:
                session.client_cancelled.add(params.get("requestId"))
                task.cancel()
        elif method == "notifications/roots/list_changed":
            for up in list(session.upstreams.values()):
                await _quietly(up.notify(str(method), params or None))

    # -- lists ----------------------------------------------------------------------------------

    async def _list(
        self, session: Session, method: str, params: JsonObject, call: Call
    ) -> JsonObject:
        spec = LISTS[method]
        pins = self.hooks.pinning
        if spec.kind == "tool" and isinstance(pins, pinning.ToolPinning) and pins.needs_refresh:
            await pins.refresh_blocked()  # a blocked tool may have been approved elsewhere
        cursor = params.get("cursor")
        if cursor is not None:
            cursors = _decode_cursor(cursor)
            targets = [server for server in cursors if server in self.upstreams]
        else:
            cursors = {}
            targets = list(self.upstreams)
        list_one = self._list_one_traced if call.span is not None else self._list_one
        pages = await asyncio.gather(
            *(list_one(session, s, method, cursors.get(s), call.meta) for s in targets),
            return_exceptions=True,
        )
        items: list[JsonObject] = []
        next_cursors: dict[str, Any] = {}
        failed: list[str] = []
        for server, page in zip(targets, pages, strict=True):
            if isinstance(page, BaseException):
                if isinstance(page, asyncio.CancelledError):
                    raise page
                logger.warning("MCP server %s left out of %s: %s", server, method, _describe(page))
                failed.append(server)
                continue
            if page is None:
                continue
            authorize = self.hooks.authorize
            filtered = call.ctx is not None and call.ctx.chain is not None
            for out in self._rewritten_page(session, server, method, page):
                if (authorize is allow_all and not filtered) or self._visible(
                    call, spec.kind, out[spec.key]
                ):
                    items.append(out)
            if page.get("nextCursor") is not None:
                next_cursors[server] = page["nextCursor"]
        if failed and self.cfg.fail_closed:
            raise ServiceUnavailable(
                f"MCP servers unavailable: {', '.join(failed)}", detail={"servers": failed}
            )
        result: JsonObject = {spec.field: items}
        if next_cursors:
            result["nextCursor"] = _encode_cursor(next_cursors)
        return result

    async def _list_one_traced(
        self,
        session: Session,
        server: str,
        method: str,
        cursor: Any,
        meta: JsonObject | None = None,
    ) -> JsonObject | None:
        """`_list_one` in a span of its own: a fanned-out list has one child span per server
        (whether its page came from the cache or from the server)."""
        with tracing.span(f"{method} {server}") as span:
            if span is not None:
                span.set_attribute("mcp.method.name", method)
                span.set_attribute(SERVER_ATTRIBUTE, server)
            return await self._list_one(session, server, method, cursor, meta)

    async def _list_one(
        self,
        session: Session,
        server: str,
        method: str,
        cursor: Any,
        meta: JsonObject | None = None,
    ) -> JsonObject | None:
        key = (server, method)
        upstream = self.upstreams[server]
        if meta is not None and await upstream.speaks_modern():
            # Forwarded in 2026-07-28, uncached: the server's own ttlMs says how long a list
            # holds, and what it lists may depend on the request's envelope.
            params: JsonObject = {"_meta": meta}
            if cursor is not None:
                params["cursor"] = cursor
            try:
                return await self._upstream_call(
                    server,
                    method,
                    None,
                    upstream.modern_request(
                        method, params, RequestOptions(timeout=self._timeouts[server].list)
                    ),
                )
            except UpstreamRpcError as exc:
                if exc.code == jsonrpc.METHOD_NOT_FOUND:
                    return None  # the server has no such primitive
                raise
        if cursor is None:
            if upstream.shared:
                shared = self.shared_cache.get(key)
                if shared is not None and shared[0] == upstream.list_generation:
                    self._remember_names(session, key, shared[1])
                    return shared[1]
            elif key in session.cache:
                return session.cache[key]
        generation = upstream.list_generation
        up = await asyncio.wait_for(session.upstream(server), self._timeouts[server].connect)
        caps = up.init_result.get("capabilities")
        if isinstance(caps, dict) and LISTS[method].capability not in caps:
            return None
        list_params = {"cursor": cursor} if cursor is not None else None
        page = await self._upstream_call(
            server,
            method,
            None,
            up.request(method, list_params, RequestOptions(timeout=self._timeouts[server].list)),
        )
        if cursor is None:
            if upstream.shared:
                self.shared_cache[key] = (generation, page)
            else:
                session.cache[key] = page
            self._remember_names(session, key, page)
        return page

    @staticmethod
    def _remember_names(session: Session, key: tuple[str, str], page: JsonObject) -> None:
        spec = LISTS[key[1]]
        if spec.key == "name" and page.get("nextCursor") is None and key not in session.known:
            # Only a complete listing can say a name does not exist.
            session.known[key] = {
                item.get("name") for item in page.get(spec.field, ()) if isinstance(item, dict)
            }

    def _rewritten_page(
        self, session: Session, server: str, method: str, page: JsonObject
    ) -> list[JsonObject]:
        """A page's items with federated names/URIs, pinning applied; computed once per page
        object (a page is replaced when the server's list changes)."""
        store = self._shared_rewritten if self.upstreams[server].shared else session.rewritten
        key = (server, method)
        entry = store.get(key)
        spec = LISTS[method]
        pins = self._pins_generation()
        if entry is not None and entry[0] is page:
            if not isinstance(entry[1], _ToolItems) or entry[1].pins == pins:
                return entry[1]
        items: list[JsonObject] = _ToolItems(pins) if spec.kind == "tool" else []
        for item in page.get(spec.field, ()):
            if isinstance(item, dict):
                out = self._rewrite_item(server, spec, item)
                if out is not None:
                    items.append(out)
        store[key] = (page, items)
        return items

    def _rewrite_item(self, server: str, spec: _ListKind, item: JsonObject) -> JsonObject | None:
        original = item.get(spec.key)
        if not isinstance(original, str):
            return None
        if spec.kind == "tool":
            verdict = self.hooks.pinning.check(server, item)
            self._verdicts_of(server)[original] = verdict
            if not isinstance(self.hooks.pinning, TrustAllTools):
                observe_pinning(server, verdict, "list")
            if verdict == "blocked":
                return None
        if spec.key == "name":
            federated = self.naming.name(server, original)
        else:
            federated = self.naming.uri(server, original)
        if federated == original:
            return item
        return {**item, spec.key: federated}

    # -- authorization --------------------------------------------------------------------------

    def _attributes(
        self, kind: Kind, name: str, arguments: dict[str, Any] | None
    ) -> dict[str, Any]:
        """CEL's `mcp` map for one tool, prompt or resource (the federated `name`)."""
        is_uri = kind in ("resource", "resource_template")
        routed = self.naming.split_uri(name) if is_uri else self.naming.split(name)
        server, target = routed if routed is not None else ("", name)
        shown = "resource" if is_uri else ("prompt" if kind == "prompt" else "tool")
        attrs: dict[str, Any] = {
            "kind": shown,
            "name": name,
            "server": server,
            "target": target,
            "tool": {"name": name if shown == "tool" else ""},
            "prompt": {"name": name if shown == "prompt" else ""},
            "resource": {"uri": name if shown == "resource" else ""},
        }
        if arguments is not None:
            attrs["arguments"] = arguments
        return attrs

    def _visible(self, call: Call, kind: Kind, name: str) -> bool:
        """Whether a list shows this item to the caller (backend hook and route policies)."""
        if not self.hooks.authorize(call.identity, kind, name, None):
            return False
        ctx = call.ctx
        if ctx is None or ctx.chain is None or not ctx.chain.filters:
            return True
        return ctx.chain.visible(ctx, {"mcp": self._attributes(kind, name, None)})

    def visible_resources(self, ctx: RequestContext, uris: list[str]) -> list[str]:
        """The resource URIs of `uris` this caller may read (for subscriptions)."""
        call = Call(None, ctx.identity, None, ctx=ctx)
        return [uri for uri in uris if self._visible(call, "resource", uri)]

    async def _authorize_call(
        self, call: Call, kind: Kind, name: str, arguments: dict[str, Any]
    ) -> None:
        """Run the route's parsed phase for one call; raise `Forbidden` if it may not run."""
        if not self.hooks.authorize(call.identity, kind, name, arguments):
            raise Forbidden(f"{kind} {name!r} is not allowed")
        ctx = call.ctx
        if ctx is not None and ctx.chain is not None and ctx.chain.parsed_policies:
            ctx.attrs["mcp"] = self._attributes(kind, name, arguments)
            await ctx.chain.parsed(ctx)

    # -- routed requests ------------------------------------------------------------------------

    async def _route_name(
        self, session: Session, kind: Kind, params: JsonObject, call: Call, method: str
    ) -> JsonObject:
        name = params.get("name")
        if not isinstance(name, str):
            raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, "params.name must be a string")
        arguments = params.get("arguments")
        target = self.naming.split(name)
        if target is None or target[0] not in self.upstreams:
            raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, f"unknown {kind}: {name}")
        await self._authorize_call(
            call, kind, name, arguments if isinstance(arguments, dict) else {}
        )
        server, original = target
        known = session.known.get((server, "tools/list" if kind == "tool" else "prompts/list"))
        if known is not None and original not in known:
            raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, f"unknown {kind}: {name}")
        if kind == "tool" and not await self._tool_usable(session, server, original, call):
            raise Forbidden(f"tool {name!r} is blocked: its definition changed")
        forwarded = {**params, "name": original}
        ctx = call.ctx
        if ctx is not None and guarded(ctx):  # guardrails: the arguments in, the result out
            call.headers = await mcp_guard.guard_request(ctx, method, forwarded, call.headers)
            result = await self._forward(session, server, method, forwarded, call)
            return await mcp_guard.guard_result(ctx, method, result)
        return await self._forward(session, server, method, forwarded, call)

    # -- pinning on calls -------------------------------------------------------------------------

    def _pins_generation(self) -> int:
        pins = self.hooks.pinning
        return pins.generation if isinstance(pins, pinning.ToolPinning) else 0

    def _verdicts_of(self, server: str) -> dict[str, PinVerdict]:
        """The verdicts on `server`'s current tools; emptied when its list or the pins change."""
        generation = (self.upstreams[server].list_generation, self._pins_generation())
        entry = self._tool_verdicts.get(server)
        if entry is None or entry.generation != generation:
            entry = self._tool_verdicts[server] = _ToolVerdicts(generation, {})
        return entry.verdicts

    async def _tool_usable(self, session: Session, server: str, original: str, call: Call) -> bool:
        """Whether pinning lets this tool be called. Its current definition must have been
        reviewed (listed by its server since the last change, in any session) and not blocked;
        when it was not, the server's whole tool list is read and reviewed first."""
        pins = self.hooks.pinning
        if isinstance(pins, TrustAllTools):
            return True
        verdict = self._verdicts_of(server).get(original)
        if verdict is None:
            verdict = await self._verify_tool(session, server, original, call)
        if (
            verdict == "blocked"
            and isinstance(pins, pinning.ToolPinning)
            and await pins.recheck(server, original)
        ):
            # Approved or forgotten in the shared pin file (CLI, another worker): review again.
            verdict = await self._verify_tool(session, server, original, call)
        observe_pinning(server, verdict or "ok", "call")
        return verdict != "blocked"

    async def _verify_tool(
        self, session: Session, server: str, original: str, call: Call
    ) -> PinVerdict | None:
        """Review `server`'s whole tool list; the verdict on `original`. When that is not
        possible (the list fails, is too long, or lacks the tool), `block` mode refuses the
        call and other modes let it through with a warning (None)."""
        unreachable: BaseException | None = None
        try:
            await self._review_tools(session, server, call.meta)
            problem = f"server {server!r} does not list it"
        except asyncio.CancelledError:
            raise
        except _TooManyPages as exc:
            problem = f"server {server!r} {exc}"
        except UpstreamRpcError as exc:  # the server answered, with an error
            problem = f"the tool list of server {server!r} failed: {_describe(exc)}"
        except Exception as exc:
            unreachable = exc
            problem = f"the tool list of server {server!r} failed: {_describe(exc)}"
        verdict = self._verdicts_of(server).get(original)  # pages read before a failure count
        if verdict is not None:
            return verdict
        name = self.naming.name(server, original)
        pins = self.hooks.pinning
        if isinstance(pins, pinning.ToolPinning) and pins.fail_closed:
            logger.warning("MCP tool call refused: %r could not be verified: %s", name, problem)
            if unreachable is not None:  # reported like a call to a server that is down
                raise UpstreamError(
                    f"MCP server {server!r} is not available: {_describe(unreachable)}"
                ) from None
            raise Forbidden(
                f"tool {name!r} could not be verified ({problem}); tool pinning refuses "
                "calls to tools whose current definition it has not seen",
                detail={"server": server, "tool": original},
            )
        logger.warning("MCP tool %r called without a verified definition: %s", name, problem)
        return None

    async def _review_tools(self, session: Session, server: str, meta: JsonObject | None) -> None:
        """Read every page of `server`'s tool list (at most `MAX_VERIFY_PAGES`) and review each
        tool; the verdicts are kept for every session's calls."""
        cursor: Any = None
        for _ in range(MAX_VERIFY_PAGES):
            page = await self._list_one(session, server, "tools/list", cursor, meta)
            if page is None:
                return  # the server has no tools
            verdicts = self._verdicts_of(server)
            for tool in page.get("tools", ()):
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    verdicts[tool["name"]] = self.hooks.pinning.check(server, tool)
            cursor = page.get("nextCursor")
            if cursor is None:
                return
        raise _TooManyPages(f"it lists more than {MAX_VERIFY_PAGES} pages of tools")

    async def _route_uri(
        self, session: Session, params: JsonObject, call: Call, method: str
    ) -> JsonObject:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, "params.uri must be a string")
        target = self.naming.split_uri(uri)
        if target is None or target[0] not in self.upstreams:
            raise JsonRpcCodeError(jsonrpc.RESOURCE_NOT_FOUND, f"unknown resource: {uri}")
        await self._authorize_call(call, "resource", uri, {})
        server, original = target
        result = await self._forward(session, server, method, {**params, "uri": original}, call)
        if method == "resources/read" and original != uri:
            contents = result.get("contents")
            if isinstance(contents, list):
                result = {
                    **result,
                    "contents": [
                        {**c, "uri": self.naming.uri(server, c["uri"])}
                        if isinstance(c, dict) and isinstance(c.get("uri"), str)
                        else c
                        for c in contents
                    ],
                }
        if method == "resources/read" and call.ctx is not None and guarded(call.ctx):
            result = await mcp_guard.guard_result(call.ctx, method, result)  # guardrails
        return result

    async def _forward(
        self, session: Session, server: str, method: str, params: JsonObject, call: Call
    ) -> JsonObject:
        timeouts = self._timeouts[server]
        channel = call.channel
        tool = params.get("name") if method == "tools/call" else None
        if call.span is not None:
            call.span.set_attribute(SERVER_ATTRIBUTE, server)
        if call.meta is not None and await self.upstreams[server].speaks_modern():
            # Both ends speak 2026-07-28: the request goes on in that era, with the client's
            # envelope, and its result (input-required ones too) comes back as is.
            return await self._upstream_call(
                server,
                method,
                tool,
                self.upstreams[server].modern_request(
                    method,
                    {**params, "_meta": call.meta},
                    RequestOptions(
                        timeout=timeouts.call,
                        on_notification=(
                            lambda m: self._related_notification(session, server, m, channel)
                        )
                        if channel is not None
                        else None,
                    ),
                    call.headers,
                ),
            )
        up = session.upstreams.get(server)
        try:
            if up is None or not up.alive:
                up = await asyncio.wait_for(session.upstream(server), timeouts.connect)
        except TimeoutError:
            raise UpstreamError(f"MCP server {server!r} is not available") from None
        except (GatewayError, UpstreamRpcError) as exc:
            raise UpstreamError(
                f"MCP server {server!r} is not available: {_describe(exc)}"
            ) from None
        options = RequestOptions(
            timeout=timeouts.call,
            on_notification=(lambda m: self._related_notification(session, server, m, channel))
            if channel is not None
            else None,
            on_request=(lambda m: session.ask_client(server, m, channel)),
        )
        return await self._upstream_call(server, method, tool, up.request(method, params, options))

    async def _upstream_call(
        self, server: str, method: str, tool: Any, request: Awaitable[JsonObject]
    ) -> JsonObject:
        """Await one request to `server`, counted and timed (`crossway_mcp_*`), inside a CLIENT
        span while tracing is on: the span is current while the request is sent, so its trace
        context goes with it (HTTP headers, stdio `params._meta`)."""
        tool_name = tool if isinstance(tool, str) else None
        started = time.perf_counter()
        error: str | None = None
        try:
            if not tracing.enabled():
                result = await request
                if tool_name and result.get("isError") is True:
                    error = "tool_error"
                return result
            with tracing.span(
                f"{method} {tool_name}" if tool_name else method, kind="client"
            ) as span:
                if span is not None:
                    span.set_attribute("mcp.method.name", method)
                    span.set_attribute(SERVER_ATTRIBUTE, server)
                    if tool_name:
                        span.set_attribute("gen_ai.tool.name", tool_name)
                        span.set_attribute("gen_ai.operation.name", "execute_tool")
                try:
                    result = await request
                except UpstreamRpcError as exc:
                    if span is not None:
                        span.set_attribute("rpc.response.status_code", str(exc.code))
                        span.set_attribute("error.type", str(exc.code))
                    raise
                if tool_name and result.get("isError") is True:
                    error = "tool_error"
                    if span is not None:
                        span.set_attribute("error.type", "tool_error")
                return result
        except UpstreamRpcError:
            error = "rpc_error"
            raise
        except (UpstreamTimeout, TimeoutError):
            error = "timeout"
            raise
        except UpstreamUnreachable:
            error = "unreachable"
            raise
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        except Exception:
            error = "error"
            raise
        finally:
            observe_mcp_call(server, method, tool_name, time.perf_counter() - started, error)

    async def _related_notification(
        self, session: Session, server: str, message: JsonObject, channel: ClientChannel
    ) -> None:
        session.saw_notification(server, message)
        outgoing = self.rewrite_server_notification(server, message)
        if outgoing is not None:
            await channel.send(outgoing)

    def rewrite_server_notification(self, server: str, message: JsonObject) -> JsonObject | None:
        """A notification from `server` as the client should see it."""
        method = message.get("method")
        params = message.get("params")
        if method == "notifications/tools/list_changed":
            self._tool_verdicts.pop(server, None)  # its tools are reviewed again before a call
        if method == "notifications/resources/updated" and isinstance(params, dict):
            uri = params.get("uri")
            if isinstance(uri, str):
                return {**message, "params": {**params, "uri": self.naming.uri(server, uri)}}
        if method == "notifications/message" and isinstance(params, dict):
            if self.naming.prefixed.get(server) and "logger" not in params:
                return {**message, "params": {**params, "logger": server}}
        return message

    # -- 2026-07-28 subscriptions/listen -------------------------------------------------------

    async def listen(
        self,
        session: Session,
        honored: JsonObject,
        meta: JsonObject,
        deliver: Callable[[str, JsonObject], None],
        ended: Callable[[], None],
    ) -> Callable[[], None]:
        """Feed one client's listen stream from every server: a 2026-07-28 server gets its own
        `subscriptions/listen` (its acknowledgement awaited, so nothing the client triggers
        next is missed); a handshake-era server's session (the one serving 2026-07-28 clients)
        passes on what it hears. `deliver` gets (server, notification rewritten for the
        client); `ended` is called when an acknowledged server stream ends (the client then
        listens again). Returns the function that stops it all."""
        tasks: list[asyncio.Task[None]] = []
        acks: list[asyncio.Event] = []
        uris: dict[str, list[str]] = {}
        for uri in honored.get("resourceSubscriptions", ()):
            target = self.naming.split_uri(uri)
            if target is not None and target[0] in self.upstreams:
                uris.setdefault(target[0], []).append(target[1])
        flags = {k: v for k, v in honored.items() if k != "resourceSubscriptions"}
        modern = await asyncio.gather(
            *(up.speaks_modern() for up in self.upstreams.values()), return_exceptions=True
        )
        legacy: list[str] = []
        for (server, upstream), speaks in zip(self.upstreams.items(), modern, strict=True):
            if speaks is not True:
                legacy.append(server)
                continue
            wanted = dict(flags)
            if server in uris:
                wanted["resourceSubscriptions"] = uris[server]
            if not wanted:
                continue
            acked = asyncio.Event()
            acks.append(acked)
            tasks.append(
                asyncio.get_running_loop().create_task(
                    self._listen_one(server, upstream, wanted, meta, deliver, acked, ended)
                )
            )
        session.listeners.add(deliver)
        for server in legacy:
            tasks.append(
                asyncio.get_running_loop().create_task(
                    self._legacy_listen(session, server, uris.get(server, []))
                )
            )
        if acks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(a.wait() for a in acks)),
                    max(self._timeouts[s].connect for s in self.upstreams),
                )

        def stop() -> None:
            session.listeners.discard(deliver)
            for task in tasks:
                task.cancel()

        return stop

    async def _listen_one(
        self,
        server: str,
        upstream: Upstream,
        wanted: JsonObject,
        meta: JsonObject,
        deliver: Callable[[str, JsonObject], None],
        acked: asyncio.Event,
        ended: Callable[[], None],
    ) -> None:
        async def on_notification(message: JsonObject) -> None:
            outgoing = self.rewrite_server_notification(server, message)
            if outgoing is not None:
                deliver(server, outgoing)

        await upstream.modern_listen(
            {"_meta": meta, "notifications": wanted}, on_notification, acked.set
        )
        if acked.is_set():
            ended()
        else:
            acked.set()  # refused: nothing to wait for

    async def _legacy_listen(self, session: Session, server: str, uris: list[str]) -> None:
        """Keep `server`'s session open (its stream carries list_changed) and subscribe the
        resources the client listens to."""
        timeouts = self._timeouts[server]
        try:
            up = await asyncio.wait_for(session.upstream(server), timeouts.connect)
            for uri in uris:
                await up.request(
                    "resources/subscribe", {"uri": uri}, RequestOptions(timeout=timeouts.list)
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.info("MCP server %s: listen not relayed: %s", server, _describe(exc))

    # -- per-method handlers --------------------------------------------------------------------

    async def _ping(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        return {}

    async def _tools_list(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        return await self._list(session, "tools/list", params, call)

    async def _prompts_list(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        return await self._list(session, "prompts/list", params, call)

    async def _resources_list(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        return await self._list(session, "resources/list", params, call)

    async def _templates_list(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        return await self._list(session, "resources/templates/list", params, call)

    async def _tools_call(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        return await self._route_name(session, "tool", params, call, "tools/call")

    async def _prompts_get(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        return await self._route_name(session, "prompt", params, call, "prompts/get")

    async def _resources_read(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        return await self._route_uri(session, params, call, "resources/read")

    async def _resources_subscribe(
        self, session: Session, params: JsonObject, call: Call
    ) -> JsonObject:
        return await self._route_uri(session, params, call, "resources/subscribe")

    async def _resources_unsubscribe(
        self, session: Session, params: JsonObject, call: Call
    ) -> JsonObject:
        return await self._route_uri(session, params, call, "resources/unsubscribe")

    async def _complete(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, "params.ref must be an object")
        if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
            target = self.naming.split(ref["name"])
            if target is None or target[0] not in self.upstreams:
                raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, f"unknown prompt: {ref['name']}")
            if not self._visible(call, "prompt", ref["name"]):
                raise Forbidden(f"prompt {ref['name']!r} is not allowed")
            new_ref = {**ref, "name": target[1]}
        elif ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
            target = self.naming.split_uri(ref["uri"])
            if target is None or target[0] not in self.upstreams:
                raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, f"unknown resource: {ref['uri']}")
            if not self._visible(call, "resource_template", ref["uri"]):
                raise Forbidden(f"resource {ref['uri']!r} is not allowed")
            new_ref = {**ref, "uri": target[1]}
        else:
            raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, "unsupported completion ref")
        return await self._forward(
            session, target[0], "completion/complete", {**params, "ref": new_ref}, call
        )

    async def _set_level(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        level = params.get("level")
        if not isinstance(level, str):
            raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, "params.level must be a string")
        session.log_level = level

        async def one(server: str) -> None:
            up = await asyncio.wait_for(session.upstream(server), self._timeouts[server].connect)
            caps = up.init_result.get("capabilities")
            if isinstance(caps, dict) and "logging" not in caps:
                return
            await up.request(
                "logging/setLevel", params, RequestOptions(timeout=self._timeouts[server].list)
            )

        await asyncio.gather(*(one(s) for s in self.upstreams), return_exceptions=True)
        return {}

    async def _discover(self, session: Session, params: JsonObject, call: Call) -> JsonObject:
        server_info = {"name": self.cfg.server_name, "version": "0.1.0"}
        return {
            "supportedVersions": [*MODERN_VERSIONS],
            "capabilities": SERVER_CAPABILITIES,
            "serverInfo": server_info,
            "_meta": {SERVER_INFO_META_KEY: server_info},
            **({"instructions": self.cfg.instructions} if self.cfg.instructions else {}),
        }


_HANDLERS: Final[dict[str, Handler]] = {
    "ping": Federation._ping,
    "tools/list": Federation._tools_list,
    "tools/call": Federation._tools_call,
    "prompts/list": Federation._prompts_list,
    "prompts/get": Federation._prompts_get,
    "resources/list": Federation._resources_list,
    "resources/templates/list": Federation._templates_list,
    "resources/read": Federation._resources_read,
    "resources/subscribe": Federation._resources_subscribe,
    "resources/unsubscribe": Federation._resources_unsubscribe,
    "completion/complete": Federation._complete,
    "logging/setLevel": Federation._set_level,
    "server/discover": Federation._discover,
}


NAMED_METHODS: Final = frozenset({"tools/call", "prompts/get"})
"""Methods whose target is `params.name` (the others that have one name it by `params.uri`)."""
SERVER_ATTRIBUTE: Final = "crossway.mcp.server"
"""Span attribute: the configured name of the MCP server a request went to."""


def _request_attributes(span: Any, method: str, target: Any, session: Session, call: Call) -> None:
    """The MCP semantic-convention attributes of one client request's span."""
    span.set_attribute("mcp.method.name", method)
    if method == "tools/call" and isinstance(target, str):
        span.set_attribute("gen_ai.tool.name", target)
        span.set_attribute("gen_ai.operation.name", "execute_tool")
    elif method == "prompts/get" and isinstance(target, str):
        span.set_attribute("gen_ai.prompt.name", target)
    elif isinstance(target, str):
        span.set_attribute("mcp.resource.uri", target)
    if session.id is not None:
        span.set_attribute("mcp.session.id", session.id)
    if call.request_id is not None and not isinstance(call.request_id, bool):
        span.set_attribute("jsonrpc.request.id", str(call.request_id))


def _encode_cursor(cursors: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(cursors)).decode()


def _decode_cursor(cursor: Any) -> dict[str, Any]:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(str(cursor)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, "invalid cursor") from None
    if not isinstance(decoded, dict):
        raise JsonRpcCodeError(jsonrpc.INVALID_PARAMS, "invalid cursor")
    return decoded


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, (GatewayError, UpstreamRpcError)):
        return exc.message
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        logger.debug("forwarding a notification failed", exc_info=True)


__all__ = ["Call", "Federation", "UpstreamSession"]
