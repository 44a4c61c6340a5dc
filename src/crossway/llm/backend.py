"""The `type: llm` backend: OpenAI- and Anthropic-compatible endpoints in front of the providers.

    POST /v1/chat/completions        OpenAI Chat (bytes pass through to OpenAI-style providers)
    POST /v1/messages                Anthropic Messages (bytes pass through to Anthropic)
    POST /v1/messages/count_tokens   Anthropic token count (estimated)
    POST /v1/responses               OpenAI Responses (translated to and from chat)
    POST /v1/embeddings              OpenAI Embeddings (every provider with an embeddings API)
    GET  /v1/models[/{id}]           the configured model names

This module is the request path shared by every endpoint: routing, attempts, streams, usage.
What a client asked is decoded in `crossway.llm.calls`; the endpoints with their own rules live
in `embeddings`, `models` and `token_count`; answers are converted in `answers`.

One request: decode what routing needs (for OpenAI Chat only `{model, stream}`), resolve the
model (`crossway.llm.routing`), rank its deployments, then try them -- failover is immediate,
retries wait with back-off and honour `Retry-After` -- until one answers. A stream is committed
to a deployment once its first chunk arrived: failover never happens after the client got a byte.
The answer is turned into the client's format by `crossway.llm.answers`; usage and cost go to
`ctx.attrs["llm.usage"]` / `["llm.cost"]` and to the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from crossway.config.common import Timeouts
from crossway.config.llm import LlmBackendConfig
from crossway.errors import (
    BadRequest,
    GatewayError,
    InvalidJSON,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from crossway.inference.pool import InferencePool
from crossway.inference.scheduler import Decision, PickRequest, prompt_text
from crossway.inference.state import Endpoint
from crossway.llm import answers
from crossway.llm.calls import (
    EMBEDDINGS,
    LlmCall,
    chat_call,
    messages_call,
    responses_call,
)
from crossway.llm.embeddings import (
    embeddings_call,
    embeddings_plan,
)
from crossway.llm.enrichment import enrich
from crossway.llm.errors import render_anthropic_error, render_openai_error
from crossway.llm.guard import guard_body, guard_request, guard_stream
from crossway.llm.models import send_models
from crossway.llm.pricing import Price, PriceTable
from crossway.llm.providers import build_provider
from crossway.llm.providers.base import Provider
from crossway.llm.providers.pool import POOL_BASE
from crossway.llm.routing import (
    Deployment,
    ModelRouter,
    Resolved,
    backoff,
    estimate_prompt_tokens,
    is_retryable,
    retry_after,
)
from crossway.llm.spans import attempt_span, end_attempt_span, stream_ended
from crossway.llm.token_count import send_token_count
from crossway.llm.upstream import answer_body, read_answer, upstream_request
from crossway.llm.usage import Usage
from crossway.policy.guardrails import guarded
from crossway.proxy import client
from crossway.server.asgi import (
    JSON_HEADERS,
    SSE_HEADERS,
    ClientDisconnected,
    LastChunk,
    read_body,
    send_response,
    stream_response,
)
from crossway.server.backend import Backend, ErrorResponse
from crossway.server.context import RequestContext
from crossway.telemetry import metrics, tracing
from crossway.telemetry.request_log import note_request, note_response, tap_stream
from crossway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from crossway.llm.cache import LlmCache

log = logging.getLogger("crossway.llm")

CONTEXT_LENGTH_EXCEEDED: Final = "context_length_exceeded"
DEADLINE_EXCEEDED: Final = "deadline_exceeded"
BYTES_PER_TOKEN: Final = 4
"""The request-side token estimate token limits reserve: body bytes / 4."""
STATIC_PLANS_MAX: Final = 1024
"""Model names whose fixed plan a backend keeps (wildcards could name any number)."""


@dataclass(slots=True)
class Answer:
    """A deployment's successful answer, before anything was sent to the client."""

    deployment: Deployment
    resolved: Resolved
    body: bytes = b""
    usage: Usage | None = None
    chunks: AsyncIterator[bytes] | None = None
    relay: answers.Relay | None = None
    first: bytes = b""
    relaying: bool = False  # the client's stream started (it now owns the upstream response)
    first_at: float = 0.0  # time.perf_counter() when a stream's first chunk arrived
    span: Any = None  # the attempt's span (tracing on), ended when the stream ends
    pick: PoolPick | None = None  # the inference-pool endpoint serving it, when a pool did

    def release(self) -> None:
        """The answer is complete (or abandoned): it no longer counts as in flight."""
        self.deployment.health.in_flight -= 1
        if self.pick is not None:
            self.pick.pool.done(self.pick.endpoint, self.pick.request)


