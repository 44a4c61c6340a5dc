"""A small endpoint picker (EPP) for tests: an Envoy ext_proc gRPC server on a free loopback
port, answering as the Gateway API Inference Extension's EPP does, with a behaviour a test sets.

    async with EppServer(Behaviour(endpoints=["127.0.0.1:8001"])) as epp:
        client = EndpointPickerClient(EndpointPickerConfig(address=epp.address), "pool")
        ...
        epp.behaviour = Behaviour(immediate=(429, b"shed"))   # change it between picks

It waits for the whole body (FULL_DUPLEX_STREAMED), then answers the headers (the endpoint in
`x-gateway-destination-endpoint` and/or dynamic metadata), then the body (streamed chunks, or
one buffered mutation, or unchanged), and keeps the stream open as Envoy's peer does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2

DESTINATION = "x-gateway-destination-endpoint"


@dataclass
class Behaviour:
    """How the test picker answers."""

    endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:8001"])
    """Picked endpoints, primary first (sent comma-separated)."""
    via: Literal["header", "metadata", "both"] = "header"
    """Where the endpoints are named."""
    by_model: dict[str, str] | None = None
    """Pick by the `model` of the JSON body (model -> endpoint) instead of `endpoints`."""
    body: bytes | None = None
    """Replace the request body with this."""
    body_as: Literal["streamed", "buffered"] = "streamed"
    """Send the replaced body as `streamed_response` chunks or as one `body` mutation."""
    chunk: int = 62_000
    """Size of a streamed body chunk."""
    echo_body: bool = False
    """Stream the unchanged body back (as the reference EPP does in full-duplex mode)."""
    set_headers: dict[str, str] = field(default_factory=dict)
    """Other headers to set."""
    immediate: tuple[int, bytes] | None = None
    """Answer with an immediate response (status, body) instead."""
    hang: bool = False
    """Never answer (until the client gives up)."""
    close_without_answer: bool = False
    """End the stream (OK) as soon as the headers arrive."""
    abort: grpc.StatusCode | None = None
    """End the stream with this gRPC error once the body is in."""


class _Servicer(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, server: EppServer) -> None:
        self.server = server

    async def Process(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        seen: list[Any] = []
        self.server.streams.append(seen)
        try:
            behaviour = self.server.behaviour
            body = b""
            async for request in requests:
                seen.append(request)
                kind = request.WhichOneof("request")
                if kind == "request_headers":
                    if behaviour.close_without_answer:
                        return
                    if not request.request_headers.end_of_stream:
                        continue
                elif kind == "request_body":
                    body += request.request_body.body
                    if not request.request_body.end_of_stream:
                        continue
                else:
                    continue
                if behaviour.hang:
                    await asyncio.Event().wait()
                if behaviour.abort is not None:
                    await context.abort(behaviour.abort, "picker failed")
                for response in _answer(behaviour, body, kind == "request_body"):
                    yield response
        finally:
            self.server.finished += 1
            async with self.server.changed:
                self.server.changed.notify_all()


def _answer(behaviour: Behaviour, body: bytes, had_body: bool) -> list[Any]:
    if behaviour.immediate is not None:
        status, text = behaviour.immediate
        return [
            pb.ProcessingResponse(
                immediate_response=pb.ImmediateResponse(
                    status=http_status_pb2.HttpStatus(code=status),
                    body=text,
                    headers=pb.HeaderMutation(set_headers=[_header("retry-after", "1")]),
                )
            )
        ]
    endpoints = behaviour.endpoints
    if behaviour.by_model is not None:
        endpoints = [behaviour.by_model[json.loads(body)["model"]]]
    named = ",".join(endpoints)
    headers = [_header(k, v) for k, v in behaviour.set_headers.items()]
    if behaviour.via in ("header", "both"):
        headers.insert(0, _header(DESTINATION, named))
    new_body = behaviour.body if behaviour.body is not None else None
    if new_body is not None:
        headers.append(_header("content-length", str(len(new_body))))
    first = pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(
            response=pb.CommonResponse(
                clear_route_cache=True, header_mutation=pb.HeaderMutation(set_headers=headers)
            )
        )
    )
    if behaviour.via in ("metadata", "both"):
        first.dynamic_metadata.fields["envoy.lb"].struct_value.fields[
            DESTINATION
        ].string_value = named
    answers = [first]
    if not had_body:
        return answers
    if new_body is None and behaviour.echo_body:
        new_body = body
    if new_body is None:
        answers.append(pb.ProcessingResponse(request_body=pb.BodyResponse()))
    elif behaviour.body_as == "buffered":
        answers.append(_body_response(pb.BodyMutation(body=new_body)))
    else:
        pieces = [
            new_body[i : i + behaviour.chunk] for i in range(0, len(new_body), behaviour.chunk)
        ]
        pieces = pieces or [b""]
        for i, piece in enumerate(pieces):
            streamed = pb.StreamedBodyResponse(body=piece, end_of_stream=i == len(pieces) - 1)
            answers.append(_body_response(pb.BodyMutation(streamed_response=streamed)))
    return answers


def _body_response(mutation: Any) -> Any:
    return pb.ProcessingResponse(
        request_body=pb.BodyResponse(response=pb.CommonResponse(body_mutation=mutation))
    )


def _header(key: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, raw_value=value.encode())
    )


class EppServer:
    """The test picker, serving on a free loopback port while in `async with`."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.behaviour = behaviour or Behaviour()
        self.streams: list[list[Any]] = []  # the requests of each stream, as received
        self.finished = 0  # streams that ended (answered, cancelled or closed)
        self.changed = asyncio.Condition()
        self.tls = tls  # (certificate chain PEM, private key PEM)
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> EppServer:
        server = grpc.aio.server()
        pb_grpc.add_ExternalProcessorServicer_to_server(_Servicer(self), server)
        if self.tls is None:
            self.port = server.add_insecure_port("127.0.0.1:0")
        else:
            credentials = grpc.ssl_server_credentials([(self.tls[1], self.tls[0])])
            self.port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        self._server = server
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def wait_finished(self, count: int, within: float = 5.0) -> None:
        """Wait until `count` streams have ended on the server's side."""
        async with asyncio.timeout(within):
            async with self.changed:
                await self.changed.wait_for(lambda: self.finished >= count)

    def headers(self, stream: int = -1) -> dict[str, str]:
        """The request headers one stream carried."""
        first = self.streams[stream][0]
        return {
            h.key: (h.raw_value.decode() if h.raw_value else h.value)
            for h in first.request_headers.headers.headers
        }

    def candidates(self, stream: int = -1) -> list[str]:
        """The subset hint one stream carried."""
        meta = self.streams[stream][0].metadata_context.filter_metadata
        values = meta["envoy.lb.subset_hint"].fields["x-gateway-destination-endpoint-subset"]
        return [v.string_value for v in values.list_value.values]

    def body(self, stream: int = -1) -> bytes:
        """The request body one stream carried."""
        return b"".join(
            r.request_body.body for r in self.streams[stream] if r.HasField("request_body")
        )
