"""An external endpoint picker (the Gateway API Inference Extension's EPP), asked over Envoy's
ext_proc gRPC protocol which endpoint of a pool serves a request.

One bidirectional `ExternalProcessor.Process` stream per request, as Envoy opens it in
`FULL_DUPLEX_STREAMED` request-body mode:

    gateway -> EPP   request_headers (pseudo headers first, end_of_stream false),
                     metadata_context  envoy.lb.subset_hint /
                                       x-gateway-destination-endpoint-subset: [ip:port, ...],
                     protocol_config   request_body_mode FULL_DUPLEX_STREAMED
    gateway -> EPP   request_body chunks, the last with end_of_stream true
    EPP -> gateway   request_headers response: header_mutation.set_headers holds
                     x-gateway-destination-endpoint: "ip:port[,ip:port...]" (primary, then
                     fallbacks), and/or dynamic_metadata envoy.lb / x-gateway-destination-endpoint
    EPP -> gateway   request_body response(s): unchanged, or a body mutation (a whole `body`, or
                     `streamed_response` chunks up to one with end_of_stream)
    or               immediate_response (e.g. 429 shed, 503 nothing ready) to answer the client

See docs/proposals/004-endpoint-picker-protocol in kubernetes-sigs/gateway-api-inference-extension.
The gRPC channel and stub are made once (`start`) and shared by every pick.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2

from crossway.config.inference import EndpointPickerConfig
from crossway.errors import ServiceUnavailable

DESTINATION_HEADER: Final = "x-gateway-destination-endpoint"
"""Header (and dynamic-metadata key) naming the picked endpoints."""
DESTINATION_NAMESPACE: Final = "envoy.lb"
"""Dynamic-metadata namespace of the picked endpoints."""
SUBSET_NAMESPACE: Final = "envoy.lb.subset_hint"
"""Request metadata namespace of the candidate endpoints."""
SUBSET_KEY: Final = "x-gateway-destination-endpoint-subset"
"""Request metadata key of the candidate endpoints (a list of `ip:port`)."""
BODY_CHUNK_BYTES: Final = 62_000
"""Largest body chunk sent in one message (the reference EPP's own chunk size, under the 64 KiB
some proxies cap a chunk at)."""
MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024
"""Largest message, and largest replaced body, accepted from the picker."""
RECONNECT_BACKOFF_MS: Final = (100, 1000)
"""Initial and longest wait (ms) before reconnecting to a picker that was down: a restarted
picker is used again within a second (gRPC's own default backs off up to two minutes)."""
WITHHELD_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-goog-api-key"}
)
"""The client's credentials for Crossway itself; the picker has no use for them."""
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
"""Headers that describe one connection, not the request: never sent (content-length is
recomputed) and never taken from the picker's mutation."""
DEFAULT_PATH: Final = "/v1/chat/completions"
"""`:path` sent when the caller's headers name none."""

_FULL_DUPLEX: Final = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
_BODY_NONE: Final = processing_mode_pb2.ProcessingMode.NONE
_HOST_PORT: Final = re.compile(
    r"^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)):(\d{1,5})$"
)


class EndpointPickerError(ServiceUnavailable):
    """The endpoint picker could not be used for a request: unreachable, too slow, an answer
    that breaks the protocol, or no endpoint of the pool named. The pool then fails open (its
    own scheduler picks) or closed (503), as configured."""


@dataclass(slots=True)
class PickResult:
    """What the picker decided for one request."""

    endpoints: list[str] = field(default_factory=list)
    """`host:port` of the endpoints to try, primary first, then fallbacks (deduplicated, each
    one of the candidates, spelled as the caller spelled it)."""
    body: bytes | None = None
    """The request body to send instead of the client's, when the picker changed it."""
    set_headers: dict[str, str] = field(default_factory=dict)
    """Other request headers the picker set (lower-case names), without the endpoint header,
    pseudo headers and hop-by-hop headers."""
    immediate: tuple[int, bytes, dict[str, str]] | None = None
    """Status, body and headers to answer the client with directly (e.g. a 429 when the pool
    sheds the request); then `endpoints` is empty."""


