"""`A2aBackend`: the `type: a2a` backend — A2A agents proxied, bridged, discovered and routed.

URL layout under the route's prefix `P` (e.g. `/a2a`):

    P/NAME/  P/NAME            JSON-RPC (POST) to agent NAME; GET: its card
    P/NAME/<rest route>        HTTP+JSON (REST): `message:send`, `tasks/{id}`... (v0.3: `v1/...`)
    P/NAME/.well-known/agent-card.json, agent.json    its card, rewritten to point here
    P/  P/<rest route>         the router agent (picks the agent per message)
    P/.well-known/agent-card.json                     the router's card
    P/agents                   the catalog (GET, `?skill=&tag=&mode=&q=`)

A request is translated to the canonical form (v1.0 JSON-RPC method + v1.0 params, by
`crossway.a2a.bridge` or `crossway.a2a.rest`), the route's policy chain runs its parsed phase
with `ctx.attrs["a2a"] = {"agent", "skill", "method"}`, task follow-ups go to the agent that owns
the task (`crossway.a2a.tasks`), and the agent is called in its own version and binding
(`crossway.a2a.upstream`-style code below: JSON-RPC preferred, REST when that is all it has).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Final
from urllib.parse import parse_qs

import orjson

from crossway.a2a import cards
from crossway.a2a import errors as codes
from crossway.a2a.errors import A2aError
from crossway.a2a.model import Agent, Decision, Interface, Version
from crossway.a2a.registry import AgentRegistry
from crossway.config.a2a import A2aAgentConfig, A2aBackendConfig
from crossway.config.common import Timeouts
from crossway.config.models import Config
from crossway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    InvalidJSON,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from crossway.policy import parsed, visible
from crossway.proxy import client
from crossway.proxy.sse import SSEParser
from crossway.server.asgi import SSE_HEADERS, read_body, send_response, stream_response
from crossway.server.backend import Backend, ErrorResponse, error_headers
from crossway.server.context import CONSUMED_HEADERS, RequestContext
from crossway.types import Receive, Scope, Send

log = logging.getLogger("crossway.a2a")

RPC_ID: Final = "gateway.a2a.rpc_id"
"""`ctx.attrs` key: the JSON-RPC id of the request (errors echo it)."""
BINDING: Final = "gateway.a2a.binding"
"""`ctx.attrs` key: `REST` when the request came over HTTP+JSON (errors take its shape)."""
VERSION: Final = "gateway.a2a.version"
"""`ctx.attrs` key: the client's protocol version ("1.0" or "0.3")."""
CARD_PATHS: Final = frozenset({"/.well-known/agent-card.json", "/.well-known/agent.json"})
ROUTE_HEADER: Final = b"x-crossway-route"
ROUTE_METADATA: Final = "crossway/route"
JSON_HEADERS: Final = [(b"content-type", b"application/json")]
TASK_METHODS: Final = frozenset({"GetTask", "CancelTask", "SubscribeToTask"})
PUSH_METHODS: Final = frozenset(
    {
        "CreateTaskPushNotificationConfig",
        "GetTaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs",
        "DeleteTaskPushNotificationConfig",
    }
)
SEND_METHODS: Final = frozenset({"SendMessage", "SendStreamingMessage"})
STREAM_METHODS: Final = frozenset({"SendStreamingMessage", "SubscribeToTask"})
SETTLED_STATES: Final = frozenset(
    {
        "TASK_STATE_COMPLETED",
        "TASK_STATE_FAILED",
        "TASK_STATE_CANCELED",
        "TASK_STATE_REJECTED",
        "TASK_STATE_INPUT_REQUIRED",
        "TASK_STATE_AUTH_REQUIRED",
    }
)
"""States after which an agent's stream may end (the task finished or waits for the caller)."""
INTERFACE_PREFERENCE: Final = (
    ("JSONRPC", "1.0"),
    ("JSONRPC", "0.3"),
    ("HTTP+JSON", "1.0"),
    ("HTTP+JSON", "0.3"),
)
FORWARDED_REQUEST_HEADERS: Final = frozenset({b"a2a-extensions", b"x-a2a-extensions"})
"""Client headers handed on to the agent (A2A extension negotiation)."""