@dataclass(slots=True)
class PoolPick:
    """Which endpoint of an inference pool serves a request, and why."""

    pool: InferencePool
    endpoint: Endpoint
    request: PickRequest
    decision: Decision


class LlmBackend(Backend):
    """Serves the LLM APIs from the configured providers."""

    parses = True  # runs the policy chain's parsed phase once the model is known

    def __init__(self, name: str, config: LlmBackendConfig, max_body_bytes: int) -> None:
        self.name = name
        self.config = config
        self.max_body_bytes = max_body_bytes
        self.providers: dict[str, Provider] = {
            pname: build_provider(pname, pcfg, max_event_bytes=config.max_event_bytes)
            for pname, pcfg in config.providers.items()
        }
        self.router = ModelRouter(config, self.providers)
        for provider in self.providers.values():
            if provider.pool is not None:
                provider.pool.failures_to_cool = config.routing.cooldown.failures
        # Plans that never change (one deployment, no context windows or fallbacks), by the
        # client's model name: such a request resolves and ranks nothing.
        self._static_plans: dict[str, tuple[Resolved, list[list[tuple[Resolved, Deployment]]]]] = {}
        # Whether the deadline outlasts any single attempt: then first attempts need no timer.
        self._first_attempt_uncapped = config.routing.deadline >= max(
            _bound(t)
            for t in [
                *(p.timeouts for p in config.providers.values()),
                *(m.timeouts for m in config.models if m.timeouts is not None),
            ]
        )
        self.prices = PriceTable(
            {name: Price(**p.model_dump()) for name, p in config.prices.items()}
        )
        self.cache: LlmCache | None = None  # cache: built from config.cache when configured
        if config.cache is not None:  # cache: (imported only when configured)
            from crossway.llm.cache import LlmCache

            self.cache = LlmCache(self, config.cache)

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()
        redis_url = self.config.routing.cooldown.redis_url
        if redis_url:
            from crossway.llm.shared_cooldown import SharedCooldown  # only when configured

            shared = SharedCooldown(redis_url, self.name, self.router.health_table)
            await shared.start()
            self.router.shared = shared
        if self.cache is not None:  # cache: the embedding model, Redis
            await self.cache.start()

    async def close(self) -> None:
        if self.cache is not None:  # cache
            await self.cache.close()
        if self.router.shared is not None:
            await self.router.shared.close()
            self.router.shared = None
        for provider in self.providers.values():
            await provider.close()

    def render_error(self, exc: GatewayError, scope: Scope, ctx: RequestContext) -> ErrorResponse:
        if _is_messages_path(ctx.path):
            return render_anthropic_error(exc)
        return render_openai_error(exc)

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        try:
            await self._dispatch(scope, receive, send, ctx)
        except (GatewayError, ClientDisconnected, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug must not become a traceback for the client
            log.exception("llm backend %s: unexpected error", self.name)
            raise GatewayError("internal error in the gateway", code="internal_error") from exc

    async def _dispatch(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        path = ctx.path.rstrip("/")
        method = scope["method"]
        if path.endswith("/models") or "/models/" in path:
            if method != "GET":
                raise MethodNotAllowed("use GET for /v1/models")
            model_id = path.split("/models/", 1)[1] if "/models/" in path else None
            await send_models(
                send,
                self.name,
                self.router,
                self.providers,
                bool(self.config.models),
                model_id,
                self.config.max_response_bytes,
                _authorizer(ctx),
                _lister(ctx),
            )
            return
        if method != "POST":
            raise MethodNotAllowed(f"use POST for {path}")
        raw = await read_body(scope, receive, ctx.max_body_bytes or self.max_body_bytes)
        note_request(raw)  # the request log (telemetry.request_log), when on
        try:
            if path.endswith("/chat/completions"):
                call = chat_call(raw)
            elif path.endswith("/messages"):
                call = messages_call(raw, scope)
            elif path.endswith("/messages/count_tokens"):
                await send_token_count(raw, self.router, send, _authorizer(ctx))
                return
            elif path.endswith("/responses"):
                call = responses_call(raw)
            elif path.endswith("/embeddings"):
                call = embeddings_call(raw)
            else:
                raise NotFound(f"unknown LLM endpoint {path}", code="unknown_url")
        except UnicodeDecodeError:
            raise InvalidJSON("request body is not valid UTF-8 JSON") from None
        call.request_id = ctx.request_id
        call.scope_headers = scope["headers"]
        ctx.attrs["llm.api"] = call.api
        ctx.attrs["llm.model"] = call.model
        ctx.attrs["llm.stream"] = call.stream
        chain = ctx.chain
        if chain is not None and chain.parsed_policies:
            # The policy chain's parsed phase: the model is known (CEL's `llm`).
            ctx.attrs["llm"] = {"model": call.model, "stream": call.stream, "api": call.api}
            # What token limits reserve before the call (settled with the real usage after).
            ctx.attrs["llm.estimate"] = len(raw) // BYTES_PER_TOKEN
            await chain.parsed(ctx)
        await self.serve(call, receive, send, ctx)

    # -- the request path ----------------------------------------------------------------------

    async def serve(self, call: LlmCall, receive: Receive, send: Send, ctx: RequestContext) -> None:
        guarding = guarded(ctx)
        if guarding:  # guard: the request's content (masked in place, or refused)
            await guard_request(call, ctx)
        cache = self.cache
        if cache is not None and call.api != EMBEDDINGS:  # cache: answered without an upstream
            hit = await cache.lookup(call, ctx)
            if hit is not None:
                await hit.send(call, ctx, receive, send)
                return
        if call.api == EMBEDDINGS:
            plans = [embeddings_plan(call, self.router)]
        else:
            cached = self._static_plans.get(call.model)
            resolved = self.router.resolve(call.model) if cached is None else cached[0]
            route = resolved.route
            if route is not None and route.enriches:
                enrich(call.canonical(), route)
                call.modified = True
            if cached is not None:
                plans = cached[1]
            else:
                plans = self._plans(call, resolved)  # (the prompt is measured once enriched)
                if _is_static(resolved):
                    if len(self._static_plans) >= STATIC_PLANS_MAX:
                        self._static_plans.clear()
                    self._static_plans[call.model] = (resolved, plans)
        for i, plan in enumerate(plans):
            try:
                answer = await self._attempt_all(call, plan, receive, ctx)
                break
            except GatewayError as exc:
                if exc.code != CONTEXT_LENGTH_EXCEEDED or i == len(plans) - 1:
                    raise
                log.info(
                    "llm %s: %s: prompt too long upstream, falling back", self.name, call.model
                )
        d = answer.deployment
        ctx.attrs["llm.provider"] = d.provider.name
        ctx.attrs["llm.upstream_model"] = answer.resolved.upstream_model(d)
        pick = answer.pick
        if pick is not None:
            ctx.attrs["inference.endpoint"] = pick.endpoint.name
            ctx.attrs["inference.scores"] = pick.decision.header()
            ctx.attrs["inference.picked_by"] = pick.decision.picked_by
        if answer.chunks is None:
            self._account(ctx, answer, answer.usage)
            body = answer.body
            if guarding:  # guard: the answer's content
                body = await guard_body(call, body, ctx)
            if cache is not None and call.api != EMBEDDINGS:  # cache: keep what the client gets
                cache.store(call, ctx, body, answer.usage, ctx.attrs.get("llm.cost"))
            await _response_phase(ctx)
            note_response(body)
            headers = JSON_HEADERS if pick is None else [*JSON_HEADERS, _destination(pick)]
            await send_response(send, 200, body, headers)
            return
        try:
            relayed: AsyncIterator[Any] = self._relay(answer, ctx)
            if guarding:  # guard: the stream, masked as it flows
                relayed = guard_stream(call, relayed, ctx)
            if cache is not None:  # cache: recorded, stored once it ended cleanly
                relayed = cache.record(call, ctx, relayed)
            relayed = tap_stream(relayed)  # kept by the request log, when on
            headers = list(SSE_HEADERS)
            if pick is not None:
                headers.append(_destination(pick))
            await stream_response(receive, send, 200, headers, relayed)
        finally:
            if not answer.relaying:  # the client left before the stream began: release it here
                await _aclose(answer.chunks)
                answer.release()
                tracing.end_span(answer.span, "the client left before the stream began")

    def _plans(self, call: LlmCall, resolved: Resolved) -> list[list[tuple[Resolved, Deployment]]]:
        """The deployments to try, in order: the model's own that the prompt fits, then (only
        when an upstream still says the prompt is too long) each context fallback's."""
        route = resolved.route
        fallbacks = route.context_fallbacks if route is not None else []
        if not fallbacks and not any(d.context_window for d in resolved.deployments):
            return [
                [(resolved, d) for d in self.router.order(resolved.deployments, resolved.strategy)]
            ]
        tokens = estimate_prompt_tokens(call.canonical())
        plans = []
        largest = 0
        for candidate in [resolved, *(self.router.resolve(name) for name in fallbacks)]:
            windows = [d.context_window or 0 for d in candidate.deployments]
            largest = max(largest, *windows)
            fitting = [
                d
                for d in candidate.deployments
                if not d.context_window or d.context_window >= tokens
            ]
            if fitting:
                plans.append(
                    [(candidate, d) for d in self.router.order(fitting, candidate.strategy)]
                )
        if not plans:
            raise BadRequest(
                f"This model's maximum context length is {largest} tokens, but the request needs "
                f"about {tokens} tokens (prompt plus max_tokens), and no fallback model takes it. "
                "Shorten the messages or lower max_tokens.",
                code=CONTEXT_LENGTH_EXCEEDED,
                param="messages",
            )
        return plans

    async def _attempt_all(
        self,
        call: LlmCall,
        plan: list[tuple[Resolved, Deployment]],
        receive: Receive,
        ctx: RequestContext,
    ) -> Answer:
        """Try the plan's deployments (then again, after back-offs) until one answers, within
        `routing.deadline`. A client that leaves during a back-off ends the loop."""
        routing = self.config.routing
        retry = routing.retry
        total = len(plan) + retry.retries
        deadline = time.monotonic() + routing.deadline  # (get_running_loop costs ~0.3 µs)
        last: GatewayError | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            for n in range(total):
                resolved, deployment = plan[n % len(plan)]
                if n >= len(plan):
                    assert last is not None
                    delay = backoff(n - len(plan) + 1, retry, self.router.rng, retry_after(last))
                    if delay is None or time.monotonic() + delay >= deadline:
                        break  # waiting would not help: the client gets the last error now
                    watcher = await _back_off(delay, receive, watcher)
                try:
                    if n == 0 and self._first_attempt_uncapped:
                        # The common case costs no timer: the attempt's own timeouts end first.
                        answer = await self._attempt(call, resolved, deployment, n + 1)
                    else:
                        answer = await self._attempt_until(
                            deadline, call, resolved, deployment, n + 1
                        )
                except GatewayError as exc:
                    if not is_retryable(exc) or exc.code == DEADLINE_EXCEEDED:
                        metrics.observe_llm_attempt(self.name, deployment.key, "error")
                        raise
                    metrics.observe_llm_attempt(self.name, deployment.key, "retry")
                    self.router.failed(deployment, exc)
                    log.info("llm %s: %s failed (%s), trying on", self.name, deployment.key, exc)
                    last = exc
                    continue
                metrics.observe_llm_attempt(self.name, deployment.key, "ok")
                ctx.attrs["llm.attempts"] = n + 1
                return answer
        finally:
            if watcher is not None:
                watcher.cancel()
        assert last is not None
        ctx.attrs["llm.attempts"] = total
        raise last

    async def _attempt_until(
        self, deadline: float, call: LlmCall, resolved: Resolved, d: Deployment, attempt: int
    ) -> Answer:
        """An attempt cut short at `deadline` (`time.monotonic()`)."""
        when = asyncio.get_running_loop().time() + deadline - time.monotonic()
        try:
            async with asyncio.timeout_at(when):
                return await self._attempt(call, resolved, d, attempt)
        except TimeoutError:
            raise UpstreamTimeout(
                f"no deployment answered within the routing deadline "
                f"({self.config.routing.deadline:g} s; last tried {d.key})",
                code=DEADLINE_EXCEEDED,
            ) from None

    async def _attempt_pool(
        self, call: LlmCall, resolved: Resolved, d: Deployment, attempt: int
    ) -> Answer:
        """An attempt on an inference pool: its endpoints in the order the pool ranks them for
        this request, the next one when a pick fails before the first byte."""
        pool = d.provider.pool
        assert pool is not None
        model = resolved.upstream_model(d)
        body = call.canonical()
        config = pool.config
        request = PickRequest(
            model,
            prompt_text(
                body, config.scheduler.prefix.block_chars * config.scheduler.prefix.max_blocks
            ),
            estimate_prompt_tokens(body),
            _priority(call, config.priority, config.priority_header),
        )
        if pool.picker is None:
            decision, replaced = await pool.decide(request, (), b"")
        else:  # the external picker sees the request as the endpoint will: path and body
            upstream, _ = await upstream_request(call, d.provider, model)
            path = urlsplit(pool.endpoints[0].base_url).path if pool.endpoints else "/v1"
            headers = [
                (":method", "POST"),
                (":path", path + upstream.url[len(POOL_BASE) :]),
                *((k.decode("latin-1"), v.decode("latin-1")) for k, v in call.scope_headers or ()),
            ]
            decision, replaced = await pool.decide(request, headers, upstream.body)
        if not decision.ranked:
            raise ServiceUnavailable(
                f"inference pool {d.provider.name!r} has no endpoint",
                code="no_ready_endpoint",
                status=503,
            )
        last: GatewayError | None = None
        for endpoint in decision.ranked[: config.scheduler.max_attempts]:
            pick = PoolPick(pool, endpoint, request, decision)
            try:
                answer = await self._attempt(call, resolved, d, attempt, pick, replaced)
            except GatewayError as exc:
                if not is_retryable(exc):
                    raise
                pool.failed(endpoint, isinstance(exc, UpstreamUnreachable))
                metrics.observe_inference_pick(
                    d.provider.name, endpoint.name, decision.picked_by, "failover"
                )
                log.info(
                    "llm %s: inference pool %s: endpoint %s failed (%s), trying the next",
                    self.name,
                    d.provider.name,
                    endpoint.name,
                    exc,
                )
                last = exc
                continue
            pool.succeeded(endpoint)
            metrics.observe_inference_pick(d.provider.name, endpoint.name, decision.picked_by, "ok")
            log.debug(
                "llm %s: inference pool %s: %s -> %s (%s; %s)",
                self.name,
                d.provider.name,
                model,
                endpoint.name,
                decision.picked_by,
                decision.header(),
            )
            return answer
        assert last is not None
        raise last

    async def _attempt(
        self,
        call: LlmCall,
        resolved: Resolved,
        d: Deployment,
        attempt: int = 1,
        pick: PoolPick | None = None,
        replaced: bytes | None = None,
    ) -> Answer:
        """One upstream call; returns once the answer (or a stream's first chunk) is in hand.
        With tracing on it is a CLIENT span (`crossway.attempt` = `attempt`). On an inference
        pool it is one endpoint's try (`pick`); `replaced` is a body an endpoint picker rewrote."""
        provider = d.provider
        if provider.pool is not None and pick is None:
            return await self._attempt_pool(call, resolved, d, attempt)
        model = resolved.upstream_model(d)
        timeouts = resolved.timeouts(d)
        request, relay = await upstream_request(call, provider, model)
        if pick is not None:
            request.url = pick.endpoint.base_url + request.url[len(POOL_BASE) :]
            if replaced is not None:
                request.body = replaced
        if call.request_id:  # the same id as the client's response (unsigned for SigV4)
            request.headers["x-request-id"] = call.request_id
        health = d.health
        health.in_flight += 1
        if pick is not None:  # counted from here on, released in the `finally` below (or later)
            pick.pool.sent(pick.endpoint, pick.request, pick.decision)
        handed_over = False
        span = None
        if tracing._tracer is not None and tracing.recording():
            span = attempt_span(call, provider, model, request.url, attempt)
            if pick is not None:
                tracing.set_attributes(
                    span,
                    {
                        "crossway.inference.endpoint": pick.endpoint.name,
                        "crossway.inference.picked_by": pick.decision.picked_by,
                        "crossway.inference.scores": pick.decision.header(),
                    },
                )
        outcome: BaseException | None = None
        started = time.perf_counter()
        try:
            if span is None:
                resp = await client.send(
                    request.method,
                    request.url,
                    request.headers,
                    request.body,
                    timeouts,
                    provider.config.tls,
                    stream=call.stream,
                )
            else:
                with tracing.use_span(span):  # the upstream's traceparent names this attempt
                    resp = await client.send(
                        request.method,
                        request.url,
                        request.headers,
                        request.body,
                        timeouts,
                        provider.config.tls,
                        stream=call.stream,
                    )
                tracing.set_attributes(span, {"http.response.status_code": resp.status})
            latency = time.perf_counter() - started
            metrics.observe_upstream(self.name, resp.status, latency)
            if resp.status >= 400:
                data = await read_answer(resp, timeouts, self.config.max_response_bytes)
                raise provider.error(resp.status, resp.headers, data)
            if not call.stream:
                data = await read_answer(resp, timeouts, self.config.max_response_bytes)
                body, usage = answer_body(call, provider, data)
                self.router.succeeded(d, latency)
                if span is not None:
                    end_attempt_span(span, model, usage, body)
                    span = None
                return Answer(d, resolved, body=body, usage=usage, pick=pick)
            chunks = client.iter_body(resp, timeouts)
            assert relay is not None
            first = b""
            try:
                while not first:
                    data = await anext(chunks)
                    first = relay.feed(data)
            except StopAsyncIteration:
                first = relay.finish()
                if not first:
                    raise UpstreamError("the upstream ended the stream without an answer") from None
            except BaseException:
                await _aclose(chunks)
                raise
            first_at = time.perf_counter()
            metrics.observe_time_to_first_token(
                resolved.route_name, provider.name, first_at - started
            )
            self.router.succeeded(d, latency)
            handed_over = True
            return Answer(
                d,
                resolved,
                chunks=chunks,
                relay=relay,
                first=first,
                first_at=first_at,
                span=span,
                pick=pick,
            )
        except GatewayError as exc:
            outcome = exc
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A provider translation choking on an odd answer: that deployment failed.
            outcome = UpstreamError(f"could not read the upstream answer: {exc}")
            raise outcome from exc
        except BaseException as exc:  # cancelled: the client left, or the deadline passed
            outcome = exc
            raise
        finally:
            if not handed_over:
                health.in_flight -= 1
                if pick is not None:
                    pick.pool.done(pick.endpoint, pick.request)
                if span is not None:
                    tracing.end_span(span, outcome)

    async def _relay(self, answer: Answer, ctx: RequestContext) -> AsyncIterator[bytes]:
        """The client's stream: the first chunk, the rest as it arrives, then a clean or an
        error ending. Usage and cost are recorded however the stream ends."""
        relay = answer.relay
        chunks = answer.chunks
        assert relay is not None and chunks is not None
        answer.relaying = True
        broke: GatewayError | None = None
        try:
            yield answer.first
            try:
                async for data in chunks:
                    out = relay.feed(data)
                    if out:
                        yield out
                tail = relay.finish()
            except GatewayError as exc:
                broke = exc
                self.router.failed(answer.deployment, exc)
                log.warning(
                    "llm %s: stream from %s broke: %s (%r)",
                    self.name,
                    answer.deployment.key,
                    exc,
                    exc.__cause__,
                )
                tail = relay.error(exc)
            if tail:  # the closing events (translated streams): sent with the end of the response
                yield LastChunk(tail)
        finally:
            await _aclose(chunks)
            answer.release()
            self._account(ctx, answer, relay.usage)
            stream_ended(answer, relay.usage, broke)
            await _response_phase(ctx)

    # -- usage and cost ------------------------------------------------------------------------

    def _account(self, ctx: RequestContext, answer: Answer, usage: Usage | None) -> None:
        if usage is None:
            return
        d = answer.deployment
        cost = self.prices.cost(usage, answer.resolved.upstream_model(d), answer.resolved.name)
        ctx.attrs["llm.usage"] = usage.as_dict()
        ctx.attrs["llm.cost"] = cost
        tokens = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            usage.reasoning_tokens,
        )
        metrics.observe_llm_usage(
            self.name,
            answer.resolved.route_name,
            d.provider.name,
            tokens,
            cost,
        )
        metrics.observe_gen_ai_usage(
            answer.resolved.route_name, d.provider.name, ctx.key, tokens, cost
        )


def _authorizer(ctx: RequestContext) -> Callable[[str], Awaitable[None]] | None:
    """The route's parsed phase for a request about one model without a completion (a model
    lookup, a token count), or None without parsed-phase policies."""
    chain = ctx.chain
    if chain is None or not chain.parsed_policies:
        return None

    async def authorize(model: str) -> None:
        ctx.attrs["llm.model"] = model
        ctx.attrs["llm"] = {"model": model, "stream": False, "api": "models"}
        await chain.parsed(ctx)

    return authorize


def _lister(ctx: RequestContext) -> Callable[[str], bool] | None:
    """Whether the route's policies show a model in `/v1/models` (None: no filtering)."""
    chain = ctx.chain
    if chain is None or not chain.filters:
        return None
    return lambda model: chain.visible(ctx, {"llm": {"model": model}})


async def _response_phase(ctx: RequestContext) -> None:
    """The policy chain's response phase, with usage known (CEL's `llm.usage`)."""
    chain = ctx.chain
    if chain is not None and chain.response_policies:
        ctx.attrs["llm"] = {
            **ctx.attrs.get("llm", {}),
            "model": ctx.attrs.get("llm.model"),
            "provider": ctx.attrs.get("llm.provider"),
            "usage": ctx.attrs.get("llm.usage") or {},
        }
        await chain.response(ctx)


def _is_static(resolved: Resolved) -> bool:
    """Whether every request for this model gets the same plan: one deployment, no context
    window to check the prompt against, no context fallbacks (`_plans`)."""
    route = resolved.route
    return (
        len(resolved.deployments) == 1
        and not resolved.deployments[0].context_window
        and (route is None or not route.context_fallbacks)
    )


def _destination(pick: PoolPick) -> tuple[bytes, bytes]:
    """The response header naming the endpoint that served (as the EPP protocol names it)."""
    return (b"x-gateway-destination-endpoint", pick.endpoint.name.encode("latin-1"))


def _priority(call: LlmCall, configured: int, header_name: str) -> int:
    """The request's priority: the pool's, lowered (never raised) by the priority header."""
    name = header_name.encode("latin-1")
    for key, value in call.scope_headers or ():
        if key == name:
            try:
                asked = int(value.strip())
            except ValueError:
                raise BadRequest(
                    f"header {header_name} must be an integer (below zero: sheddable)",
                    code="invalid_priority",
                ) from None
            return min(configured, asked)
    return configured


def _bound(t: Timeouts) -> float:
    """The longest one attempt can take before its own timeouts end it (connect, first byte,
    then an idle gap before the body or a stream's first chunk)."""
    return t.connect + t.first_byte + t.idle


async def _back_off(
    delay: float, receive: Receive, watcher: asyncio.Task[None] | None
) -> asyncio.Task[None]:
    """Wait `delay` seconds before a retry, or raise `ClientDisconnected` as soon as the client
    leaves. The disconnect watcher is started on the first back-off and reused by later ones."""
    if watcher is None:
        watcher = asyncio.get_running_loop().create_task(_until_disconnect(receive))
    done, _ = await asyncio.wait((watcher,), timeout=delay)
    if done:
        log.info("llm: the client left during a retry back-off; not retrying")
        raise ClientDisconnected
    return watcher


async def _until_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (the request body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _is_messages_path(path: str) -> bool:
    path = path.rstrip("/")
    return path.endswith("/messages") or path.endswith("/messages/count_tokens")


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