@functools.lru_cache(maxsize=4096)
def normalize_endpoint(value: str) -> str | None:
    """`host:port` in one spelling (lower-case host, compressed IPv6 in brackets), or None when
    `value` is not `host:port`."""
    match = _HOST_PORT.match(value.strip())
    if match is None:
        return None
    v6, host, port_text = match.groups()
    port = int(port_text)
    if not 1 <= port <= 65535:
        return None
    if v6 is not None:
        try:
            return f"[{ipaddress.IPv6Address(v6).compressed}]:{port}"
        except ValueError:
            return None
    return f"{host.lower()}:{port}"


class _Answer:
    """The picker's answers on one stream, accumulated until they say everything."""

    __slots__ = (
        "body_chunks",
        "body_done",
        "header_endpoints",
        "headers_done",
        "immediate",
        "metadata_endpoints",
        "replaced_body",
        "replaced_size",
        "set_headers",
    )

    def __init__(self, body_expected: bool) -> None:
        self.headers_done = False
        self.body_done = not body_expected
        self.header_endpoints: str | None = None
        self.metadata_endpoints: str | None = None
        self.set_headers: dict[str, str] = {}
        self.replaced_body: bytes | None = None
        self.body_chunks: list[bytes] | None = None
        self.replaced_size = 0
        self.immediate: tuple[int, bytes, dict[str, str]] | None = None

    @property
    def complete(self) -> bool:
        return self.immediate is not None or (self.headers_done and self.body_done)

    def absorb(self, response: Any) -> None:
        """Take in one `ProcessingResponse`; raise ValueError when it breaks the protocol."""
        if response.HasField("dynamic_metadata"):
            self._metadata(response.dynamic_metadata)
        kind = response.WhichOneof("response")
        if kind == "immediate_response":
            self.immediate = _immediate(response.immediate_response)
        elif kind == "request_headers":
            if self.headers_done:
                raise ValueError("a second request_headers answer")
            self.headers_done = True
            if response.HasField("mode_override") and (
                response.mode_override.request_body_mode == _BODY_NONE
            ):
                self.body_done = True  # it does not want the body: it will not answer for it
            self._common(response.request_headers.response)
        elif kind == "request_body":
            if self.body_done and self.body_chunks is None:
                raise ValueError("a request_body answer after the body was answered")
            self._common(response.request_body.response)
            if self.body_chunks is None:
                self.body_done = True
        elif kind is not None:
            raise ValueError(f"an unexpected {kind} answer")

    def _common(self, common: Any) -> None:
        for option in common.header_mutation.set_headers:
            header = option.header
            name = header.key.lower()
            value = (
                header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
            )
            if name == DESTINATION_HEADER:
                self.header_endpoints = value
            elif not name.startswith(":") and name not in HOP_BY_HOP:
                self.set_headers[name] = value
        if not common.HasField("body_mutation"):
            return
        mutation = common.body_mutation
        which = mutation.WhichOneof("mutation")
        if which == "body":
            self._replace(mutation.body, done=True)
        elif which == "clear_body":
            self._replace(b"", done=True)
        elif which == "streamed_response":
            streamed = mutation.streamed_response
            self._replace(
                streamed.body,
                done=streamed.end_of_stream or streamed.end_of_stream_without_message,
            )

    def _replace(self, chunk: bytes, *, done: bool) -> None:
        self.replaced_size += len(chunk)
        if self.replaced_size > MAX_ANSWER_BYTES:
            raise ValueError(f"a replaced body over {MAX_ANSWER_BYTES} bytes")
        if self.body_chunks is None:
            self.body_chunks = []
        self.body_chunks.append(chunk)
        if done:
            self.replaced_body = b"".join(self.body_chunks)
            self.body_chunks = None
            self.body_done = True

    def _metadata(self, struct: Any) -> None:
        namespace = struct.fields.get(DESTINATION_NAMESPACE)
        if namespace is None or namespace.WhichOneof("kind") != "struct_value":
            return
        value = namespace.struct_value.fields.get(DESTINATION_HEADER)
        if value is None:
            return
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            self.metadata_endpoints = value.string_value
        elif kind == "list_value":
            self.metadata_endpoints = ",".join(
                v.string_value for v in value.list_value.values if v.string_value
            )


