"""The `type: llm` backend: OpenAI-compatible endpoints in front of the configured providers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Final

import msgspec
import orjson

from crossway.config.llm import LlmBackendConfig, ModelRoute
from crossway.errors import BadRequest, GatewayError, InvalidJSON, MethodNotAllowed, NotFound
from crossway.llm.errors import openai_stream_error, render_openai_error
from crossway.llm.providers import build_provider
from crossway.llm.providers.base import Provider
from crossway.proxy import client
from crossway.server.asgi import SSE_HEADERS, read_body, send_response, stream_response
from crossway.server.backend import Backend, ErrorResponse
from crossway.server.context import RequestContext
from crossway.telemetry import metrics
from crossway.types import Receive, Scope, Send

JSON_HEADERS: Final = [(b"content-type", b"application/json")]


class ChatHead(msgspec.Struct):
    """The only fields of a chat request the hot path decodes."""

    model: str | None = None
    stream: bool | None = False


_decode_head = msgspec.json.Decoder(ChatHead).decode


class LlmBackend(Backend):
    """Serves `/v1/chat/completions` and `/v1/models` from the configured providers."""

    def __init__(self, name: str, config: LlmBackendConfig, max_body_bytes: int) -> None:
        self.name = name
        self.config = config
        self.max_body_bytes = max_body_bytes
        self.providers: dict[str, Provider] = {
            pname: build_provider(pname, pcfg) for pname, pcfg in config.providers.items()
        }
        self._exact: dict[str, ModelRoute] = {}
        self._wildcards: list[tuple[str, ModelRoute]] = []
        for route in config.models:
            if route.name.endswith("*"):
                self._wildcards.append((route.name[:-1], route))
            else:
                self._exact[route.name] = route
        for route in config.models:
            for target in route.targets:
                if target.provider not in self.providers:
                    raise ValueError(f"model {route.name!r}: unknown provider {target.provider!r}")

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()

    def render_error(self, exc: GatewayError, scope: Scope, ctx: RequestContext) -> ErrorResponse:
        return render_openai_error(exc)

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        path = ctx.path
        if path.endswith("/chat/completions"):
            if scope["method"] != "POST":
                raise MethodNotAllowed("use POST for /v1/chat/completions")
            await self.chat_completions(scope, receive, send, ctx)
        elif path.endswith("/models"):
            if scope["method"] != "GET":
                raise MethodNotAllowed("use GET for /v1/models")
            await self.list_models(send)
        else:
            raise NotFound(f"unknown LLM endpoint {path}", code="unknown_url")

    def resolve(self, model: str) -> tuple[Provider, str]:
        """The provider and upstream model name for a client-facing model name."""
        if not self.config.models:
            if len(self.providers) == 1:
                return next(iter(self.providers.values())), model
            raise NotFound(f"model {model!r} is not configured", code="model_not_found")
        route = self._exact.get(model)
        rest = model
        if route is None:
            for prefix, candidate in self._wildcards:
                if model.startswith(prefix):
                    route, rest = candidate, model[len(prefix) :]
                    break
        if route is None:
            raise NotFound(
                f"The model `{model}` does not exist or is not configured",
                code="model_not_found",
                param="model",
            )
        target = route.targets[0]
        return self.providers[target.provider], target.model or rest

    async def chat_completions(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        raw = await read_body(scope, receive, self.max_body_bytes)
        try:
            head = _decode_head(raw)
        except msgspec.DecodeError as exc:
            raise InvalidJSON(f"request body is not valid JSON for this endpoint: {exc}") from None
        if not head.model:
            raise BadRequest(
                "you must provide a model parameter", param="model", code="missing_model"
            )
        stream = bool(head.stream)
        ctx.attrs["llm.model"] = head.model
        provider, upstream_model = self.resolve(head.model)
        if provider.native_api == "openai_chat" and upstream_model == head.model:
            request = await provider.chat_request({}, upstream_model, stream)
            request.body = raw  # untouched: no decode, no re-encode
        else:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InvalidJSON(f"request body is not valid JSON: {exc}") from None
            request = await provider.chat_request(body, upstream_model, stream)
        timeouts = provider.config.timeouts
        started = time.perf_counter()
        resp = await client.send(
            request.method, request.url, request.headers, request.body, timeouts
        )
        metrics.observe_upstream(self.name, resp.status, time.perf_counter() - started)
        if resp.status >= 400:
            data = await client.read_body(resp, timeouts)
            raise provider.error(resp.status, resp.headers, data)
        if (
            provider.native_api != "openai_chat"
        ):  # pragma: no cover - translation lands with providers
            raise BadRequest("translation for this provider is not available")
        if not stream:
            data = await client.read_body(resp, timeouts)
            await send_response(send, resp.status, data, JSON_HEADERS)
            return
        await stream_response(
            receive, send, 200, list(SSE_HEADERS), _passthrough(client.iter_body(resp, timeouts))
        )

    async def list_models(self, send: Send) -> None:
        if self.config.models:
            names = [r.name for r in self.config.models]
            listing = [
                {"id": n, "object": "model", "created": 0, "owned_by": self.name} for n in names
            ]
            await send_response(send, 200, orjson.dumps({"object": "list", "data": listing}))
            return
        provider = next(iter(self.providers.values()))
        if provider.native_api != "openai_chat" or not hasattr(provider, "url"):
            await send_response(send, 200, orjson.dumps({"object": "list", "data": []}))
            return
        timeouts = provider.config.timeouts
        request = await provider.chat_request({}, "", False)
        url = provider.url("/models")  # type: ignore[attr-defined]
        resp = await client.send("GET", url, request.headers, b"", timeouts)
        data = await client.read_body(resp, timeouts)
        if resp.status >= 400:
            raise provider.error(resp.status, resp.headers, data)
        await send_response(send, 200, data, JSON_HEADERS)


async def _passthrough(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Forward an OpenAI SSE stream as is; a broken upstream ends it with an error event."""
    try:
        async for chunk in chunks:
            yield chunk
    except GatewayError as exc:
        yield openai_stream_error(exc)
