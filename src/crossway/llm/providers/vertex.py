"""Vertex AI: Gemini and Anthropic (Claude) models on Google Cloud, with service-account auth.

    {host}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent
        (streamed: :streamGenerateContent?alt=sse)     -> Gemini format (crossway.llm.providers.gemini)
    {host}/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict
        (streamed: :streamRawPredict)                  -> Anthropic format, `anthropic_version` in
                                                          the body, no `model` field

`host` is `https://{location}-aiplatform.googleapis.com` (`https://aiplatform.googleapis.com`
for `global`), or `base_url` when set. Models whose name starts with `claude` (or is written
`anthropic/<model>`) go to the Anthropic publisher, every other one to Google's.

Auth: `service_account_file` / `service_account_json` are exchanged for OAuth access tokens
(`crossway.llm.providers.google_auth`), cached until shortly before they expire; `api_key`, if
given instead, is used as a ready access token.

Answers are recognised by their shape (Anthropic `message` / SSE `event:` lines vs Gemini
`candidates`), so one provider serves both publishers without remembering which was asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import quote

import orjson

from crossway.config.llm import DEFAULT_MAX_EVENT_BYTES, DEFAULT_VERTEX_LOCATION, ProviderConfig
from crossway.errors import GatewayError, UpstreamError
from crossway.llm.providers import anthropic, gemini
from crossway.llm.providers.base import Json, Provider, StreamTranslator, UpstreamRequest
from crossway.llm.providers.common import loads_object
from crossway.llm.providers.google_auth import ServiceAccount
from crossway.proxy.outbound import OutboundClient
from crossway.proxy.sse import EventTooLarge

DEFAULT_VERTEX_ANTHROPIC_VERSION: Final = "vertex-2023-10-16"


def publisher_of(model: str) -> tuple[str, str]:
    """`(publisher, model id)` for a model name as configured."""
    if "/" in model:
        publisher, _, name = model.partition("/")
        if publisher in ("anthropic", "google"):
            return publisher, name
    return ("anthropic" if model.startswith("claude") else "google"), model


class VertexProvider(Provider):
    """One Google Cloud project and region on Vertex AI."""

    native_api = "vertex"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.location = config.location or DEFAULT_VERTEX_LOCATION
        self.project = config.project
        if config.base_url:
            self.host = config.base_url.rstrip("/")
        elif self.location == "global":
            self.host = "https://aiplatform.googleapis.com"
        else:
            self.host = f"https://{self.location}-aiplatform.googleapis.com"
        self.max_tokens = config.default_max_tokens or anthropic.DEFAULT_MAX_TOKENS
        self.anthropic_version = config.anthropic_version or DEFAULT_VERTEX_ANTHROPIC_VERSION
        self.static_token = config.api_key.get_secret_value() if config.api_key is not None else ""
        self.headers = {"content-type": "application/json"}
        self.headers.update({k.lower(): v.get_secret_value() for k, v in config.headers.items()})
        self.account: ServiceAccount | None = None
        self._session: OutboundClient | None = None
        self._lock = asyncio.Lock()
        self._loaded = False

    async def start(self) -> None:
        try:
            await self._load()
        except UpstreamError:
            pass  # reported on each request until the key can be read (the gateway still starts)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _load(self) -> None:
        """Read the service-account key (file I/O in a thread) once."""
        if self._loaded:
            return
        async with self._lock:
            if self._loaded:
                return
            cfg = self.config
            text: str | bytes | None = None
            if cfg.service_account_file is not None:
                try:
                    text = await asyncio.to_thread(_read_key_file, cfg.service_account_file)
                except OSError as exc:
                    raise UpstreamError(
                        f"provider {self.name}: cannot read service_account_file: {exc}"
                    ) from None
            elif cfg.service_account_json is not None:
                text = cfg.service_account_json.get_secret_value()
            if text is not None:
                try:
                    self.account = ServiceAccount.from_json(text)
                except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
                    raise UpstreamError(
                        f"provider {self.name}: unusable service account key: {exc}"
                    ) from None
                self.project = self.project or self.account.project_id
            self._loaded = True

    async def _authorization(self) -> str:
        await self._load()
        if self.account is not None:
            if self._session is None:
                self._session = OutboundClient()  # no redirects: the assertion stays home
            return "Bearer " + await self.account.token(self._session)
        if self.static_token:
            return "Bearer " + self.static_token
        raise UpstreamError(
            f"provider {self.name}: no credentials (set service_account_file or api_key)"
        )

    def model_url(self, model: str, stream: bool) -> str:
        if not self.project:
            raise UpstreamError(
                f"provider {self.name}: no project (set project, or use a service account key)"
            )
        publisher, name = publisher_of(model)
        if publisher == "anthropic":
            action = "streamRawPredict" if stream else "rawPredict"
        else:
            action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return (
            f"{self.host}/v1/projects/{quote(self.project, safe='')}/locations/{self.location}"
            f"/publishers/{publisher}/models/{quote(name, safe='@.-_')}:{action}"
        )

    async def chat_request(self, body: Json, model: str, stream: bool) -> UpstreamRequest:
        publisher, _ = publisher_of(model)
        if publisher == "anthropic":
            payload = anthropic.translate_request(body, None, stream, self.max_tokens)
            payload["anthropic_version"] = self.anthropic_version
        else:
            payload = gemini.translate_request(body)
        headers = dict(self.headers)
        headers["authorization"] = await self._authorization()
        return UpstreamRequest(
            "POST", self.model_url(model, stream), headers, orjson.dumps(payload)
        )

    def chat_response(self, body: bytes) -> Json:
        data = loads_object(body)
        if data.get("type") == "message" or "stop_reason" in data:
            return anthropic.translate_response(data, str(data.get("model") or ""))
        return gemini.translate_response(data, "")

    def chat_stream(self, model: str) -> StreamTranslator:
        return _SniffingTranslator(model, self.max_event_bytes)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("type") == "error":
            return anthropic.anthropic_error(status, headers, body)
        return gemini.google_error(status, headers, body)


def _read_key_file(path: str) -> bytes:
    return Path(path).expanduser().read_bytes()


class _SniffingTranslator(StreamTranslator):
    """Picks the Anthropic or the Gemini stream translator from the stream's first bytes
    (Anthropic's SSE names its events; Gemini's sends bare `data:` lines)."""

    def __init__(self, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._model = model
        self._max = max_event_bytes
        self._inner: StreamTranslator | None = None
        self._head = b""

    def feed(self, data: bytes) -> list[Json]:
        if self._inner is None:
            self._head += data
            head = self._head.lstrip()
            if len(head) < 6:
                if len(self._head) > self._max:
                    raise EventTooLarge(self._max)
                return []
            if head.startswith(b"event:"):
                self._inner = anthropic.AnthropicStreamTranslator(self._model, self._max)
            else:
                self._inner = gemini.GeminiStreamTranslator(self._model, self._max)
            data, self._head = self._head, b""
        return self._inner.feed(data)

    def close(self) -> list[Json]:
        if self._inner is None:
            raise UpstreamError("the upstream stream ended before any event")
        return self._inner.close()
