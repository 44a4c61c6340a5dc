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
(`crossway.a2a.upstream`: JSON-RPC preferred, REST when that is all it has).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Final
from urllib.parse import parse_qs

import orjson

from crossway.a2a import cards
from crossway.a2a import errors as codes
from crossway.a2a import guard as a2a_guard
from crossway.a2a.decisions import RouteDecisions, decision_path, result_task_id
from crossway.a2a.errors import A2aError
from crossway.a2a.model import STREAMING_METHODS, Agent, Decision, Version
from crossway.a2a.registry import AgentRegistry
from crossway.a2a.tasks import TaskTracker, caller_of
from crossway.a2a.upstream import (
    CLIENT_BINDING,
    HOP_SPAN,
    RPC_ID,
    SEND_METHODS,
    TASK_METHODS,
    AgentCaller,
)
from crossway.config.a2a import A2aBackendConfig
from crossway.config.models import Config
from crossway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    InvalidJSON,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
)
from crossway.policy import parsed, visible
from crossway.policy.guardrails import guarded
from crossway.server.asgi import (
    SSE_HEADERS,
    header_text,
    read_body,
    send_response,
    stream_response,
)
from crossway.server.backend import Backend, ErrorResponse, error_headers
from crossway.server.context import RequestContext
from crossway.telemetry import tracing
from crossway.telemetry.metrics_mcp_a2a import observe_authorization_denial
from crossway.telemetry.request_log import GUARD_DECISIONS, note_request, note_response
from crossway.types import Receive, Scope, Send

log = logging.getLogger("crossway.a2a")

BINDING: Final = CLIENT_BINDING
"""`ctx.attrs` key: `REST` when the request came over HTTP+JSON (errors take its shape)."""
VERSION: Final = "gateway.a2a.version"
"""`ctx.attrs` key: the client's protocol version ("1.0" or "0.3")."""
DECISION: Final = "gateway.a2a.decision"
"""`ctx.attrs` key: the router's `Decision` for this request."""
CARD_PATHS: Final = frozenset({"/.well-known/agent-card.json", "/.well-known/agent.json"})
ROUTE_HEADER: Final = b"x-crossway-route"
JSON_HEADERS: Final = [(b"content-type", b"application/json")]
PUSH_METHODS: Final = frozenset(
    {
        "CreateTaskPushNotificationConfig",
        "GetTaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs",
        "DeleteTaskPushNotificationConfig",
    }
)
ROUTER_REST_WORDS: Final = frozenset({"tasks", "v1", "extendedAgentCard", "card"})
"""First path segments of REST routes on the router (`P/tasks/{id}`, `P/v1/...`)."""


def route_header(decision: Decision) -> bytes:
    """The `x-crossway-route` value of a decision, safe as an HTTP header and a log line: skill
    ids come from agent cards, so anything outside printable ASCII is percent-encoded."""
    text = decision.header()
    return "".join(
        c if " " <= c <= "~" and c != "%" else "".join(f"%{b:02X}" for b in c.encode())
        for c in text
    ).encode("ascii")


def _version(ctx: RequestContext) -> Version:
    """The client's version recorded for this request (1.0 until known)."""
    return "0.3" if ctx.attrs.get(VERSION) == "0.3" else "1.0"


def client_version(scope: Scope) -> Version | None:
    """The `A2A-Version` header as "1.0" / "0.3", None when absent or empty (which means
    0.3 unless the method name says otherwise); a version nobody speaks raises -32009."""
    raw = header_text(scope, b"a2a-version")
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
    if isinstance(exc, RateLimited):
        return codes.RATE_LIMITED
    return codes.INTERNAL_ERROR


