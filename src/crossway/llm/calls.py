"""What a client asked for: one `LlmCall` per request, decoded as little as routing needs.

OpenAI Chat decodes only `{model, stream, stream_options}` (msgspec); its bytes go upstream
untouched to OpenAI-style providers, except that a stream must ask for usage exactly once (see
`chat_body`: a client cannot turn off the usage that budgets and cost depend on). Anthropic Messages and Responses are decoded whole and
translated to the canonical chat body up front (the Anthropic and OpenAI passthroughs still
forward the client's bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

import msgspec
import orjson
from msgspec import UNSET, UnsetType

from crossway.errors import BadRequest, GatewayError, InvalidJSON
from crossway.llm.api.anthropic_messages import messages_to_chat
from crossway.llm.api.responses import responses_to_chat
from crossway.llm.providers.base import Json, Provider
from crossway.server.asgi import header
from crossway.types import Scope

CHAT: Final = "chat"
MESSAGES: Final = "anthropic_messages"
RESPONSES: Final = "responses"
EMBEDDINGS: Final = "embeddings"
_INCLUDE_USAGE: Final = b'{"stream_options":{"include_usage":true},'
_STREAM_OPTIONS_KEY: Final = b'"stream_options"'
_JSON_ESCAPE: Final = b"\\u"  # `\u`: the one JSON escape that could spell a key's letters
_ERROR_PATH: Final = re.compile(r"at `\$\.([^`]*)`")
_FORWARDED_ANTHROPIC_HEADERS: Final = (b"anthropic-beta",)


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatHead(msgspec.Struct):
    """The only fields of a chat request the hot path decodes."""

    model: str | None = None
    stream: bool | None = False
    stream_options: _StreamOptions | UnsetType | None = UNSET  # UNSET: no such key at all


class ModelHead(msgspec.Struct):
    """The model name of a request whose other fields are not needed to route it."""

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
    has_stream_options: bool = False  # the body has a `stream_options` key (any value)
    usage_ready: bool = False  # ... exactly once, and it asks for usage: forward as it is
    headers: dict[str, str] = field(default_factory=dict)  # client headers worth forwarding
    request_id: str = ""  # the gateway's request id, sent upstream as `x-request-id`
    scope_headers: list[tuple[bytes, bytes]] | None = (
        None  # the client's (an inference pool reads them)
    )

    def canonical(self) -> Json:
        """The canonical chat body (decoded from the raw body on first use)."""
        if self.untranslatable is not None:
            raise self.untranslatable
        if self.body is None:
            self.body = loads(self.raw)
        return self.body


def loads(raw: bytes) -> Json:
    """A request body as a JSON object, or `InvalidJSON`."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidJSON("request body must be a JSON object")
    return body


def model_of(raw: bytes) -> str:
    """The `model` of a request body (decoding nothing else), or a 400 naming it."""
    try:
        model = _decode_model(raw).model
    except msgspec.DecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON for this endpoint: {exc}") from None
    if not model:
        raise BadRequest("you must provide a model parameter", param="model", code="missing_model")
    return model


def chat_call(raw: bytes) -> LlmCall:
    """An OpenAI Chat Completions request."""
    try:
        head = _decode_head(raw)
    except msgspec.ValidationError as exc:
        match = _ERROR_PATH.search(str(exc))
        raise BadRequest(
            f"invalid request: {exc}", param=match.group(1) if match else None
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON for this endpoint: {exc}") from None
    if not head.model:
        raise BadRequest("you must provide a model parameter", param="model", code="missing_model")
    options = head.stream_options
    stream = bool(head.stream)
    # msgspec, like the JSON parsers upstreams use, keeps the last of duplicate keys.
    wants_usage = isinstance(options, _StreamOptions) and options.include_usage is True
    return LlmCall(
        CHAT,
        head.model,
        stream,
        raw=raw,
        wants_usage=wants_usage,
        has_stream_options=options is not UNSET,
        usage_ready=stream and wants_usage and _key_once(raw),
    )


def _key_once(raw: bytes) -> bool:
    """Whether `stream_options` is spelled exactly once in the body, plainly. Two of them
    (duplicate keys, or one spelled with `\\u` escapes) could be read differently by the
    upstream's parser; such bodies are re-encoded instead of forwarded."""
    return raw.count(_STREAM_OPTIONS_KEY) == 1 and _JSON_ESCAPE not in raw


def messages_call(raw: bytes, scope: Scope) -> LlmCall:
    """An Anthropic Messages request (translated to canonical chat at once)."""
    source = loads(raw)
    _check_stream(source)
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


def responses_call(raw: bytes) -> LlmCall:
    """An OpenAI Responses request (translated to canonical chat when it can be)."""
    source = loads(raw)
    model = source.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Missing required parameter: 'model'.", param="model")
    _check_stream(source)
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


def _check_stream(source: Json) -> None:
    """`stream` must be a boolean: a truthy string or number could be read as a stream by one
    side and not by the other (then the answer's usage is lost)."""
    stream = source.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean", param="stream")


def speaks_natively(call: LlmCall, provider: Provider) -> bool:
    """Whether the provider takes the client's API as it is (bytes pass through)."""
    if call.api in (CHAT, EMBEDDINGS):
        return provider.native_api == "openai_chat"
    if call.modified:
        return False
    if call.api == MESSAGES:
        return provider.config.type == "anthropic"
    return call.api == RESPONSES and provider.config.type == "openai"


def chat_body(call: LlmCall, model: str) -> bytes:
    """The OpenAI Chat body for an OpenAI-style upstream, as close to the client's bytes as the
    request allows.

    A stream always goes upstream with exactly one `stream_options` holding `include_usage:
    true`, whatever the client sent (usage is how cost is recorded; `answers.ChatPassthrough`
    hides it again from a client that did not ask):

        client's body                            sent upstream
        asks for usage, key spelled once         the client's bytes
        no `stream_options` key                  the bytes, `include_usage` spliced in front
        anything else (null, {}, false,          re-encoded: one `stream_options`, the
        duplicate or escaped keys)               client's other options kept
    """
    if not call.modified and model == call.model:
        if not call.stream or call.usage_ready:
            return call.raw
        if not call.has_stream_options:
            raw = call.raw.lstrip()
            if raw.startswith(b"{"):
                return _INCLUDE_USAGE + raw[1:]
    body = dict(call.canonical())  # orjson keeps the last of duplicate keys, as msgspec did
    body["model"] = model
    if call.stream:
        options = body.get("stream_options")
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return orjson.dumps(body)


def with_model(raw: bytes, source: Json, client_model: str, model: str) -> bytes:
    """The client's bytes, or its body re-encoded with the upstream model name."""
    if model == client_model:
        return raw
    return orjson.dumps({**source, "model": model})