class _MemoryOwners:
    """Task and context ownership in this process: the stand-in while no task store is
    configured in `crossway.a2a.tasks` (same three calls)."""

    MAX_ENTRIES: Final = 100_000

    def __init__(self) -> None:
        self.tasks: dict[str, str] = {}
        self.contexts: dict[str, str] = {}

    async def owner_of_task(self, task_id: str) -> str | None:
        return self.tasks.get(task_id)

    async def owner_of_context(self, context_id: str) -> str | None:
        return self.contexts.get(context_id)

    async def observe(self, agent: str, item: Any) -> None:
        task_id, context_id = _ids(item)
        if len(self.tasks) > self.MAX_ENTRIES:
            self.tasks.clear()
            self.contexts.clear()
        if task_id:
            self.tasks[task_id] = agent
        if context_id:
            self.contexts[context_id] = agent

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _ids(item: Any) -> tuple[str | None, str | None]:
    """(task id, context id) of a canonical result or stream event."""
    if not isinstance(item, dict):
        return None, None
    for key in ("task", "statusUpdate", "artifactUpdate", "message"):
        inner = item.get(key)
        if isinstance(inner, dict):
            task_id = inner.get("id") if key == "task" else inner.get("taskId")
            context_id = inner.get("contextId")
            return (
                task_id if isinstance(task_id, str) and task_id else None,
                context_id if isinstance(context_id, str) and context_id else None,
            )
    return None, None


def _build_tracker(name: str, config: A2aBackendConfig) -> Any:
    try:
        from crossway.a2a import tasks
    except ImportError:
        return _MemoryOwners()
    return tasks.TaskTracker.from_config(name, config)


