"""A real OTLP trace receiver for tests: OTLP/HTTP protobuf (`POST /v1/traces`) and OTLP/gRPC
(`TraceService/Export`) on free loopback ports, built on `opentelemetry-proto`, aiohttp and
grpcio, on its own event loop thread (so sync tests and SDK clients can use it).

    with otlp_receiver() as rx:
        ... point OTEL_EXPORTER_OTLP_ENDPOINT at rx.http_endpoint (or rx.grpc_endpoint) ...
        spans = rx.wait_for(lambda spans: any(s.name == "POST llm" for s in spans))

`rx.mode` makes it misbehave: "ok", "garbage" (200 with bytes that are not protobuf, or a gRPC
error), "error" (HTTP 503 / gRPC UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.helpers import free_port

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
WAIT_SECONDS = 20.0


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind)


@dataclass
class ReceivedSpan:
    """One exported span, decoded."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    transport: str  # "http" or "grpc"


@dataclass
class OtlpReceiver:
    http_port: int = 0
    grpc_port: int = 0
    mode: str = "ok"
    spans: list[ReceivedSpan] = field(default_factory=list)
    exports: int = 0
    attempts: int = 0
    """Export requests received, answered or not (`mode`)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def collect(self, request: ExportTraceServiceRequest, transport: str) -> None:
        decoded: list[ReceivedSpan] = []
        for rs in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    decoded.append(
                        ReceivedSpan(
                            name=s.name,
                            kind=KINDS.get(s.kind, str(s.kind)),
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={kv.key: _value(kv.value) for kv in s.attributes},
                            status_code=s.status.code,
                            status_message=s.status.message,
                            events=[
                                (e.name, {kv.key: _value(kv.value) for kv in e.attributes})
                                for e in s.events
                            ],
                            resource=resource,
                            transport=transport,
                        )
                    )
        with self._lock:
            self.exports += 1
            self.spans.extend(decoded)

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], bool],
        timeout: float = WAIT_SECONDS,
        what: str = "the expected spans",
    ) -> list[ReceivedSpan]:
        """Poll (bounded) until `predicate(spans)` holds; returns the spans received."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({s.name for s in spans})
                raise AssertionError(f"timed out waiting for {what}; received: {names}")
            time.sleep(0.02)

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    async def Export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> ExportTraceServiceResponse:
        self.receiver.attempts += 1
        if self.receiver.mode == "error":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "receiver told to fail")
        if self.receiver.mode == "garbage":
            await context.abort(grpc.StatusCode.INTERNAL, "\x00garbage\xff")
        self.receiver.collect(request, "grpc")
        return ExportTraceServiceResponse()


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """Run a receiver (HTTP and gRPC) until the block ends."""
    receiver = OtlpReceiver(http_port=free_port(), grpc_port=free_port())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        receiver.attempts += 1
        if receiver.mode == "error":
            return web.Response(status=503, text="receiver told to fail")
        if receiver.mode == "garbage":
            return web.Response(status=200, body=b"\xff\x00not protobuf", content_type="text/html")
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        receiver.collect(message, "http")
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def start() -> tuple[web.AppRunner, grpc.aio.Server]:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", traces)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", receiver.http_port).start()
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(receiver), server)
        server.add_insecure_port(f"127.0.0.1:{receiver.grpc_port}")
        await server.start()
        return runner, server

    async def stop(runner: web.AppRunner, server: grpc.aio.Server) -> None:
        await server.stop(0)
        await runner.cleanup()

    runner, server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield receiver
    finally:
        asyncio.run_coroutine_threadsafe(stop(runner, server), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