def _immediate(answer: Any) -> tuple[int, bytes, dict[str, str]]:
    status = answer.status.code if answer.HasField("status") else 200  # Envoy's default
    if not 200 <= status <= 599:
        raise ValueError(f"an immediate response with status {status}")
    headers: dict[str, str] = {}
    for option in answer.headers.set_headers:
        name = option.header.key.lower()
        if name.startswith(":") or name in HOP_BY_HOP:
            continue
        raw = option.header.raw_value
        headers[name] = raw.decode("utf-8", "replace") if raw else option.header.value
    return status, bytes(answer.body), headers


class EndpointPickerClient:
    """Asks one external endpoint picker which endpoint serves each request of a pool."""

    def __init__(self, config: EndpointPickerConfig, pool_name: str) -> None:
        """Read `ca_file` (at start-up); raises EndpointPickerError when it cannot."""
        self.config = config
        self.pool_name = pool_name
        self._channel: grpc.aio.Channel | None = None
        self._process: Any = None  # the stub's Process method
        self._what = f"endpoint picker {config.address} (pool {pool_name})"
        self._roots: bytes | None = None  # PEM CAs to trust; None: the system's
        if config.ca_file:
            try:
                with open(config.ca_file, "rb") as handle:
                    self._roots = handle.read()
            except OSError as exc:
                raise EndpointPickerError(
                    f"{self._what}: cannot read ca_file {config.ca_file}: {exc.strerror}"
                ) from None

    async def start(self) -> None:
        """Open the gRPC channel (it connects on the first pick, and reconnects by itself)."""
        if self._channel is not None:
            return
        options = [
            ("grpc.max_receive_message_length", MAX_ANSWER_BYTES),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
            # The picker sits next to the gateway; an http(s)_proxy in the environment is for
            # other traffic, as Envoy's ext_proc client ignores it too.
            ("grpc.enable_http_proxy", 0),
        ]
        if self.config.tls or self.config.ca_file:
            credentials = grpc.ssl_channel_credentials(root_certificates=self._roots)
            channel = grpc.aio.secure_channel(self.config.address, credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(self.config.address, options=options)
        self._channel = channel
        self._process = pb_grpc.ExternalProcessorStub(channel).Process

    async def close(self) -> None:
        """Close the channel; picks still running fail."""
        channel, self._channel, self._process = self._channel, None, None
        if channel is not None:
            await channel.close(grace=None)

    async def pick(
        self, headers: Sequence[tuple[str, str]], body: bytes, candidates: Sequence[str]
    ) -> PickResult:
        """Ask which of `candidates` (`host:port`) serves the request with these headers and
        body. Raises EndpointPickerError when the picker fails or names none of them."""
        if not candidates:
            raise EndpointPickerError(f"{self._what}: no endpoint of the pool is ready")
        if self._process is None:
            await self.start()
        first = self._headers_message(headers, body, candidates)
        call = self._process(timeout=self.config.timeout, wait_for_ready=False)
        try:
            answer = await self._exchange(call, first, body)
        except grpc.aio.AioRpcError as exc:
            raise self._rpc_error(exc) from None
        except ValueError as exc:
            raise EndpointPickerError(f"{self._what}: malformed answer: {exc}") from None
        finally:
            if not call.done():
                call.cancel()
        return self._result(answer, body, candidates)

    async def _exchange(self, call: Any, first: Any, body: bytes) -> _Answer:
        answer = _Answer(body_expected=bool(body))
        try:
            await call.write(first)
            for start in range(0, len(body), BODY_CHUNK_BYTES):
                chunk = body[start : start + BODY_CHUNK_BYTES]
                last = start + BODY_CHUNK_BYTES >= len(body)
                await call.write(
                    pb.ProcessingRequest(request_body=pb.HttpBody(body=chunk, end_of_stream=last))
                )
        except asyncio.InvalidStateError:
            pass  # it ended the stream already: what it answered (if anything) is read below
        while not answer.complete:
            response = await call.read()
            if response is grpc.aio.EOF:
                if answer.headers_done and answer.body_chunks is None:
                    break  # it answered the headers and then ended the stream: body unchanged
                raise EndpointPickerError(
                    f"{self._what}: closed the stream without "
                    + ("finishing the replaced body" if answer.headers_done else "an answer")
                )
            answer.absorb(response)
        return answer

    def _headers_message(
        self, headers: Sequence[tuple[str, str]], body: bytes, candidates: Sequence[str]
    ) -> Any:
        pseudo: dict[str, str] = {}
        regular: list[Any] = []
        host = ""
        content_type = False
        for name, value in headers:
            key = name.lower()
            if key.startswith(":"):
                pseudo[key] = value
                continue
            if key == "host":
                host = value
            if key in WITHHELD_HEADERS or key in HOP_BY_HOP:
                continue
            if key == "content-type":
                content_type = True
            regular.append(base_pb2.HeaderValue(key=key, raw_value=value.encode()))
        pseudo.setdefault(":method", "POST")
        pseudo.setdefault(":scheme", "http")
        pseudo.setdefault(":path", DEFAULT_PATH)
        pseudo.setdefault(":authority", host or self.pool_name)
        entries = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pseudo.items()]
        entries.extend(regular)
        if not content_type and body:
            entries.append(base_pb2.HeaderValue(key="content-type", raw_value=b"application/json"))
        if body:
            entries.append(
                base_pb2.HeaderValue(key="content-length", raw_value=str(len(body)).encode())
            )
        message = pb.ProcessingRequest(
            request_headers=pb.HttpHeaders(
                headers=base_pb2.HeaderMap(headers=entries), end_of_stream=not body
            ),
            protocol_config=pb.ProtocolConfiguration(
                request_body_mode=_FULL_DUPLEX, response_body_mode=_BODY_NONE
            ),
        )
        subset = message.metadata_context.filter_metadata[SUBSET_NAMESPACE]
        subset.fields[SUBSET_KEY].list_value.values.extend(
            [struct_pb2.Value(string_value=c) for c in candidates]
        )
        return message

    def _result(self, answer: _Answer, body: bytes, candidates: Sequence[str]) -> PickResult:
        if answer.immediate is not None:
            return PickResult(immediate=answer.immediate)
        named = answer.header_endpoints
        if not named:
            named = answer.metadata_endpoints
        if not named or not named.strip():
            raise EndpointPickerError(f"{self._what}: named no endpoint")
        pool = {normalize_endpoint(c): c for c in candidates}
        endpoints: list[str] = []
        outside: list[str] = []
        malformed: list[str] = []
        for part in named.split(","):
            part = part.strip()
            if not part:
                continue
            key = normalize_endpoint(part)
            if key is None:
                malformed.append(part)
            elif key not in pool:
                outside.append(part)
            elif pool[key] not in endpoints:
                endpoints.append(pool[key])
        if not endpoints:
            if malformed:
                raise EndpointPickerError(
                    f"{self._what}: malformed answer: endpoint {malformed[0]!r} is not host:port"
                )
            raise EndpointPickerError(
                f"{self._what}: picked endpoint {outside[0]} is not in the pool"
            )
        replaced = answer.replaced_body
        return PickResult(
            endpoints=endpoints,
            body=replaced if replaced is not None and replaced != body else None,
            set_headers=answer.set_headers,
        )

    def _rpc_error(self, exc: grpc.aio.AioRpcError) -> EndpointPickerError:
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return EndpointPickerError(f"{self._what}: no answer within {self.config.timeout}s")
        if code == grpc.StatusCode.UNAVAILABLE:
            return EndpointPickerError(f"{self._what}: unavailable ({exc.details()})")
        if code == grpc.StatusCode.CANCELLED and self._channel is None:
            return EndpointPickerError(f"{self._what}: closed")
        return EndpointPickerError(f"{self._what}: failed: {code.name} {exc.details()}")
