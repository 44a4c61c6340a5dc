"""`AgentCaller`: calls one A2A agent in its own version and binding, for the backend.

JSON-RPC is preferred (v1.0, then v0.3), HTTP+JSON (REST, `crossway.a2a.rest`) when that is
all the agent declares. Requests go out through the pooled hot-path client
(`crossway.proxy.client.send`, per-agent TLS, headers and timeouts); answers are read capped at
`max_message_bytes`, streams parsed event by event with the shared capped SSE parser and turned
into canonical (v1.0) results and events. Every failure becomes an `A2aError`: unreachable
(the agent is marked down) and broken answers -32603 with HTTP 502, timeouts -32603 with 504,
garbage -32006, and a stream that breaks or ends before its task settled raises at that point
(the backend sends it as a final error event). Ownership of every task seen is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson

from crossway.a2a import errors as codes
from crossway.a2a.errors import A2aError
from crossway.a2a.model import Agent, Decision, Interface
from crossway.a2a.registry import AgentRegistry
from crossway.a2a.tasks import TaskTracker, caller_of, task_facts
from crossway.config.a2a import A2aAgentConfig, A2aBackendConfig
from crossway.config.common import Timeouts
from crossway.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from crossway.proxy import client
from crossway.proxy.sse import SSEParser
from crossway.server.context import CONSUMED_HEADERS, RequestContext
from crossway.telemetry import tracing
from crossway.telemetry.metrics_mcp_a2a import observe_a2a_call
from crossway.types import Scope

log = logging.getLogger("crossway.a2a")

RPC_ID: Final = "gateway.a2a.rpc_id"
"""`ctx.attrs` key: the JSON-RPC id of the request (errors echo it; the agent gets it too)."""
ROUTE_METADATA: Final = "crossway/route"
"""Task metadata key holding the router's decision."""
TASK_METHODS: Final = frozenset({"GetTask", "CancelTask", "SubscribeToTask"})
SEND_METHODS: Final = frozenset({"SendMessage", "SendStreamingMessage"})
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
"""Which of an agent's interfaces Crossway calls, best first."""
CLIENT_BINDING: Final = "gateway.a2a.binding"
"""`ctx.attrs` key (set by the backend): the binding the client used, `JSONRPC` or `REST`."""
FORWARDED_REQUEST_HEADERS: Final = frozenset({b"a2a-extensions", b"x-a2a-extensions"})
"""Client headers handed on to the agent (A2A extension negotiation)."""
HOP_SPAN: Final = "gateway.a2a.span"
"""`ctx.attrs` key (set by the backend while tracing is on): the span of this agent hop, which
the answers' task id, task state and context id are noted on."""


