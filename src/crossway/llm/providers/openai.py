"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, LM Studio, Groq, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from crossway.config.llm import DEFAULT_MAX_EVENT_BYTES, ProviderConfig
from crossway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    NotFound,
    RateLimited,
    UpstreamError,
)
from crossway.llm.providers.base import Json, Provider, StreamTranslator, UpstreamRequest
from crossway.proxy.sse import SSEParser

DEFAULT_OPENAI_BASE_URL: Final = "https://api.openai.com/v1"


class OpenAIProvider(Provider):
    """Speaks the OpenAI wire format natively: requests and answers pass through as bytes."""

    native_api = "openai_chat"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.base_url = (config.base_url or DEFAULT_OPENAI_BASE_URL).rstrip("/")
        headers = {"content-type": "application/json"}
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        headers.update({k.lower(): v.get_secret_value() for k, v in config.headers.items()})
        self.headers = headers

    def url(self, path: str) -> str:
        """Absolute URL of an API path such as `/chat/completions`."""
        return self.base_url + path

    async def chat_request(self, body: Json, model: str, stream: bool) -> UpstreamRequest:
        if body.get("model") != model:
            body = {**body, "model": model}
        return UpstreamRequest(
            "POST", self.url("/chat/completions"), dict(self.headers), orjson.dumps(body)
        )

    async def embeddings_request(self, body: Json, model: str) -> UpstreamRequest:
        """`/embeddings` with the client's body (the gateway puts the client's bytes in)."""
        request = await OpenAIProvider.chat_request(self, body, model, False)
        request.url = self.url("/embeddings")
        return request

    def chat_response(self, body: bytes) -> Json:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("upstream sent an invalid JSON answer") from exc
        if not isinstance(data, dict):
            raise UpstreamError("upstream sent an unexpected answer")
        return data

    def chat_stream(self, model: str) -> StreamTranslator:
        return OpenAIStreamDecoder(self.max_event_bytes)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        return openai_error(status, headers, body)


class OpenAIStreamDecoder(StreamTranslator):
    """Parses OpenAI SSE (`data: {...}` events, `data: [DONE]`) into chunk dicts; an event
    larger than `max_event_bytes` raises `EventTooLarge`."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._sse = SSEParser(max_event_bytes)

    def feed(self, data: bytes) -> list[Json]:
        out: list[Json] = []
        for _, payload in self._sse.feed(data):
            chunk = _parse_event(payload)
            if chunk is not None:
                out.append(chunk)
        return out

    def close(self) -> list[Json]:
        return [c for _, p in self._sse.close() if (c := _parse_event(p)) is not None]


def _parse_event(data: bytes) -> Json | None:
    if not data or data == b"[DONE]":
        return None
    try:
        chunk: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("upstream sent an invalid stream event") from exc
    if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
        err = (
            chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
        )
        raise UpstreamError(str(err.get("message", "upstream stream error")), code=err.get("code"))
    return chunk if isinstance(chunk, dict) else None


_STATUS_ERRORS: Final[dict[int, type[GatewayError]]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    429: RateLimited,
}


def openai_error(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """An OpenAI-style error answer as a gateway error, keeping its status, message and code."""
    message = f"upstream answered HTTP {status}"
    code = param = None
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            code = err.get("code")
            param = err.get("param")
        elif isinstance(err, str):
            message = err
    except orjson.JSONDecodeError:
        pass
    keep = {}
    retry_after = headers.get("retry-after") or headers.get("Retry-After")
    if retry_after:
        keep["retry-after"] = retry_after
    cls = _STATUS_ERRORS.get(status, UpstreamError)
    return cls(message, code=code, param=param, status=status, headers=keep)
