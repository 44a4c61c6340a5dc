"""OpenTelemetry tracing of a real `crossway serve`: spans exported over OTLP (HTTP/protobuf and
gRPC) to a real receiver, the caller's W3C context continued and propagated to the upstream,
retries and failovers as separate attempt spans, sampling (ratio, force and drop rules), and
a dead collector that neither slows requests nor floods the log."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import openai
import pytest

from tests.helpers import Gateway, free_port, start_gateway
from tests.llm.harness import MockLoop
from tests.llm.openai_mock import API_KEY, openai_mock
from tests.mocks.base import MockServer, Reply
from tests.telemetry.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}

CONFIG = """
routes:
  - name: llm
    match: {{path: {{prefix: /v1}}}}
    backend: llm
backends:
  llm:
    type: llm
    routing:
      retry: {{retries: 1, backoff_base: 0.01, backoff_max: 0.02}}
    providers:
      oa: {{type: openai, base_url: "{oa}/v1", api_key: {key}}}
      ob: {{type: openai, base_url: "{ob}/v1", api_key: {key}}}
    models:
      - name: gpt-4o
        targets: [{{provider: oa}}]
      - name: failover
        targets:
          - {{provider: oa, model: fo-a, priority: 0}}
          - {{provider: ob, model: fo-b, priority: 1}}
{telemetry}
"""


@pytest.fixture(scope="module")
def mocks() -> Iterator[tuple[MockServer, MockServer]]:
    loop = MockLoop()
    oa = loop.start(openai_mock())
    ob = loop.start(openai_mock())
    try:
        yield oa, ob
    finally:
        loop.close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as rx:
        yield rx


def _config(mocks: tuple[MockServer, MockServer], telemetry: str = "") -> str:
    oa, ob = mocks
    for mock in mocks:
        mock.replies.clear()
        mock.requests.clear()
        mock.default = Reply()
    return CONFIG.format(oa=oa.url, ob=ob.url, key=API_KEY, telemetry=telemetry)


def _client(gw: Gateway, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.url + "/v1", api_key="unused", max_retries=0, default_headers=headers
    )


def _chat(client: openai.OpenAI, model: str = "gpt-4o") -> str | None:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    return answer.choices[0].message.content


def _by_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_failover_is_one_trace_with_an_attempt_span_each(
    mocks: tuple[MockServer, MockServer], receiver: OtlpReceiver, protocol: str
) -> None:
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    env = {
        **FAST_EXPORT,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": "gw-under-test",
    }
    oa, ob = mocks
    with start_gateway(_config(mocks), env=env) as gw:
        oa.script(Reply(status=503))  # the first deployment fails: failover to the second
        assert _chat(_client(gw, traceparent=TRACEPARENT), "failover")
        spans = receiver.wait_for(
            lambda got: len(_by_trace(got, TRACE_ID)) >= 3, what="server + 2 attempt spans"
        )
    trace = _by_trace(spans, TRACE_ID)
    assert {s.transport for s in trace} == {"grpc" if protocol == "grpc" else "http"}
    (server,) = [s for s in trace if s.kind == "server"]
    assert server.name == "POST llm"
    assert server.parent_id == CALLER_SPAN  # the caller's span is the parent
    assert server.resource["service.name"] == "gw-under-test"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["url.path"] == "/v1/chat/completions"
    assert server.attributes["http.route"] == "llm"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["crossway.route"] == "llm"
    assert server.attributes["crossway.backend"] == "llm"
    assert server.attributes["crossway.request_id"]
    attempts = sorted(
        (s for s in trace if s.kind == "client"), key=lambda s: s.attributes["crossway.attempt"]
    )
    assert [s.attributes["crossway.attempt"] for s in attempts] == [1, 2]
    assert all(s.parent_id == server.span_id for s in attempts)
    first, second = attempts
    assert first.name == "chat fo-a" and second.name == "chat fo-b"
    assert first.status_code == 2 and second.status_code != 2  # the failed attempt is an error
    assert first.attributes["http.response.status_code"] == 503
    for span, model in ((first, "fo-a"), (second, "fo-b")):
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.provider.name"] == "openai"
        assert span.attributes["gen_ai.request.model"] == model
        assert span.attributes["server.address"] == "127.0.0.1"
    assert second.attributes["gen_ai.usage.input_tokens"] == 12
    assert second.attributes["gen_ai.usage.output_tokens"] == 7
    assert second.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert second.attributes["gen_ai.response.model"]
    # Each upstream got the trace context naming its own attempt span as the parent.
    sent_a = oa.requests[-1].headers["traceparent"].split("-")
    sent_b = ob.requests[-1].headers["traceparent"].split("-")
    assert sent_a[1] == TRACE_ID and sent_a[2] == first.span_id
    assert sent_b[1] == TRACE_ID and sent_b[2] == second.span_id


def test_retry_on_one_deployment_is_two_attempt_spans(
    mocks: tuple[MockServer, MockServer], receiver: OtlpReceiver
) -> None:
    oa, _ = mocks
    telemetry = f"telemetry:\n  tracing:\n    endpoint: {receiver.http_endpoint}\n"
    with start_gateway(_config(mocks, telemetry), env=FAST_EXPORT) as gw:
        oa.script(Reply(status=429, retry_after="0"))
        assert _chat(_client(gw, traceparent=TRACEPARENT))
        spans = receiver.wait_for(lambda got: len(_by_trace(got, TRACE_ID)) >= 3)
    attempts = [s for s in _by_trace(spans, TRACE_ID) if s.kind == "client"]
    assert sorted(s.attributes["crossway.attempt"] for s in attempts) == [1, 2]
    assert {s.name for s in attempts} == {"chat gpt-4o"}
    assert sorted(s.status_code for s in attempts) == [0, 2]


def test_malformed_traceparent_starts_a_new_trace(
    mocks: tuple[MockServer, MockServer], receiver: OtlpReceiver
) -> None:
    oa, _ = mocks
    telemetry = f"telemetry:\n  tracing:\n    endpoint: {receiver.http_endpoint}\n"
    with start_gateway(_config(mocks, telemetry), env=FAST_EXPORT) as gw:
        bad = "00-not-a-trace-id-01"
        assert _chat(_client(gw, traceparent=bad, tracestate="==garbage,,"))
        spans = receiver.wait_for(lambda got: any(s.kind == "server" for s in got))
        log = gw.log()
    (server,) = [s for s in spans if s.kind == "server"]
    assert server.parent_id == ""  # a root span of a fresh trace
    assert len(server.trace_id) == 32 and server.trace_id != "0" * 32
    sent = oa.requests[-1].headers["traceparent"].split("-")
    assert sent[1] == server.trace_id  # the new trace is what the upstream continues
    assert "Traceback" not in log


def test_ratio_zero_exports_nothing_but_forced_requests(
    mocks: tuple[MockServer, MockServer], receiver: OtlpReceiver
) -> None:
    telemetry = f"""telemetry:
  tracing:
    endpoint: {receiver.http_endpoint}
    sample_ratio: 0
    force: ['"x-debug-trace" in request.headers && request.headers["x-debug-trace"] == "yes"']
    drop: ['"x-no-trace" in request.headers']
