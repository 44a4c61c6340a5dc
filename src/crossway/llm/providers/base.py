"""The interface every LLM provider implements.

A provider turns a canonical request (an OpenAI Chat Completions body, as a dict) into an HTTP
request for its API, and turns the answer back into canonical form: a `chat.completion` dict, or
`chat.completion.chunk` dicts fed incrementally from the byte stream as it arrives.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from crossway.config.llm import DEFAULT_MAX_EVENT_BYTES, ProviderConfig
from crossway.errors import BadRequest, GatewayError

if TYPE_CHECKING:
    from crossway.inference.pool import InferencePool
    from crossway.llm.providers.common import ChunkFactory

Json = dict[str, Any]


@dataclass(slots=True)
class UpstreamRequest:
    """An HTTP request ready to send upstream."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class StreamTranslator(abc.ABC):
    """Turns a provider's streamed response bytes into canonical chunks, incrementally.

    `feed` is called with each network chunk as it arrives (frames may be split anywhere) and
    returns the `chat.completion.chunk` dicts completed so far; `close` is called at the end of
    the stream and returns any remaining chunks. Usage, when the provider reports it, is
    emitted as a final chunk with `choices: []` and `usage` set, like OpenAI's
    `stream_options.include_usage`. A provider error inside the stream raises `GatewayError`.
    """

    #: the stream's id, creation time and model, when its chunks come from a `ChunkFactory`
    #: (then `feed_lazy` may return text deltas as plain strings)
    chunks: ChunkFactory | None = None

    @abc.abstractmethod
    def feed(self, data: bytes) -> list[Json]: ...

    def feed_lazy(self, data: bytes) -> list[Json | str]:
        """`feed`, except that a chunk whose delta is only `{"content": text}` may be returned as
        `text` itself (made with `chunks`, with no finish reason): a relay that encodes chunks
        can write those from a template instead of building and serializing the dict."""
        return list(self.feed(data))

    def close(self) -> list[Json]:
        return []


class Provider(abc.ABC):
    """One configured provider account."""

    #: The wire format this provider speaks natively ("openai_chat" for OpenAI-style servers).
    native_api: ClassVar[str] = ""
    #: An inference pool: each request goes to the endpoint the pool picks for it.
    pool: InferencePool | None = None

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        #: the cap on one event of a streamed answer (the backend's `max_event_bytes`)
        self.max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Fetch credentials or warm anything the provider needs before serving."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what `start` acquired."""

    @abc.abstractmethod
    async def chat_request(self, body: Json, model: str, stream: bool) -> UpstreamRequest:
        """Build the upstream request for a canonical chat body, asking for `model` upstream."""

    @abc.abstractmethod
    def chat_response(self, body: bytes) -> Json:
        """Translate a successful (2xx) non-streamed answer into a `chat.completion` dict."""

    @abc.abstractmethod
    def chat_stream(self, model: str) -> StreamTranslator:
        """A translator for one streamed answer (chunks carry `model` as the client named it)."""

    @abc.abstractmethod
    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        """Translate a non-2xx answer into the gateway error tree, keeping status and message."""

    async def embeddings_request(self, body: Json, model: str) -> UpstreamRequest:
        """Build the upstream request for an OpenAI Embeddings body, asking for `model` upstream.

        Optional: providers without an embeddings API keep this default, a 400 for the caller.
        """
        raise BadRequest(f"provider {self.name!r} ({self.config.type}) does not serve embeddings")

    def embeddings_response(self, body: bytes, request: Json) -> Json:
        """Translate a successful embeddings answer into OpenAI's `{object: "list", data, model,
        usage}`, honouring the client's `request` (e.g. `encoding_format: base64`)."""
        data: Json = orjson.loads(body)
        return data