class A2aBackend(Backend):
    """Serves A2A clients from the configured agents."""

    parses = True

    def __init__(self, name: str, config: A2aBackendConfig, root: Config) -> None:
        self.name = name
        self.config = config
        self.root = root
        self.registry = AgentRegistry(config)
        self.tracker = TaskTracker.from_config(name, config)
        self.decisions = RouteDecisions(name, decision_path(config))
        self.caller = AgentCaller(config, self.registry, self.tracker)
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
        await self.tracker.start()
        await self.decisions.start()
        await self.registry.start()

    async def close(self) -> None:
        await self.registry.close()
        await self.decisions.close()
        await self.tracker.close()

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
            elif ":" in head or head in ROUTER_REST_WORDS:
                target, rest_path = None, rel
            else:
                ctx.attrs[BINDING] = (
                    "JSONRPC" if method == "POST" and "/" not in rel[1:] else "REST"
                )
                raise A2aError(codes.INVALID_REQUEST, f"no A2A agent {head!r} here", status=404)
        if target is not None and not visible(ctx, {"a2a": {"agent": target}}):
            # the route's authorization hides this agent from the caller: refused as unknown
            observe_authorization_denial("authorization", ctx.route, "a2a")
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
            if version is None and not agent.legacy_card:
                version = "1.0"  # serve what the agent serves: a plain v1.0 card
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
        note_request(raw)  # the request log (telemetry.request_log), when on
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
        answered = await self._call(scope, receive, send, ctx, target, method, cparams, rest=False)
        if answered is not None:
            result, headers = answered
            body = {"jsonrpc": "2.0", "id": rpc_id, "result": self._out(version, method, result)}
            note_response(body)
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
            note_request(body)
        query = scope.get("query_string", b"")
        method, cparams = rest.parse_rest(version, http_method, path, query, body)
        answered = await self._call(scope, receive, send, ctx, target, method, cparams, rest=True)
        if answered is not None:
            result, headers = answered
            status, out = rest.rest_result(method, result, version)
            note_response(out)
            await send_response(send, status, out, headers)

    async def _call(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        target: str | None,
        method: str,
        params: dict[str, Any],
        *,
        rest: bool,
    ) -> tuple[Any, list[tuple[bytes, bytes]]] | None:
        """One canonical call, whichever binding it came on: resolve the agent (policies,
        router, ownership) and call it. A stream is written out here (None is returned); a
        result comes back with the response headers for the binding to render. While tracing
        is on, the call is one span (the agent hop) covering the stream to its end."""
        if not tracing.enabled():
            return await self._call_agent(scope, receive, send, ctx, target, method, params, rest)
        with tracing.span(f"a2a {method}") as span:
            if span is not None:
                ctx.attrs[HOP_SPAN] = span
                span.set_attribute("a2a.method", method)
                span.set_attribute("a2a.binding", "REST" if rest else "JSONRPC")
            try:
                return await self._call_agent(
                    scope, receive, send, ctx, target, method, params, rest
                )
            finally:
                ctx.attrs.pop(HOP_SPAN, None)

    async def _call_agent(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        target: str | None,
        method: str,
        params: dict[str, Any],
        rest: bool,
    ) -> tuple[Any, list[tuple[bytes, bytes]]] | None:
        agent, decision = await self._resolve(ctx, target, method, params)
        span = ctx.attrs.get(HOP_SPAN)
        if span is not None:
            span.set_attribute("a2a.agent", agent.name)
            skill = ctx.attrs["a2a"].get("skill")
            if skill:
                span.set_attribute("a2a.skill", skill)
            if decision is not None:
                span.set_attribute("a2a.route.reason", decision.reason)
        headers = [*JSON_HEADERS]
        if decision is not None:
            headers.append((ROUTE_HEADER, route_header(decision)))
        guarding = guarded(ctx)
        if guarding:  # guardrails: the message sent (masked in place, or refused)
            try:
                await a2a_guard.guard_params(ctx, method, params)
            finally:
                if ctx.attrs.get(GUARD_DECISIONS):  # the request log keeps it guarded, not raw
                    note_request({"method": method, "params": params})
        if method in STREAMING_METHODS:
            if decision is not None:
                self._note_decision(ctx, decision, params, None)
            events = self.caller.stream(scope, ctx, agent, method, params, decision)
            if guarding:  # guardrails: each event, whole
                events = a2a_guard.guard_events(ctx, events)
            await self._write_stream(receive, send, ctx, events, _version(ctx), rest=rest)
            return None
        result: Any = None
        try:
            result = await self.caller.call(scope, ctx, agent, method, params, decision)
        finally:
            if decision is not None:
                self._note_decision(ctx, decision, params, result_task_id(result))
        if guarding:  # guardrails: the messages, statuses and artifacts returned
            result = await a2a_guard.guard_result(ctx, method, result)
        if method == "GetExtendedAgentCard":
            result = self._rewrite_card(scope, ctx, agent.name, result)
        return result, headers

    def _note_decision(
        self,
        ctx: RequestContext,
        decision: Decision,
        params: dict[str, Any],
        task_id: str | None,
    ) -> None:
        """Keep the router's pick for the admin plane (`crossway.a2a.decisions`)."""
        message = params.get("message")
        self.decisions.record(
            decision,
            message if isinstance(message, dict) else {},
            request_id=ctx.request_id,
            route=ctx.route,
            task_id=task_id,
        )

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
        decision = ctx.attrs.get(DECISION)
        if isinstance(decision, Decision):
            headers.append((ROUTE_HEADER, route_header(decision)))
        await stream_response(receive, send, 200, headers, chunks())

    # -- who serves the call --------------------------------------------------------------

    def _agent(self, name: str) -> Agent:
        agent = self.registry.get(name)
        if agent is None:
            raise A2aError(codes.INVALID_REQUEST, f"no A2A agent {name!r} here", status=404)
        return agent

    def _down(self, name: str) -> A2aError:
        reason = self.caller.redact(name, self.registry.down_reason.get(name, "it failed"))
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
        followed: str | None = None
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
            followed = target
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
                ctx.attrs[DECISION] = decision
                log.info("a2a route %s: %s", ctx.request_id, route_header(decision).decode())
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
        if decision is None and skill is not None:
            skill = self._own_skill(agent, skill)
        ctx.attrs["a2a"] = {"agent": agent.name, "skill": skill, "method": method}
        try:
            await parsed(ctx)
        except Forbidden:
            if followed is None or decision is not None:
                raise
            # a router follow-up to an agent the caller may not call: say no more than for an
            # unknown task (never which agent owns it)
            asked = params.get("id") if method in TASK_METHODS else params.get("taskId")
            if asked is None and isinstance(message, dict):
                asked = message.get("taskId") or message.get("contextId")
            raise A2aError(codes.TASK_NOT_FOUND, f"task {asked} not found") from None
        await self._check_caller(ctx, method, params, message)
        if not agent.up:
            self.registry.recheck(agent.name)
            raise self._down(agent.name)
        return agent, decision

    async def _check_caller(
        self, ctx: RequestContext, method: str, params: dict[str, Any], message: Any
    ) -> None:
        """A follow-up (get, cancel, subscribe, push config, a message continuing a task or a
        context) only for the caller that created the task or context through Crossway; for
        anyone else it is an unknown task (-32001), saying nothing more."""
        callers = self.tracker.callers
        if callers is None:
            return
        task_id: Any = None
        context_id: Any = None
        if method in TASK_METHODS:
            task_id = params.get("id")
        elif method in PUSH_METHODS:
            task_id = params.get("taskId")
        elif isinstance(message, dict):
            task_id = message.get("taskId") or None
            context_id = message.get("contextId") or None
        if not isinstance(task_id, str):
            task_id = None
        if not isinstance(context_id, str):
            context_id = None
        if task_id is None and context_id is None:
            return
        caller = caller_of(ctx.identity)
        if not await callers.allows(caller, task_id=task_id, context_id=context_id):
            raise A2aError(codes.TASK_NOT_FOUND, f"task {task_id or context_id} not found")

    def _own_skill(self, agent: Agent, skill: str) -> str:
        """The agent's own id of a skill a message names explicitly (its id, or the router's
        `agent/skill` id): what `a2a.skill` policies see. A skill the agent does not have is
        -32602, so a caller cannot put any name it likes before the policies."""
        from crossway.a2a import routing

        for item in agent.skills:
            own = item.get("id")
            if (
                isinstance(own, str)
                and own
                and skill in (own, routing.routed_skill_id(agent.name, own))
            ):
                return own
        raise A2aError(
            codes.INVALID_PARAMS,
            f"agent {agent.name} has no skill {skill!r}",
            {"skillId": skill},
        )

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
            owner = await self.tracker.owner_of_task(str(task_id))
            if owner is None or owner not in self.config.agents:
                raise A2aError(codes.TASK_NOT_FOUND, f"task {task_id} not found")
            return str(owner)
        context_id = message.get("contextId") if isinstance(message, dict) else None
        if method == "ListTasks":
            context_id = params.get("contextId")
        if isinstance(context_id, str) and context_id:
            owner = await self.tracker.owner_of_context(context_id)
            if owner is not None and owner in self.config.agents:
                return str(owner)
        return None


__all__ = ["A2aBackend", "client_version"]