"""
    with start_gateway(_config(mocks, telemetry), env=FAST_EXPORT) as gw:
        for _ in range(5):
            assert _chat(_client(gw))  # ratio 0: not sampled
        # A caller's sampled flag is honoured (parent-based) unless a drop rule says otherwise.
        assert _chat(_client(gw, traceparent=TRACEPARENT, **{"x-no-trace": "yes"}))
        assert _chat(_client(gw, **{"x-debug-trace": "yes"}))  # forced: exported
        spans = receiver.wait_for(lambda got: any(s.kind == "server" for s in got))
        upstream = mocks[0].requests
    servers = [s for s in spans if s.kind == "server"]
    assert len(servers) == 1  # only the forced request's trace
    assert {s.trace_id for s in spans} == {servers[0].trace_id}
    assert TRACE_ID not in {s.trace_id for s in spans}
    # Unsampled requests still carry a (not sampled) context upstream.
    flags = upstream[0].headers["traceparent"].rsplit("-", 1)[1]
    assert int(flags, 16) & 1 == 0


def test_dead_collector_slows_nothing_and_is_logged_once(
    mocks: tuple[MockServer, MockServer],
) -> None:
    def latencies(gw: Gateway, seconds: float) -> list[float]:
        client = _client(gw)
        _chat(client)  # warm the pools
        samples: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end or len(samples) < 20:
            started = time.perf_counter()
            _chat(client)
            samples.append(time.perf_counter() - started)
        return samples

    with start_gateway(_config(mocks)) as gw:
        off = statistics.median(latencies(gw, 0.5))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    telemetry = f"telemetry:\n  tracing:\n    endpoint: {dead}\n    export_timeout: 0.3\n"
    with start_gateway(_config(mocks, telemetry), env=FAST_EXPORT) as gw:
        # Long enough for several batches to fail (each export gives up after 0.3 s).
        on = statistics.median(latencies(gw, 2.0))
        log = gw.log()
    assert on < off * 3 + 0.005, (on, off)
    assert log.count("tracing: exporting spans to") == 1, log  # logged once, however many batches
    assert "Traceback" not in log


def test_garbage_collector_answer_is_logged_once(
    mocks: tuple[MockServer, MockServer], receiver: OtlpReceiver
) -> None:
    receiver.mode = "error"
    telemetry = (
        f"telemetry:\n  tracing:\n    endpoint: {receiver.http_endpoint}\n    export_timeout: 0.3\n"
    )
    with start_gateway(_config(mocks, telemetry), env=FAST_EXPORT) as gw:
        assert _chat(_client(gw))
        receiver.wait_for(lambda _: receiver.attempts > 0, what="a refused export")
        receiver.mode = "ok"  # the collector recovers: the next batches arrive
        deadline = time.monotonic() + 20
        while not receiver.snapshot() and time.monotonic() < deadline:
            assert _chat(_client(gw))
        receiver.wait_for(lambda got: len(got) > 0)
        log = gw.log()
    assert log.count("failed (") == 1, log
    assert "works again" in log


def test_capture_content_is_redacted_and_bounded(
    mocks: tuple[MockServer, MockServer], receiver: OtlpReceiver
) -> None:
    telemetry = f"""telemetry:
  tracing:
    endpoint: {receiver.http_endpoint}
    capture_content: true
    capture_max_bytes: 300
