"""The `type: llm` backend: OpenAI- and Anthropic-compatible endpoints in front of the providers.

    POST /v1/chat/completions        OpenAI Chat (bytes pass through to OpenAI-style providers)
    POST /v1/messages                Anthropic Messages (bytes pass through to Anthropic)
    POST /v1/messages/count_tokens   Anthropic token count (estimated)
    POST /v1/responses               OpenAI Responses (translated to and from chat)
    POST /v1/embeddings              OpenAI Embeddings (OpenAI-style providers)
    GET  /v1/models[/{id}]           the configured model names

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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import msgspec
import orjson

from crossway.config.llm import LlmBackendConfig
from crossway.errors import (
    BadRequest,
    GatewayError,
    InvalidJSON,
    MethodNotAllowed,
    NotFound,
    UpstreamError,
)
from crossway.llm import answers
from crossway.llm.api.anthropic_messages import MessagesStreamWriter, messages_to_chat
from crossway.llm.api.responses import ResponsesStreamWriter, responses_to_chat
from crossway.llm.enrichment import enrich
from crossway.llm.errors import render_anthropic_error, render_openai_error
from crossway.llm.pricing import Price, PriceTable
from crossway.llm.providers import build_provider
from crossway.llm.providers.base import Json, Provider, UpstreamRequest
from crossway.llm.routing import (
    Deployment,
    ModelRouter,
    Resolved,
    backoff,
    estimate_prompt_tokens,
    is_retryable,
    retry_after,
)
from crossway.llm.usage import Usage, usage_from_body
from crossway.proxy import client
from crossway.server.asgi import (
    SSE_HEADERS,
    ClientDisconnected,
    header,
    read_body,
    send_response,
    stream_response,
)
from crossway.server.backend import Backend, ErrorResponse
from crossway.server.context import RequestContext
from crossway.telemetry import metrics
from crossway.types import Receive, Scope, Send

log = logging.getLogger("crossway.llm")

JSON_HEADERS: Final = [(b"content-type", b"application/json")]
CHAT: Final = "chat"
MESSAGES: Final = "anthropic_messages"
RESPONSES: Final = "responses"
EMBEDDINGS: Final = "embeddings"
CONTEXT_LENGTH_EXCEEDED: Final = "context_length_exceeded"
_INCLUDE_USAGE: Final = b'{"stream_options":{"include_usage":true},'
_FORWARDED_ANTHROPIC_HEADERS: Final = (b"anthropic-beta",)


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatHead(msgspec.Struct):
    """The only fields of a chat request the hot path decodes."""

    model: str | None = None
    stream: bool | None = False
    stream_options: _StreamOptions | None = None


class ModelHead(msgspec.Struct):
    model: str | None = None


_decode_head = msgspec.json.Decoder(ChatHead).decode
_decode_model = msgspec.json.Decoder(ModelHead).decode


@dataclass(slots=True)
class LlmCall:
    """One client request on its way through the router."""

    api: str
    model: str
    stream: bool
    raw: bytes = b""  # the client's body (OpenAI Chat and Anthropic Messages)
    body: Json | None = None  # canonical chat body, once built
    source: Json | None = None  # the client's decoded body (Responses echoes parts of it)
    wants_usage: bool = False  # an OpenAI Chat client asked for stream usage itself
    modified: bool = False  # enrichment rewrote the request: the raw body is stale
    untranslatable: GatewayError | None = None  # why the request has no canonical form
    has_stream_options: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # client headers worth forwarding

    def canonical(self) -> Json:
        """The canonical chat body (decoded from the raw body on first use)."""
        if self.untranslatable is not None:
            raise self.untranslatable
        if self.body is None:
            self.body = _loads(self.raw)
        return self.body


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


def _loads(raw: bytes) -> Json:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidJSON("request body must be a JSON object")
    return body


class LlmBackend(Backend):
    """Serves the LLM APIs from the configured providers."""

    def __init__(self, name: str, config: LlmBackendConfig, max_body_bytes: int) -> None:
        self.name = name
        self.config = config
        self.max_body_bytes = max_body_bytes
        self.providers: dict[str, Provider] = {
            pname: build_provider(pname, pcfg) for pname, pcfg in config.providers.items()
        }
        self.router = ModelRouter(config, self.providers)
        self.prices = PriceTable(
            {name: Price(**p.model_dump()) for name, p in config.prices.items()}
        )

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()

    async def close(self) -> None:
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
            await self.list_models(send, model_id)
            return
        if method != "POST":
            raise MethodNotAllowed(f"use POST for {path}")
        raw = await read_body(scope, receive, self.max_body_bytes)
        if path.endswith("/chat/completions"):
            call = self._chat_call(raw)
        elif path.endswith("/messages"):
            call = self._messages_call(raw, scope)
        elif path.endswith("/messages/count_tokens"):
            await self.count_tokens(raw, send)
            return
        elif path.endswith("/responses"):
            call = self._responses_call(raw)
        elif path.endswith("/embeddings"):
            await self.embeddings(raw, send, ctx)
            return
        else:
            raise NotFound(f"unknown LLM endpoint {path}", code="unknown_url")
        ctx.attrs["llm.api"] = call.api
        ctx.attrs["llm.model"] = call.model
        ctx.attrs["llm.stream"] = call.stream
        await self.serve(call, receive, send, ctx)

    # -- request decoding ----------------------------------------------------------------------

    def _chat_call(self, raw: bytes) -> LlmCall:
        try:
            head = _decode_head(raw)
        except msgspec.DecodeError as exc:
            raise InvalidJSON(f"request body is not valid JSON for this endpoint: {exc}") from None
        if not head.model:
            raise BadRequest(
                "you must provide a model parameter", param="model", code="missing_model"
            )
        options = head.stream_options
        return LlmCall(
            CHAT,
            head.model,
            bool(head.stream),
            raw=raw,
            wants_usage=bool(options and options.include_usage),
            has_stream_options=options is not None,
        )

    def _messages_call(self, raw: bytes, scope: Scope) -> LlmCall:
        source = _loads(raw)
        body = messages_to_chat(source)
        headers = {}
        for name in _FORWARDED_ANTHROPIC_HEADERS:
            value = header(scope, name)
            if value is not None:
                headers[name.decode()] = value.decode("latin-1")
        return LlmCall(
            MESSAGES,
            body["model"],
            bool(body.get("stream")),
            raw=raw,
            body=body,
            source=source,
            headers=headers,
        )

    def _responses_call(self, raw: bytes) -> LlmCall:
        source = _loads(raw)
        model = source.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("Missing required parameter: 'model'.", param="model")
        try:
            body: Json | None = responses_to_chat(source)
            problem = None
        except BadRequest as exc:
            # Stored responses, hosted tools...: fine for OpenAI itself, refused for the others.
            body, problem = None, exc
        return LlmCall(
            RESPONSES,
            model,
            source.get("stream") is True,
            raw=raw,
            body=body,
            source=source,
            untranslatable=problem,
        )

    # -- the request path ----------------------------------------------------------------------

    async def serve(self, call: LlmCall, receive: Receive, send: Send, ctx: RequestContext) -> None:
        resolved = self.router.resolve(call.model)
        route = resolved.route
        if route is not None and route.enriches:
            enrich(call.canonical(), route)
            call.modified = True
        plans = self._plans(call, resolved)
        for i, plan in enumerate(plans):
            try:
                answer = await self._attempt_all(call, plan, ctx)
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
        if answer.chunks is None:
            self._account(ctx, answer, answer.usage)
            await send_response(send, 200, answer.body, JSON_HEADERS)
            return
        try:
            await stream_response(receive, send, 200, list(SSE_HEADERS), self._relay(answer, ctx))
        finally:
            if not answer.relaying:  # the client left before the stream began: release it here
                await _aclose(answer.chunks)
                d.health.in_flight -= 1

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
        self, call: LlmCall, plan: list[tuple[Resolved, Deployment]], ctx: RequestContext
    ) -> Answer:
        retry = self.config.routing.retry
        total = len(plan) + retry.retries
        last: GatewayError | None = None
        for n in range(total):
            resolved, deployment = plan[n % len(plan)]
            if n >= len(plan):
                assert last is not None
                delay = backoff(n - len(plan) + 1, retry, self.router.rng, retry_after(last))
                if delay is None:
                    break
                await asyncio.sleep(delay)
            try:
                answer = await self._attempt(call, resolved, deployment)
            except GatewayError as exc:
                if not is_retryable(exc):
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
        assert last is not None
        ctx.attrs["llm.attempts"] = total
        raise last

    async def _attempt(self, call: LlmCall, resolved: Resolved, d: Deployment) -> Answer:
        """One upstream call; returns once the answer (or a stream's first chunk) is in hand."""
        provider = d.provider
        model = resolved.upstream_model(d)
        timeouts = resolved.timeouts(d)
        request, relay = await self._build(call, provider, model)
        health = d.health
        health.in_flight += 1
        handed_over = False
        started = time.perf_counter()
        try:
            resp = await client.send(
                request.method, request.url, request.headers, request.body, timeouts
            )
            latency = time.perf_counter() - started
            metrics.observe_upstream(self.name, resp.status, latency)
            if resp.status >= 400:
                data = await client.read_body(resp, timeouts)
                raise provider.error(resp.status, resp.headers, data)
            if not call.stream:
                data = await client.read_body(resp, timeouts)
                body, usage = self._answer_body(call, provider, data)
                self.router.succeeded(d, latency)
                return Answer(d, resolved, body=body, usage=usage)
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
            self.router.succeeded(d, latency)
            handed_over = True
            return Answer(d, resolved, chunks=chunks, relay=relay, first=first)
        except GatewayError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A provider translation choking on an odd answer: that deployment failed.
            raise UpstreamError(f"could not read the upstream answer: {exc}") from exc
        finally:
            if not handed_over:
                health.in_flight -= 1

    async def _build(
        self, call: LlmCall, provider: Provider, model: str
    ) -> tuple[UpstreamRequest, answers.Relay | None]:
        """The upstream request for one attempt and, for streams, its relay."""
        stream = call.stream
        try:
            if call.api == CHAT and provider.native_api == "openai_chat":
                hide = stream and not call.wants_usage
                request = await provider.chat_request({}, model, stream)
                request.body = self._chat_body(call, model, inject_usage=hide)
                return request, answers.ChatPassthrough(hide) if stream else None
            if call.api == RESPONSES and _speaks_natively(call, provider):
                request = await provider.chat_request({}, model, stream)
                request.url = provider.url("/responses")  # type: ignore[attr-defined]
                request.body = _with_model(call.raw, call.source or {}, call.model, model)
                return request, answers.ResponsesPassthrough() if stream else None
            if call.api == MESSAGES and _speaks_natively(call, provider):
                request = await provider.chat_request(
                    {"messages": [{"role": "user", "content": "-"}]}, model, stream
                )
                request.body = _with_model(call.raw, call.source or {}, call.model, model)
                request.headers.update(call.headers)
                return request, answers.MessagesPassthrough() if stream else None
            if call.api == EMBEDDINGS:
                request = await provider.chat_request({}, model, False)
                request.url = provider.url("/embeddings")  # type: ignore[attr-defined]
                request.body = self._chat_body(call, model, inject_usage=False)
                return request, None
            request = await provider.chat_request(call.canonical(), model, stream)
        except GatewayError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadRequest(
                f"the request cannot be translated for provider {provider.name!r}: {exc}"
            ) from exc
        if not stream:
            return request, None
        translator = provider.chat_stream(call.model)
        if call.api == CHAT:
            return request, answers.ChatTranslated(translator, call.model, not call.wants_usage)
        if call.api == MESSAGES:
            return request, answers.WriterRelay(translator, MessagesStreamWriter(call.model))
        writer = ResponsesStreamWriter(call.source or {}, call.model)
        return request, answers.WriterRelay(translator, writer)

    def _chat_body(self, call: LlmCall, model: str, *, inject_usage: bool) -> bytes:
        """The OpenAI Chat body for an OpenAI-style upstream, as close to the client's bytes as
        the request allows."""
        if not call.modified and model == call.model:
            if not inject_usage:
                return call.raw
            raw = call.raw.lstrip()
            if not call.has_stream_options and raw.startswith(b"{"):
                return _INCLUDE_USAGE + raw[1:]
        body = dict(call.canonical())
        body["model"] = model
        if inject_usage:
            options = body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return orjson.dumps(body)

    def _answer_body(
        self, call: LlmCall, provider: Provider, data: bytes
    ) -> tuple[bytes, Usage | None]:
        if not _speaks_natively(call, provider):
            return answers.translate_answer(call.api, provider, data, call.model, call.source)
        if call.api == MESSAGES:
            return data, answers.anthropic_body_usage(data)
        return data, usage_from_body(data)  # Chat, Responses and Embeddings name usage alike
        return answers.translate_answer(call.api, provider, data, call.model, call.source)

    async def _relay(self, answer: Answer, ctx: RequestContext) -> AsyncIterator[bytes]:
        """The client's stream: the first chunk, the rest as it arrives, then a clean or an
        error ending. Usage and cost are recorded however the stream ends."""
        relay = answer.relay
        chunks = answer.chunks
        assert relay is not None and chunks is not None
        answer.relaying = True
        try:
            yield answer.first
            try:
                async for data in chunks:
                    out = relay.feed(data)
                    if out:
                        yield out
                tail = relay.finish()
            except GatewayError as exc:
                self.router.failed(answer.deployment, exc)
                log.warning(
                    "llm %s: stream from %s broke: %s", self.name, answer.deployment.key, exc
                )
                tail = relay.error(exc)
            if tail:
                yield tail
        finally:
            await _aclose(chunks)
            answer.deployment.health.in_flight -= 1
            self._account(ctx, answer, relay.usage)

    # -- usage and cost ------------------------------------------------------------------------

    def _account(self, ctx: RequestContext, answer: Answer, usage: Usage | None) -> None:
        if usage is None:
            return
        d = answer.deployment
        cost = self.prices.cost(usage, answer.resolved.upstream_model(d), answer.resolved.name)
        ctx.attrs["llm.usage"] = usage.as_dict()
        ctx.attrs["llm.cost"] = cost
        metrics.observe_llm_usage(
            self.name,
            answer.resolved.route_name,
            d.provider.name,
            (usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.reasoning_tokens),
            cost,
        )

    # -- other endpoints -----------------------------------------------------------------------

    async def count_tokens(self, raw: bytes, send: Send) -> None:
        """Anthropic's `count_tokens`, estimated (no provider round trip)."""
        body = _loads(raw)
        body.setdefault("max_tokens", 1)
        chat = messages_to_chat(body)
        chat.pop("max_completion_tokens", None)
        self.router.resolve(chat["model"])
        tokens = estimate_prompt_tokens(chat)
        await send_response(send, 200, orjson.dumps({"input_tokens": tokens}))

    async def embeddings(self, raw: bytes, send: Send, ctx: RequestContext) -> None:
        try:
            model = _decode_model(raw).model
        except msgspec.DecodeError as exc:
            raise InvalidJSON(f"request body is not valid JSON for this endpoint: {exc}") from None
        if not model:
            raise BadRequest("you must provide a model parameter", param="model")
        ctx.attrs["llm.api"] = "embeddings"
        ctx.attrs["llm.model"] = model
        resolved = self.router.resolve(model)
        plan = [
            (resolved, d)
            for d in self.router.order(resolved.deployments, resolved.strategy)
            if _serves_embeddings(d.provider)
        ]
        if not plan:
            kinds = sorted({d.provider.config.type for d in resolved.deployments})
            raise BadRequest(
                f"model {model!r} is served by {', '.join(kinds)}, which Crossway does not "
                "serve embeddings from; use an OpenAI-style provider for embeddings",
                param="model",
                code="embeddings_not_supported",
            )
        call = LlmCall(EMBEDDINGS, model, False, raw=raw)
        answer = await self._attempt_all(call, plan, ctx)
        ctx.attrs["llm.provider"] = answer.deployment.provider.name
        self._account(ctx, answer, answer.usage)
        await send_response(send, 200, answer.body, JSON_HEADERS)

    async def list_models(self, send: Send, model_id: str | None) -> None:
        names = self.router.names()
        if model_id is not None:
            self.router.resolve(model_id)
            await send_response(send, 200, orjson.dumps(_model_entry(model_id, self.name)))
            return
        if self.config.models:
            listing = [_model_entry(n, self.name) for n in names]
            await send_response(send, 200, orjson.dumps({"object": "list", "data": listing}))
            return
        provider = next(iter(self.providers.values()))
        url_of = getattr(provider, "url", None)
        if provider.native_api != "openai_chat" or url_of is None:
            await send_response(send, 200, orjson.dumps({"object": "list", "data": []}))
            return
        timeouts = provider.config.timeouts
        request = await provider.chat_request({}, "", False)
        resp = await client.send("GET", url_of("/models"), request.headers, b"", timeouts)
        data = await client.read_body(resp, timeouts)
        if resp.status >= 400:
            raise provider.error(resp.status, resp.headers, data)
        await send_response(send, 200, data, JSON_HEADERS)


def _speaks_natively(call: LlmCall, provider: Provider) -> bool:
    """Whether the provider takes the client's API as it is (bytes pass through)."""
    if call.api in (CHAT, EMBEDDINGS):
        return provider.native_api == "openai_chat"
    if call.modified:
        return False
    if call.api == MESSAGES:
        return provider.config.type == "anthropic"
    return call.api == RESPONSES and provider.config.type == "openai"


def _model_entry(name: str, owner: str) -> Json:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


def _serves_embeddings(provider: Provider) -> bool:
    return provider.config.type in ("openai", "openai_compatible") and hasattr(provider, "url")


def _is_messages_path(path: str) -> bool:
    path = path.rstrip("/")
    return path.endswith("/messages") or path.endswith("/messages/count_tokens")


def _with_model(raw: bytes, source: Json, client_model: str, model: str) -> bytes:
    if model == client_model:
        return raw
    return orjson.dumps({**source, "model": model})


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
