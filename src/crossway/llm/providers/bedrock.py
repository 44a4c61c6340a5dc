"""AWS Bedrock: the Converse / ConverseStream APIs for chat, InvokeModel for embeddings.

Auth: SigV4 (service `bedrock`, `crossway.llm.providers.aws_auth`) from the provider's
`aws_access_key_id` / `aws_secret_access_key` / `aws_session_token` or, when those are empty,
botocore's usual credential chain resolved at start (environment, shared files, roles); or a
Bedrock API key (`api_key`), sent as `Authorization: Bearer`. The wire format is translated by
`crossway.llm.providers.converse`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import orjson

from crossway.config.llm import ProviderConfig
from crossway.errors import BadRequest, GatewayError, Unauthenticated, UpstreamError
from crossway.llm.providers.aws_auth import (
    default_credentials,
    frozen,
    sign_headers,
    static_credentials,
)
from crossway.llm.providers.base import Json, Provider, StreamTranslator, UpstreamRequest
from crossway.llm.providers.common import (
    embedding_inputs,
    embeddings_list,
    estimate_tokens,
    loads_object,
    unexpected_shape,
)
from crossway.llm.providers.converse import (
    BedrockStreamTranslator,
    bedrock_error,
    translate_request,
    translate_response,
)

SERVICE: Final = "bedrock"
EVENTSTREAM_TYPE: Final = "application/vnd.amazon.eventstream"
MAX_CACHED_URLS: Final = 256
"""Request URLs kept per provider (one per model and action; a full cache starts again)."""


# --- provider ---------------------------------------------------------------------------------


class BedrockProvider(Provider):
    """Bedrock Runtime's Converse API, signed with SigV4 or authorized with a Bedrock API key."""

    native_api = "bedrock_converse"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.region = config.region
        self.api_key = config.api_key.get_secret_value() if config.api_key is not None else ""
        self._credentials: Any = None
        if config.aws_access_key_id is not None and config.aws_secret_access_key is not None:
            self._credentials = static_credentials(
                config.aws_access_key_id.get_secret_value(),
                config.aws_secret_access_key.get_secret_value(),
                config.aws_session_token.get_secret_value() if config.aws_session_token else None,
            )
        self._extra_headers = {k.lower(): v.get_secret_value() for k, v in config.headers.items()}
        self._resolved = False
        self._lock = asyncio.Lock()
        self._urls: dict[tuple[str, str], str] = {}  # (model, action) -> URL

    @property
    def base_url(self) -> str:
        if self.config.base_url:
            return self.config.base_url.rstrip("/")
        return f"https://bedrock-runtime.{self.region}.amazonaws.com"

    async def start(self) -> None:
        try:
            await self._resolve()
        except UpstreamError:
            pass  # no region yet: reported on each request, the gateway still starts

    async def _resolve(self) -> None:
        """Region and credentials from the environment / botocore chain (blocking: in a thread)."""
        if self._resolved:
            return
        async with self._lock:
            if self._resolved:
                return
            if self.region is None:
                self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if not self.api_key and self._credentials is None:
                self._credentials = await asyncio.to_thread(default_credentials)
            self._resolved = True

    async def _frozen_credentials(self) -> Any:
        if self._credentials is None:
            raise Unauthenticated(f"provider {self.name}: no AWS credentials found")
        return await frozen(self._credentials)

    async def chat_request(self, body: Json, model: str, stream: bool) -> UpstreamRequest:
        forced_tool = "anthropic." in model or "claude" in model
        payload = orjson.dumps(
            translate_request(body, self.config.default_max_tokens, forced_tool=forced_tool)
        )
        action = "converse-stream" if stream else "converse"
        return await self._request(
            model, action, payload, EVENTSTREAM_TYPE if stream else "application/json"
        )

    async def _request(
        self, model: str, action: str, payload: bytes, accept: str
    ) -> UpstreamRequest:
        await self._resolve()
        if self.region is None:
            raise UpstreamError(f"provider {self.name}: no AWS region (set region or AWS_REGION)")
        url = self._urls.get((model, action))
        if url is None:
            # ':' stays literal: it is what HTTP clients put on the wire, and what AWS signs.
            url = f"{self.base_url}/model/{quote(model, safe=':')}/{action}"
            if len(self._urls) >= MAX_CACHED_URLS:
                self._urls.clear()
            self._urls[(model, action)] = url
        headers = {"content-type": "application/json", **self._extra_headers, "accept": accept}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
            return UpstreamRequest("POST", url, headers, payload)
        return UpstreamRequest("POST", url, await self._sign(url, headers, payload), payload)

    async def embeddings_request(self, body: Json, model: str) -> UpstreamRequest:
        """InvokeModel on an embeddings model: Cohere Embed (a batch of texts) or Titan Text
        Embeddings (one text per request)."""
        texts = embedding_inputs(body)
        if "cohere.embed" in model:
            payload: Json = {
                "texts": texts,
                "input_type": body.get("input_type") or "search_document",
            }
        elif "titan-embed" in model:
            if len(texts) != 1:
                raise BadRequest(
                    "Titan embeddings models take one input per request", param="input"
                )
            payload = {"inputText": texts[0]}
            if isinstance(body.get("dimensions"), int):
                payload["dimensions"] = body["dimensions"]
        else:
            raise BadRequest(
                f"{model!r} is not a Bedrock embeddings model Crossway knows (Titan or Cohere Embed)"
            )
        return await self._request(model, "invoke", orjson.dumps(payload), "application/json")

    @unexpected_shape("embeddings answer")
    def embeddings_response(self, body: bytes, request: Json) -> Json:
        data = loads_object(body)
        if "embedding" in data:  # Titan
            tokens = data.get("inputTextTokenCount")
            vectors = [data["embedding"]]
        else:  # Cohere: a list of vectors, or {"float": [...]} when embedding_types was set
            raw = data["embeddings"]
            vectors = raw["float"] if isinstance(raw, dict) else raw
            tokens = None
        if not isinstance(tokens, int):
            tokens = estimate_tokens(embedding_inputs(request))
        return embeddings_list(vectors, request, tokens)

    async def _sign(self, url: str, headers: dict[str, str], payload: bytes) -> dict[str, str]:
        creds = await self._frozen_credentials()
        return sign_headers(creds, str(self.region), SERVICE, url, headers, payload)

    def chat_response(self, body: bytes) -> Json:
        return translate_response(loads_object(body), "")

    def chat_stream(self, model: str) -> StreamTranslator:
        return BedrockStreamTranslator(model, self.max_event_bytes)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        return bedrock_error(status, headers, body)
