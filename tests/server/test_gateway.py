"""The gateway process end to end: the OpenAI SDK through examples/openai.yaml, errors,
admin plane, limits, workers."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.request
from collections.abc import Iterator

import aiohttp
import openai
import pytest

from tests.helpers import ROOT, Gateway, free_port, start_gateway, wait_for

OPENAI_EXAMPLE = (ROOT / "examples" / "openai.yaml").read_text()


@pytest.fixture
def gateway(sample_openai_process: str) -> Iterator[Gateway]:
    with start_gateway(
        OPENAI_EXAMPLE,
        env={"OPENAI_BASE_URL": sample_openai_process, "OPENAI_API_KEY": "sk-upstream-secret"},
    ) as gw:
        yield gw


def test_openai_sdk_sync_and_streaming(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="anything")
    resp = client.chat.completions.create(
        model="sample-model", messages=[{"role": "user", "content": "hello gateway"}]
    )
    assert resp.choices[0].message.content == "You said: hello gateway"
    assert resp.usage is not None and resp.usage.completion_tokens == 4

    stream = client.chat.completions.create(
        model="sample-model",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    usage = None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "You said: stream me"
    assert usage is not None and usage.total_tokens > 0

    models = client.models.list()
    assert {m.id for m in models.data} >= {"sample-model"}


async def test_openai_sdk_async(gateway: Gateway) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="anything")
    results = await asyncio.gather(
        *[
            client.chat.completions.create(
                model="sample-model", messages=[{"role": "user", "content": f"n{i}"}]
            )
            for i in range(20)
        ]
    )
    assert [r.choices[0].message.content for r in results] == [f"You said: n{i}" for i in range(20)]
    stream = await client.chat.completions.create(
        model="sample-model", messages=[{"role": "user", "content": "a b c"}], stream=True
    )
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == "You said: a b c"
    await client.close()


def test_provider_key_is_injected_and_never_shown() -> None:
    """The upstream sees Crossway's key, not the caller's; the admin config redacts it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            seen.append(self.headers.get("authorization", ""))
            body = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "ok"},
                            "finish_reason": "stop",
                        }
                    ],
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with start_gateway(
            OPENAI_EXAMPLE,
            env={
                "OPENAI_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1",
                "OPENAI_API_KEY": "sk-upstream-secret",
            },
        ) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="caller-key")
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
            assert seen == ["Bearer sk-upstream-secret"]
            with urllib.request.urlopen(gw.admin_url + "/config") as resp:
                shown = resp.read().decode()
            assert "sk-upstream-secret" not in shown and "**********" in shown
    finally:
        server.shutdown()
        server.server_close()


def raw_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    req = urllib.request.Request(
        url, data=body, method="POST", headers=headers or {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_error_statuses_in_openai_shape(gateway: Gateway) -> None:
    status, body = raw_post(gateway.url + "/nowhere", b"{}")
    assert status == 404 and body["error"]["type"] == "not_found_error"

    status, body = raw_post(gateway.url + "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"

    status, body = raw_post(gateway.url + "/v1/chat/completions", b'{"messages": []}')
    assert status == 400 and body["error"]["param"] == "model"

    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="sample-model", messages=[])
    assert "messages" in info.value.message


def test_body_too_large_is_413(sample_openai_process: str) -> None:
    config = OPENAI_EXAMPLE.replace(
        "  host: 127.0.0.1\n", "  host: 127.0.0.1\n  max_body_bytes: 1000\n"
    )
    with start_gateway(config, env={"OPENAI_BASE_URL": sample_openai_process}) as gw:
        big = json.dumps(
            {"model": "sample-model", "messages": [{"role": "user", "content": "x" * 5000}]}
        )
        status, body = raw_post(gw.url + "/v1/chat/completions", big.encode())
        assert status == 413 and body["error"]["type"] == "request_too_large"
        # the gateway is still fine afterwards
        status, _ = raw_post(
            gw.url + "/v1/chat/completions",
            b'{"model":"sample-model","messages":[{"role":"user","content":"hi"}]}',
        )
        assert status == 200


def test_unreachable_upstream_is_502() -> None:
    dead = free_port()
    with start_gateway(
        OPENAI_EXAMPLE, env={"OPENAI_BASE_URL": f"http://127.0.0.1:{dead}/v1"}
    ) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 502
        assert info.value.body["type"] == "upstream_unreachable"  # type: ignore[index]


def test_upstream_timeout_is_504() -> None:
    """An upstream that accepts the connection but never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    config = OPENAI_EXAMPLE.replace(
        "        api_key: ${OPENAI_API_KEY:-}\n",
        "        api_key: ${OPENAI_API_KEY:-}\n        timeouts:\n          first_byte: 0.5\n",
    )
    try:
        with start_gateway(config, env={"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}) as gw:
            status, body = raw_post(gw.url + "/v1/chat/completions", b'{"model":"m","messages":[]}')
            assert status == 504 and body["error"]["type"] == "upstream_timeout"
    finally:
        listener.close()


def test_admin_plane(gateway: Gateway) -> None:
    raw_post(
        gateway.url + "/v1/chat/completions",
        b'{"model":"sample-model","messages":[{"role":"user","content":"hi"}]}',
    )
    with urllib.request.urlopen(gateway.admin_url + "/healthz") as resp:
        assert json.loads(resp.read())["status"] == "ok"
    with urllib.request.urlopen(gateway.admin_url + "/readyz") as resp:
        assert json.loads(resp.read())["ready"] is True
    with urllib.request.urlopen(gateway.admin_url + "/metrics") as resp:
        text = resp.read().decode()
    assert 'crossway_requests_total{route="openai",status="200"}' in text
    assert "crossway_request_duration_seconds_bucket" in text
    assert 'crossway_upstream_duration_seconds_count{backend="openai",status="200"}' in text


async def test_client_disconnect_cancels_upstream_stream() -> None:
    """A client that leaves mid-stream closes the upstream connection too."""
    from aiohttp import web

    upstream_closed = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i in range(10_000):
                await resp.write(f'data: {{"n": {i}}}\n\n'.encode())
                await asyncio.sleep(0.01)
        except (ConnectionResetError, asyncio.CancelledError):
            upstream_closed.set()
            raise
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        with start_gateway(
            OPENAI_EXAMPLE, env={"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
        ) as gw:
            async with aiohttp.ClientSession() as session:
                resp = await session.post(
                    gw.url + "/v1/chat/completions", json={"model": "m", "stream": True}
                )
                first = await resp.content.readline()
                assert first.startswith(b"data: ")
                resp.close()  # drop the connection mid-stream
            await asyncio.wait_for(upstream_closed.wait(), 10)
            assert "Traceback" not in gw.log()
    finally:
        await runner.cleanup()


def test_several_workers(sample_openai_process: str) -> None:
    with start_gateway(
        OPENAI_EXAMPLE, env={"OPENAI_BASE_URL": sample_openai_process}, workers=2
    ) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x")
        for i in range(10):
            r = client.chat.completions.create(
                model="sample-model", messages=[{"role": "user", "content": str(i)}]
            )
            assert r.choices[0].message.content == f"You said: {i}"

        def both_ready() -> bool:
            with urllib.request.urlopen(gw.admin_url + "/readyz") as resp:
                return bool(json.loads(resp.read())["workers_ready"] == 2)

        wait_for(both_ready, what="both workers ready")