async def _maybe(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


def _version(ctx: RequestContext) -> Version:
    """The client's version recorded for this request (1.0 until known)."""
    return "0.3" if ctx.attrs.get(VERSION) == "0.3" else "1.0"


def client_version(scope: Scope) -> Version | None:
    """The `A2A-Version` header as "1.0" / "0.3", None when absent or empty (which means
    0.3 unless the method name says otherwise); a version nobody speaks raises -32009."""
    raw = _header(scope, b"a2a-version")
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if text in ("1", "1.0") or text.startswith("1.0."):
        return "1.0"
    if text == "0.3" or text.startswith("0.3."):
        return "0.3"
    raise A2aError(
        codes.VERSION_NOT_SUPPORTED,
        f"A2A-Version {text} is not supported (Crossway speaks 1.0 and 0.3)",
        {"supportedVersions": ["1.0", "0.3"]},
    )


def rpc_code(exc: GatewayError) -> int:
    """The JSON-RPC error code of a gateway error (a policy's refusal, a framing error)."""
    if isinstance(exc, InvalidJSON):
        return codes.PARSE_ERROR
    if isinstance(exc, (BadRequest, PayloadTooLarge, Unauthenticated, Forbidden, NotFound)):
        return codes.INVALID_REQUEST
    return codes.INTERNAL_ERROR


class A2aBackend(Backend):
    """Serves A2A clients from the configured agents."""

    parses = True

    def __init__(self, name: str, config: A2aBackendConfig, root: Config) -> None:
        self.name = name
        self.config = config
        self.root = root
        self.registry = AgentRegistry(config)
        self.tracker = _build_tracker(name, config)
        self._prefixes: dict[str, str] = {}
        for route in root.routes:
            if route.backend == name:
                prefix = route.match.path.prefix if route.match.path is not None else None
                self._prefixes[route.name] = (prefix or "").rstrip("/")
        self._router: Any = None
        self._router_key: tuple[Any, ...] = ()

    @classmethod
    def from_config(cls, name: str, config: A2aBackendConfig, root: Config) -> A2aBackend:
        return cls(name, config, root)

    async def start(self) -> None:
        await _maybe(getattr(self.tracker, "start", lambda: None)())
        await self.registry.start()

    async def close(self) -> None:
        await self.registry.close()
        await _maybe(getattr(self.tracker, "close", lambda: None)())

    # -- errors ---------------------------------------------------------------------------

    def render_error(self, exc: GatewayError, scope: Scope, ctx: RequestContext) -> ErrorResponse:
        """A gateway error (a policy's 401/403, a 413...) as a JSON-RPC error response, or in
        the REST error shape on REST paths, with the HTTP status and headers
        (`WWW-Authenticate`) clients act on."""
        headers = [*JSON_HEADERS, *error_headers(exc)]
        if self._is_rest(scope, ctx):
            from crossway.a2a import rest

            error = A2aError(rpc_code(exc), exc.message, status=exc.status_code)
            version = _version(ctx)
            _, body = rest.rest_error(error, version)
            return exc.status_code, headers, body
        error_member: dict[str, Any] = {"code": rpc_code(exc), "message": exc.message}
        body = orjson.dumps({"jsonrpc": "2.0", "id": ctx.attrs.get(RPC_ID), "error": error_member})
        return exc.status_code, headers, body

    def _is_rest(self, scope: Scope, ctx: RequestContext) -> bool:
        binding = ctx.attrs.get(BINDING)
        if binding is not None:
            return bool(binding == "REST")
        _, rel = self._split(scope, ctx)
        return scope.get("method") != "POST" or rel.strip("/").count("/") > 0 or ":" in rel

    # -- dispatch -------------------------------------------------------------------------

    def _split(self, scope: Scope, ctx: RequestContext) -> tuple[str, str]:
        """(route prefix P, path after P)."""
        path: str = scope["path"]
        prefix = self._prefixes.get(ctx.route, "")
        if prefix and path.startswith(prefix):
            return prefix, path[len(prefix) :] or "/"
        return "", ctx.path

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        prefix, rel = self._split(scope, ctx)
        base = cards.public_base(scope, ctx) + prefix
        method: str = scope.get("method", "GET")
        try:
            await self._serve(scope, receive, send, ctx, base, rel, method)
        except A2aError as exc:
            await self._send_error(send, scope, ctx, exc)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        base: str,
        rel: str,
        method: str,
    ) -> None:
        if rel in ("", "/"):
            target: str | None = None
            rest_path = ""
        else:
            head, _, tail = rel.lstrip("/").partition("/")
            if rel.rstrip("/") == "/agents":
                await self._catalog(scope, send, ctx, base)
                return
            if rel in CARD_PATHS:
                await self._card(scope, send, ctx, None, base)
                return
            if head in self.config.agents:
                target, rest_path = head, ("/" + tail if tail else "")
            elif ":" in head or head in ("tasks", "v1", "extendedAgentCard", "card"):
                target, rest_path = None, rel
            else:
                ctx.attrs[BINDING] = "JSONRPC" if method == "POST" and "/" not in rel[1:] else ""
                raise A2aError(codes.INVALID_REQUEST, f"no A2A agent {head!r} here", status=404)
        if target is not None and not visible(ctx, {"a2a": {"agent": target}}):
            raise A2aError(codes.INVALID_REQUEST, f"no A2A agent {target!r} here", status=404)
        if rest_path.rstrip("/") in ("", "/"):
            if method == "GET":
                await self._card(scope, send, ctx, target, base)
                return
            if method != "POST":
                raise A2aError(codes.INVALID_REQUEST, f"{method} is not allowed here", status=405)
            await self._jsonrpc(scope, receive, send, ctx, target)
            return
        if rest_path in CARD_PATHS:
            await self._card(scope, send, ctx, target, base)
            return
        await self._rest(scope, receive, send, ctx, target, rest_path, method)

    # -- cards and the catalog ------------------------------------------------------------

    def _agent_url(self, base: str, name: str | None) -> str:
        return f"{base}/{name}" if name else base + "/"

    def _visible_agents(self, ctx: RequestContext) -> list[Agent]:
        return [a for a in self.registry.all() if visible(ctx, {"a2a": {"agent": a.name}})]

    async def _card(
        self, scope: Scope, send: Send, ctx: RequestContext, target: str | None, base: str
    ) -> None:
        version = client_version(scope)
        if target is None:
            if not self.config.router.enabled:
                raise A2aError(codes.INVALID_REQUEST, "the router agent is disabled", status=404)
            from crossway.a2a import routing

            url = self._agent_url(base, None)
            card_v10 = routing.router_card(
                [a for a in self._visible_agents(ctx) if a.card],
                url,
                self.config.router.name,
                self.config.router.description,
            )
        else:
            agent = self._agent(target)
            if not agent.card:
                self.registry.recheck(target)
                raise self._down(target)
            url = self._agent_url(base, target)
            card_v10 = agent.card
        card = cards.client_card(card_v10, url, version, ctx, rest=True)
        await send_response(send, 200, orjson.dumps(card), JSON_HEADERS)

    async def _catalog(self, scope: Scope, send: Send, ctx: RequestContext, base: str) -> None:
        from crossway.a2a import routing

        if scope.get("method") != "GET":
            raise A2aError(codes.INVALID_REQUEST, "the catalog answers GET only", status=405)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))

        def arg(key: str) -> str | None:
            values = query.get(key)
            return values[-1] if values else None

        agents = [a for a in self._visible_agents(ctx) if a.card]
        entries = routing.search_catalog(
            agents, skill=arg("skill"), tag=arg("tag"), mode=arg("mode"), q=arg("q")
        )
        for entry in entries:
            entry["url"] = self._agent_url(base, entry["name"])
            entry["cardUrl"] = entry["url"] + "/.well-known/agent-card.json"
        await send_response(send, 200, orjson.dumps({"agents": entries}), JSON_HEADERS)

    # -- the two bindings towards the client ----------------------------------------------

    def _limit(self, ctx: RequestContext) -> int:
        return ctx.max_body_bytes or self.config.max_message_bytes

    async def _jsonrpc(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext, target: str | None
    ) -> None:
        from crossway.a2a import bridge

        ctx.attrs[BINDING] = "JSONRPC"
        raw = await read_body(scope, receive, self._limit(ctx))
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise A2aError(codes.PARSE_ERROR, "the request body is not JSON") from None
        if not isinstance(request, dict):
            raise A2aError(codes.INVALID_REQUEST, "a JSON-RPC request must be one JSON object")
        rpc_id = request.get("id")
        if isinstance(rpc_id, (str, int)) and not isinstance(rpc_id, bool):
            ctx.attrs[RPC_ID] = rpc_id
        elif rpc_id is not None:
            raise A2aError(codes.INVALID_REQUEST, "the JSON-RPC id must be a string or number")
        name = request.get("method")
        if request.get("jsonrpc") != "2.0" or not isinstance(name, str):
            raise A2aError(codes.INVALID_REQUEST, "not a JSON-RPC 2.0 request")
        params = request.get("params", {})
        if not isinstance(params, dict):
            raise A2aError(codes.INVALID_PARAMS, "params must be an object")
        header_version = client_version(scope)
        version: Version = "0.3" if "/" in name else (header_version or "1.0")
        ctx.attrs[VERSION] = version
        method, cparams = bridge.request_to_canonical(version, name, params)
        agent, decision = await self._resolve(ctx, target, method, cparams)
        headers = [*JSON_HEADERS]
        if decision is not None:
            headers.append((ROUTE_HEADER, decision.header().encode()))
        if method in STREAM_METHODS:
            events = self._stream(scope, ctx, agent, method, cparams, decision)
            await self._write_stream(receive, send, ctx, events, version, rest=False)
            return
        result = await self._call(scope, ctx, agent, method, cparams, decision)
        if method == "GetExtendedAgentCard":
            result = self._rewrite_card(scope, ctx, agent.name, result)
        body = {"jsonrpc": "2.0", "id": rpc_id, "result": self._out(version, method, result)}
        await send_response(send, 200, orjson.dumps(body), headers)

    async def _rest(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        target: str | None,
        path: str,
        http_method: str,
    ) -> None:
        from crossway.a2a import rest

        ctx.attrs[BINDING] = "REST"
        header_version = client_version(scope)
        version: Version = header_version or ("0.3" if path.startswith("/v1/") else "1.0")
        ctx.attrs[VERSION] = version
        body = b""
        if http_method in ("POST", "PUT", "PATCH"):
            body = await read_body(scope, receive, self._limit(ctx))
        query = scope.get("query_string", b"")
        method, cparams = rest.parse_rest(version, http_method, path, query, body)
        agent, decision = await self._resolve(ctx, target, method, cparams)
        headers = [*JSON_HEADERS]
        if decision is not None:
            headers.append((ROUTE_HEADER, decision.header().encode()))
        if method in STREAM_METHODS:
            events = self._stream(scope, ctx, agent, method, cparams, decision)
            await self._write_stream(receive, send, ctx, events, version, rest=True)
            return
        result = await self._call(scope, ctx, agent, method, cparams, decision)
        if method == "GetExtendedAgentCard":
            result = self._rewrite_card(scope, ctx, agent.name, result)
        status, out = rest.rest_result(method, result, version)
        await send_response(send, status, out, headers)

    def _out(self, version: Version, method: str, result: Any) -> Any:
        from crossway.a2a import bridge

        return bridge.result_from_canonical(version, method, result)

    def _rewrite_card(self, scope: Scope, ctx: RequestContext, name: str, card: Any) -> Any:
        if not isinstance(card, dict):
            return card
        prefix, _ = self._split(scope, ctx)
        url = self._agent_url(cards.public_base(scope, ctx) + prefix, name)
        return cards.client_card(card, url, "1.0", ctx, rest=True)

    async def _send_error(
        self, send: Send, scope: Scope, ctx: RequestContext, exc: A2aError
    ) -> None:
        if self._is_rest(scope, ctx):
            from crossway.a2a import rest

            status, body = rest.rest_error(exc, _version(ctx))
            await send_response(send, status, body, rest.error_headers(exc))
            return
        from crossway.a2a import bridge

        version = _version(ctx)
        error = bridge.error_for(version, exc)
        body = orjson.dumps({"jsonrpc": "2.0", "id": ctx.attrs.get(RPC_ID), "error": error})
        status = exc.status if exc.status in (404, 405) else 200
        await send_response(send, status, body, JSON_HEADERS)

    async def _write_stream(
        self,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        events: AsyncIterator[dict[str, Any]],
        version: Version,
        *,
        rest: bool,
    ) -> None:
        """Send the stream's events as they come; an error before the first event is an
        ordinary error answer, one after it a final error event."""
        from crossway.a2a import bridge
        from crossway.a2a import rest as rest_binding

        rpc_id = ctx.attrs.get(RPC_ID)
        first = await anext(events, None)  # errors before the stream starts: a plain answer

        def encode(event: dict[str, Any]) -> bytes:
            if rest:
                return rest_binding.rest_event(event, version)
            out = bridge.event_from_canonical(version, event)
            return (
                b"data: "
                + orjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": out})
                + (b"\n\n")
            )

        def encode_error(exc: A2aError) -> bytes:
            if rest:
                return rest_binding.rest_error_event(exc, version)
            error = bridge.error_for(version, exc)
            return (
                b"data: "
                + orjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": error})
                + (b"\n\n")
            )

        async def chunks() -> AsyncIterator[bytes]:
            if first is None:
                return
            yield encode(first)
            try:
                async for event in events:
                    yield encode(event)
            except A2aError as exc:
                yield encode_error(exc)
            finally:
                await events.aclose()  # type: ignore[attr-defined]

        headers = list(SSE_HEADERS)
        decision = ctx.attrs.get("gateway.a2a.decision")
        if isinstance(decision, Decision):
            headers.append((ROUTE_HEADER, decision.header().encode()))
        await stream_response(receive, send, 200, headers, chunks())

    # -- who serves the call --------------------------------------------------------------

    def _agent(self, name: str) -> Agent:
        agent = self.registry.get(name)
        if agent is None:
            raise A2aError(codes.INVALID_REQUEST, f"no A2A agent {name!r} here", status=404)
        return agent

    def _down(self, name: str) -> A2aError:
        reason = self.registry.down_reason.get(name, "it failed")
        return A2aError(codes.INTERNAL_ERROR, f"agent {name} is unavailable: {reason}", status=502)

    def _capability_router(self) -> Any:
        from crossway.a2a import routing

        agents = [a for a in self.registry.all() if a.card]
        key = tuple(id(a.card) for a in agents)
        if self._router is None or key != self._router_key:
            self._router = routing.CapabilityRouter(agents)
            self._router_key = key
        return self._router

    async def _resolve(
        self, ctx: RequestContext, target: str | None, method: str, params: dict[str, Any]
    ) -> tuple[Agent, Decision | None]:
        """The agent serving this call (the router's pick or the task's owner for router
        calls), after the parsed phase of the route's policies allowed it."""
        decision: Decision | None = None
        skill: str | None = None
        message = params.get("message") if method in SEND_METHODS else None
        if isinstance(message, dict):
            metadata = message.get("metadata")
            if isinstance(metadata, dict):
                value = metadata.get("skillId", metadata.get("crossway/skill"))
                skill = value if isinstance(value, str) else None
        if target is None:
            if not self.config.router.enabled:
                raise A2aError(codes.INVALID_REQUEST, "the router agent is disabled", status=404)
            target = await self._owner(method, params, message)
            if target is None and method in SEND_METHODS and isinstance(message, dict):
                router = self._capability_router()
                candidates = [
                    a.name
                    for a in self.registry.all()
                    if a.up and a.card and visible(ctx, {"a2a": {"agent": a.name}})
                ]
                configuration = params.get("configuration")
                accepted = (
                    configuration.get("acceptedOutputModes")
                    if isinstance(configuration, dict)
                    else None
                )
                decision = router.pick(message, candidates, accepted_output_modes=accepted)
                target, skill = decision.agent, decision.skill
                ctx.attrs["gateway.a2a.decision"] = decision
                log.info("a2a route %s: %s", ctx.request_id, decision.header())
            elif target is None and method == "ListTasks":
                raise A2aError(
                    codes.UNSUPPORTED_OPERATION,
                    "ListTasks through the router needs a contextId; list an agent's tasks at "
                    "its own URL",
                )
            elif target is None and method == "GetExtendedAgentCard":
                raise A2aError(
                    codes.EXTENDED_CARD_NOT_CONFIGURED, "the router has no extended card"
                )
        agent = self._agent(target)  # type: ignore[arg-type]
        ctx.attrs["a2a"] = {"agent": agent.name, "skill": skill, "method": method}
        await parsed(ctx)
        if not agent.up:
            self.registry.recheck(agent.name)
            raise self._down(agent.name)
        return agent, decision

    async def _owner(self, method: str, params: dict[str, Any], message: Any) -> str | None:
        """The owner of the task (or context) a router call is about; unknown task: -32001."""
        task_id: Any = None
        if method in TASK_METHODS:
            task_id = params.get("id")
        elif method in PUSH_METHODS:
            task_id = params.get("taskId")
        elif isinstance(message, dict) and message.get("taskId"):
            task_id = message.get("taskId")
        if task_id is not None:
            owner = await _maybe(self.tracker.owner_of_task(str(task_id)))
            if owner is None or owner not in self.config.agents:
                raise A2aError(codes.TASK_NOT_FOUND, f"task {task_id} not found")
            return str(owner)
        context_id = message.get("contextId") if isinstance(message, dict) else None
        if method == "ListTasks":
            context_id = params.get("contextId")
        if isinstance(context_id, str) and context_id:
            owner = await _maybe(self.tracker.owner_of_context(context_id))
            if owner is not None and owner in self.config.agents:
                return str(owner)
        return None

    # -- calling the agent ----------------------------------------------------------------

    def _interface(self, agent: Agent) -> Interface:
        for binding, version in INTERFACE_PREFERENCE:
            for iface in agent.interfaces:
                if iface.binding == binding and iface.version == version:
                    return iface
        declared = ", ".join(f"{i.binding} {i.version}" for i in agent.interfaces) or "none"
        raise A2aError(
            codes.VERSION_NOT_SUPPORTED,
            f"agent {agent.name} declares no interface Crossway can call (declared: {declared}; "
            "Crossway speaks JSON-RPC and HTTP+JSON in A2A 1.0 and 0.3)",
        )

    def _timeouts(self, agent_config: A2aAgentConfig) -> Timeouts:
        t = agent_config.timeouts or self.config.timeouts
        return Timeouts(connect=t.connect, first_byte=t.call, idle=t.call)

    def _headers(
        self,
        scope: Scope,
        ctx: RequestContext,
        agent_config: A2aAgentConfig,
        version: str,
        *,
        stream: bool,
    ) -> list[tuple[str, str]]:
        headers = [
            ("content-type", "application/json"),
            ("accept", "text/event-stream" if stream else "application/json"),
            ("x-request-id", ctx.request_id),
        ]
        if version == "1.0":
            headers.append(("a2a-version", "1.0"))
        consumed = ctx.attrs.get(CONSUMED_HEADERS) or ()
        for name, value in scope["headers"]:
            if name in FORWARDED_REQUEST_HEADERS and name not in consumed:
                headers.append((name.decode("latin-1"), value.decode("latin-1")))
            elif name == b"authorization" and agent_config.forward_authorization:
                headers.append(("authorization", value.decode("latin-1")))
        own = {k.lower() for k in agent_config.headers}
        headers = [(k, v) for k, v in headers if k not in own]
        headers.extend((k, v.get_secret_value()) for k, v in agent_config.headers.items())
        return headers

    async def _request(
        self,
        scope: Scope,
        ctx: RequestContext,
        agent: Agent,
        method: str,
        params: dict[str, Any],
        *,
        stream: bool,
    ) -> tuple[Interface, Any, Timeouts]:
        """Send the call to the agent; returns once its response headers arrived."""
        from crossway.a2a import bridge, rest

        iface = self._interface(agent)
        agent_config = self.config.agents[agent.name]
        timeouts = self._timeouts(agent_config)
        headers = self._headers(scope, ctx, agent_config, iface.version, stream=stream)
        if iface.binding == "JSONRPC":
            name, out_params = bridge.request_from_canonical(iface.version, method, params)
            rpc_id = ctx.attrs.get(RPC_ID, ctx.request_id)
            body = orjson.dumps(
                {"jsonrpc": "2.0", "id": rpc_id, "method": name, "params": out_params}
            )
            http_method, url = "POST", iface.url
        else:
            http_method, path, query, body = rest.rest_request(iface.version, method, params)
            url = iface.url.rstrip("/") + path + (f"?{query}" if query else "")
        try:
            resp = await client.send(http_method, url, headers, body, timeouts, agent_config.tls)
        except UpstreamTimeout:
            raise A2aError(
                codes.INTERNAL_ERROR, f"agent {agent.name} did not answer in time", status=504
            ) from None
        except UpstreamUnreachable as exc:
            self.registry.mark_down(agent.name, exc.message)
            raise A2aError(
                codes.INTERNAL_ERROR,
                f"agent {agent.name} is unreachable: {exc.message}",
                status=502,
            ) from None
        except GatewayError as exc:
            raise A2aError(
                codes.INTERNAL_ERROR, f"agent {agent.name} failed: {exc.message}", status=502
            ) from None
        return iface, resp, timeouts

    async def _read(self, agent: Agent, resp: Any, timeouts: Timeouts) -> bytes:
        limit = self.config.max_message_bytes
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in client.iter_body(resp, timeouts):
                size += len(chunk)
                if size > limit:
                    raise A2aError(
                        codes.INVALID_AGENT_RESPONSE,
                        f"agent {agent.name} answered more than {limit} bytes",
                    )
                parts.append(chunk)
        except UpstreamTimeout:
            raise A2aError(
                codes.INTERNAL_ERROR, f"agent {agent.name} stopped answering", status=504
            ) from None
        except UpstreamError as exc:
            raise A2aError(
                codes.INTERNAL_ERROR, f"agent {agent.name}: {exc.message}", status=502
            ) from None
        return b"".join(parts)

    def _rpc_answer(
        self, agent: Agent, iface: Interface, method: str, status: int, raw: bytes
    ) -> Any:
        """The canonical result of a JSON-RPC answer; its error raised as `A2aError`."""
        from crossway.a2a import bridge

        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
            if status >= 400:
                raise A2aError(
                    codes.INTERNAL_ERROR, f"agent {agent.name} answered HTTP {status}", status=502
                )
            raise A2aError(
                codes.INVALID_AGENT_RESPONSE,
                f"agent {agent.name} answered something that is not a JSON-RPC response",
            )
        if "error" in answer:
            raise _agent_error(agent, answer["error"])
        try:
            return bridge.result_to_canonical(iface.version, method, answer["result"])
        except A2aError:
            raise
        except Exception:
            raise A2aError(
                codes.INVALID_AGENT_RESPONSE,
                f"agent {agent.name} answered a result that is not a valid {method} result",
            ) from None

    async def _call(
        self,
        scope: Scope,
        ctx: RequestContext,
        agent: Agent,
        method: str,
        params: dict[str, Any],
        decision: Decision | None,
    ) -> Any:
        """One non-streamed call: the canonical result (ownership recorded, the route decision
        in the task's metadata)."""
        from crossway.a2a import rest

        iface, resp, timeouts = await self._request(scope, ctx, agent, method, params, stream=False)
        raw = await self._read(agent, resp, timeouts)
        if iface.binding == "JSONRPC":
            result = self._rpc_answer(agent, iface, method, resp.status, raw)
        else:
            result = rest.rest_response_to_canonical(iface.version, method, resp.status, raw)
        if method in SEND_METHODS or method in TASK_METHODS:
            _mark(result, decision)
            await self._observe(agent.name, result)
        elif method == "ListTasks" and isinstance(result, dict):
            for task in result.get("tasks") or []:
                await self._observe(agent.name, {"task": task})
        return result

    async def _observe(self, agent: str, item: Any) -> None:
        try:
            await _maybe(self.tracker.observe(agent, item))
        except Exception:  # ownership is best effort; the caller still gets the answer
            log.exception("a2a: recording task ownership failed")

    async def _stream(
        self,
        scope: Scope,
        ctx: RequestContext,
        agent: Agent,
        method: str,
        params: dict[str, Any],
        decision: Decision | None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The agent's stream as canonical events, one by one; a stream that breaks or ends
        before its task settled raises `A2aError` (the caller turns it into an error event)."""
        from crossway.a2a import rest

        iface, resp, timeouts = await self._request(scope, ctx, agent, method, params, stream=True)
        content_type = resp.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raw = await self._read(agent, resp, timeouts)
            if iface.binding == "JSONRPC":
                result = self._rpc_answer(agent, iface, method, resp.status, raw)
            else:
                result = rest.rest_response_to_canonical(iface.version, method, resp.status, raw)
            _mark(result, decision)
            await self._observe(agent.name, result)
            yield result
            return
        parser = SSEParser(self.config.max_message_bytes)
        settled = False
        try:
            async for chunk in client.iter_body(resp, timeouts):
                for name, data in parser.feed(chunk):
                    event = self._event(agent, iface, name, data)
                    settled = _settled(event)
                    _mark(event, decision)
                    await self._observe(agent.name, event)
                    yield event
            for name, data in parser.close():
                event = self._event(agent, iface, name, data)
                settled = _settled(event)
                await self._observe(agent.name, event)
                yield event
        except UpstreamTimeout:
            raise A2aError(
                codes.INTERNAL_ERROR, f"agent {agent.name}'s stream went silent", status=504
            ) from None
        except UpstreamError as exc:
            raise A2aError(
                codes.INTERNAL_ERROR,
                f"agent {agent.name}'s stream broke off: {exc.message}",
                status=502,
            ) from None
        finally:
            resp.release()
        if not settled:
            raise A2aError(
                codes.INTERNAL_ERROR,
                f"agent {agent.name}'s stream ended before the task finished",
                status=502,
            )

    def _event(self, agent: Agent, iface: Interface, name: bytes, data: bytes) -> dict[str, Any]:
        from crossway.a2a import bridge, rest

        if iface.binding != "JSONRPC":
            return rest.rest_event_to_canonical(iface.version, name.decode("latin-1"), data)
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
            raise A2aError(
                codes.INVALID_AGENT_RESPONSE,
                f"agent {agent.name} streamed an event that is not a JSON-RPC response",
            )
        if "error" in answer:
            raise _agent_error(agent, answer["error"])
        try:
            event: dict[str, Any] = bridge.event_to_canonical(iface.version, answer["result"])
        except A2aError:
            raise
        except Exception:
            raise A2aError(
                codes.INVALID_AGENT_RESPONSE,
                f"agent {agent.name} streamed an event that is not a valid A2A event",
            ) from None
        return event


def _agent_error(agent: Agent, error: Any) -> A2aError:
    """An agent's JSON-RPC error member as an `A2aError` (passed on with its code)."""
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return A2aError(
            codes.INVALID_AGENT_RESPONSE, f"agent {agent.name} answered a malformed error"
        )
    message = error.get("message")
    return A2aError(
        error["code"], message if isinstance(message, str) else "error", error.get("data")
    )


def _settled(event: Any) -> bool:
    """Whether a canonical stream event ends the stream legitimately."""
    if not isinstance(event, dict):
        return False
    if "message" in event:
        return True
    inner = event.get("task") or event.get("statusUpdate")
    if isinstance(inner, dict):
        status = inner.get("status")
        if isinstance(status, dict):
            return status.get("state") in SETTLED_STATES
    return False


def _mark(result: Any, decision: Decision | None) -> None:
    """Put the router's decision into the task's metadata (`crossway/route`)."""
    if decision is None or not isinstance(result, dict):
        return
    task = result.get("task")
    if isinstance(task, dict):
        metadata = task.get("metadata")
        if not isinstance(metadata, dict):
            metadata = task["metadata"] = {}
        metadata[ROUTE_METADATA] = {
            "agent": decision.agent,
            "skill": decision.skill,
            "reason": decision.reason,
            "score": decision.score,
        }


__all__ = ["A2aBackend", "client_version"]