class AgentCaller:
    """Calls the agents of one backend."""

    def __init__(
        self, config: A2aBackendConfig, registry: AgentRegistry, tracker: TaskTracker
    ) -> None:
        self.config = config
        self.registry = registry
        self.tracker = tracker

    def interface(self, agent: Agent, client_binding: str | None = None) -> Interface:
        """The interface to call: the client's own binding when the agent has it (a REST
        client's call stays REST, so binding-specific answers such as HTTP statuses are the
        agent's own), else the first of `INTERFACE_PREFERENCE` the agent declares."""
        preference: tuple[tuple[str, str], ...] = INTERFACE_PREFERENCE
        if client_binding is not None:
            preference = tuple(
                sorted(INTERFACE_PREFERENCE, key=lambda item: item[0] != client_binding)
            )
        for binding, version in preference:
            for iface in agent.interfaces:
                if iface.binding == binding and iface.version == version:
                    return iface
        declared = ", ".join(f"{i.binding} {i.version}" for i in agent.interfaces) or "none"
        raise A2aError(
            codes.VERSION_NOT_SUPPORTED,
            f"agent {agent.name} declares no interface Crossway can call (declared: {declared}; "
            "Crossway speaks JSON-RPC and HTTP+JSON in A2A 1.0 and 0.3)",
        )

    def redact(self, name: str, text: str) -> str:
        """`text` (an error about agent `name`) without the agent's host: clients only ever
        see Crossway's URLs for an agent (the full reason is in the log)."""
        hosts = set()
        agent_config = self.config.agents.get(name)
        if agent_config is not None and agent_config.url is not None:
            hosts.add(client.url_host(str(agent_config.url)))
        agent = self.registry.get(name)
        if agent is not None:
            hosts.update(client.url_host(i.url) for i in agent.interfaces)
        for host in hosts:
            if host:
                text = text.replace(f" from {host}", "").replace(f" ({host})", "")
                text = text.replace(host, "the agent")
        return text

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
            elif (
                name == b"authorization"
                and agent_config.forward_authorization
                and name not in consumed  # a credential Crossway's own policy checked stays here
            ):
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

        used = ctx.attrs.get(CLIENT_BINDING)
        iface = self.interface(agent, "HTTP+JSON" if used == "REST" else used)
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
            if tracing.enabled():
                resp = await self._send_traced(
                    agent, method, iface, http_method, url, headers, body, timeouts, agent_config
                )
            else:
                resp = await client.send(
                    http_method, url, headers, body, timeouts, agent_config.tls
                )
        except UpstreamTimeout:
            raise A2aError(
                codes.INTERNAL_ERROR, f"agent {agent.name} did not answer in time", status=504
            ) from None
        except UpstreamUnreachable as exc:
            self.registry.mark_down(agent.name, exc.message)
            raise A2aError(
                codes.INTERNAL_ERROR,
                f"agent {agent.name} is unreachable: {self.redact(agent.name, exc.message)}",
                status=502,
            ) from None
        except GatewayError as exc:
            reason = self.redact(agent.name, exc.message)
            raise A2aError(
                codes.INTERNAL_ERROR, f"agent {agent.name} failed: {reason}", status=502
            ) from None
        return iface, resp, timeouts

    async def _send_traced(
        self,
        agent: Agent,
        method: str,
        iface: Interface,
        http_method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeouts: Timeouts,
        agent_config: A2aAgentConfig,
    ) -> Any:
        """`client.send` inside a CLIENT span (current while the request goes out, so the
        agent gets its `traceparent`), ended when the response headers arrived."""
        with tracing.span(f"a2a {method} {agent.name}", kind="client") as span:
            if span is not None:
                span.set_attribute("a2a.method", method)
                span.set_attribute("a2a.agent", agent.name)
                span.set_attribute("a2a.binding", iface.binding)
                span.set_attribute("a2a.protocol.version", iface.version)
                span.set_attribute("http.request.method", http_method)
                host = client.url_host(url)
                if host:
                    span.set_attribute("server.address", host)
            resp = await client.send(http_method, url, headers, body, timeouts, agent_config.tls)
            if span is not None:
                span.set_attribute("http.response.status_code", resp.status)
            return resp

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
            reason = self.redact(agent.name, exc.message)
            raise A2aError(
                codes.INTERNAL_ERROR, f"agent {agent.name}: {reason}", status=502
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

    async def call(
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
        started = time.perf_counter()
        failed = True
        try:
            result = await self._call(scope, ctx, agent, method, params, decision)
            failed = False
            return result
        finally:
            observe_a2a_call(agent.name, method, time.perf_counter() - started, failed)

    async def _call(
        self,
        scope: Scope,
        ctx: RequestContext,
        agent: Agent,
        method: str,
        params: dict[str, Any],
        decision: Decision | None,
    ) -> Any:
        from crossway.a2a import rest

        iface, resp, timeouts = await self._request(scope, ctx, agent, method, params, stream=False)
        raw = await self._read(agent, resp, timeouts)
        if iface.binding == "JSONRPC":
            result = self._rpc_answer(agent, iface, method, resp.status, raw)
        else:
            result = rest.rest_response_to_canonical(iface.version, method, resp.status, raw)
        if method in SEND_METHODS or method in TASK_METHODS:
            _mark(result, decision)
            await self._observe(agent.name, result, ctx if method in SEND_METHODS else None)
            _note_task(ctx, result)
        elif method == "ListTasks" and isinstance(result, dict):
            for task in result.get("tasks") or []:
                await self._observe(agent.name, {"task": task})
            result = await self._callers_tasks(ctx, result)
        return result

    async def _observe(self, agent: str, item: Any, ctx: RequestContext | None = None) -> None:
        """Record what an answer says about tasks; with `ctx` (an answer to the caller's own
        message), also that this caller created them."""
        try:
            await self.tracker.observe(agent, item)
            callers = self.tracker.callers
            if ctx is not None and callers is not None:
                await callers.bind(caller_of(ctx.identity), item)
        except Exception:  # ownership is best effort; the caller still gets the answer
            log.exception("a2a: recording task ownership failed")

    async def _callers_tasks(self, ctx: RequestContext, result: dict[str, Any]) -> dict[str, Any]:
        """A `ListTasks` answer without the tasks other callers created through Crossway (the
        agent sees one user behind Crossway, so it would list everyone's)."""
        callers = self.tracker.callers
        tasks = result.get("tasks")
        if callers is None or not isinstance(tasks, list):
            return result
        caller = caller_of(ctx.identity)
        mine = [
            task
            for task in tasks
            if isinstance(task, dict)
            and isinstance(task.get("id"), str)
            and await callers.allows(caller, task_id=task["id"])
        ]
        filtered = {**result, "tasks": mine}
        if "totalSize" in filtered:
            filtered["totalSize"] = len(mine)
        return filtered

    async def stream(
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
        started = time.perf_counter()
        failed = True
        events = self._stream(scope, ctx, agent, method, params, decision)
        try:
            async for event in events:
                _note_task(ctx, event)
                yield event
            failed = False
        except (GeneratorExit, asyncio.CancelledError):
            failed = False  # the caller went away: not the agent's failure
            raise
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            observe_a2a_call(agent.name, method, time.perf_counter() - started, failed)

    async def _stream(
        self,
        scope: Scope,
        ctx: RequestContext,
        agent: Agent,
        method: str,
        params: dict[str, Any],
        decision: Decision | None,
    ) -> AsyncIterator[dict[str, Any]]:
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
            await self._observe(agent.name, result, ctx if method in SEND_METHODS else None)
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
                    await self._observe(agent.name, event, ctx if method in SEND_METHODS else None)
                    yield event
            for name, data in parser.close():
                event = self._event(agent, iface, name, data)
                settled = _settled(event)
                await self._observe(agent.name, event, ctx if method in SEND_METHODS else None)
                yield event
        except UpstreamTimeout:
            raise A2aError(
                codes.INTERNAL_ERROR, f"agent {agent.name}'s stream went silent", status=504
            ) from None
        except UpstreamError as exc:
            raise A2aError(
                codes.INTERNAL_ERROR,
                f"agent {agent.name}'s stream broke off: {self.redact(agent.name, exc.message)}",
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


def _note_task(ctx: RequestContext, result: Any) -> None:
    """Note the task an answer is about (id, state, context) on this hop's span."""
    span = ctx.attrs.get(HOP_SPAN)
    if span is None:
        return
    for fact in task_facts(result):
        if fact.task_id is not None:
            span.set_attribute("a2a.task.id", fact.task_id)
        if fact.context_id is not None:
            span.set_attribute("a2a.context.id", fact.context_id)
        if fact.state is not None:
            span.set_attribute("a2a.task.state", fact.state)
        return


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


__all__ = ["ROUTE_METADATA", "RPC_ID", "AgentCaller"]