"""
    with start_gateway(_config(mocks, telemetry), env=FAST_EXPORT) as gw:
        client = _client(gw)
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "my key is sk-verysecret1234567890"}],
        )
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "long " * 200}]
        )
        spans = receiver.wait_for(
            lambda got: len([s for s in got if s.kind == "client"]) >= 2, what="2 attempts"
        )
    attempts = [s for s in spans if s.kind == "client"]
    events = [dict(s.events) for s in attempts]
    prompts = [e["gen_ai.content.prompt"]["gen_ai.prompt"] for e in events]
    assert any("**********" in p for p in prompts)
    assert not any("sk-verysecret" in p for p in prompts)
    assert all(len(p.encode()) <= 300 for p in prompts)
    assert any(e["gen_ai.content.prompt"].get("crossway.truncated") for e in events)
    assert all("gen_ai.completion" in e["gen_ai.content.completion"] for e in events)


def test_no_content_captured_by_default(
    mocks: tuple[MockServer, MockServer], receiver: OtlpReceiver
) -> None:
    telemetry = f"telemetry:\n  tracing:\n    endpoint: {receiver.http_endpoint}\n"
    with start_gateway(_config(mocks, telemetry), env=FAST_EXPORT) as gw:
        assert _chat(_client(gw))
        spans = receiver.wait_for(lambda got: any(s.kind == "client" for s in got))
    assert all(not s.events for s in spans)


def test_unsampled_requests_make_no_spans_and_pass_the_context_on(
    mocks: tuple[MockServer, MockServer], receiver: OtlpReceiver
) -> None:
    """With a ratio and no force/drop rules, an unsampled request skips the SDK: no span is
    exported, the caller's unsampled `traceparent` reaches the upstream unchanged, a request
    without one sends a new unsampled context, and a caller's sampled context is still traced."""
    unsampled = f"00-{'5' * 32}-00f067aa0ba902b7-00"
    telemetry = f"""telemetry:
  tracing:
    endpoint: {receiver.http_endpoint}
    sample_ratio: 0
"""
    with start_gateway(_config(mocks, telemetry), env=FAST_EXPORT) as gw:
        assert _chat(_client(gw, traceparent=unsampled, tracestate="vendor=1"))
        assert _chat(_client(gw))
        assert _chat(_client(gw, traceparent=TRACEPARENT))  # sampled by the caller: traced
        spans = receiver.wait_for(lambda got: any(s.kind == "server" for s in got))
        upstream = [r.headers for r in mocks[0].requests]
    assert upstream[0]["traceparent"] == unsampled
    assert upstream[0]["tracestate"] == "vendor=1"
    fresh = upstream[1]["traceparent"].split("-")
    assert len(fresh) == 4 and fresh[1] not in (TRACE_ID, "0" * 32) and fresh[3] == "00"
    assert {s.trace_id for s in spans} == {TRACE_ID}
    assert len([s for s in spans if s.kind == "server"]) == 1
    sampled_up = upstream[2]["traceparent"].split("-")
    assert sampled_up[1] == TRACEPARENT.split("-")[1] and int(sampled_up[3], 16) & 1
