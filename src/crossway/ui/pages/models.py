"""The console's Models page: every LLM backend's models, targets, providers and live health
(`GET /models` of the admin API), and a playground that streams a chat through the gateway.

The playground is a data-plane client: it posts the chat to the gateway's own listener (the
route the operator picks, with the API key they type), exactly as any client would, and streams
the answer's text deltas back as plain text while they arrive. It adds no admin capability.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from crossway.config import Config
from crossway.config.llm import LlmBackendConfig
from crossway.errors import GatewayError
from crossway.proxy.sse import SSEParser
from crossway.ui.gateway import data_plane_url, entries
from crossway.ui.render import render

if TYPE_CHECKING:
    import aiohttp

    from crossway.ui.console import Console

MAX_FIELD_CHARS: Final = 32_000
"""Longest system or user message the playground sends."""
MAX_ERROR_BYTES: Final = 64 * 1024
"""Most of an error answer read to show its message."""
MAX_EVENT_BYTES: Final = 4 * 1024 * 1024
"""Largest single stream event read from the gateway."""
CONNECT_SECONDS: Final = 5.0
TOTAL_SECONDS: Final = 300.0
STREAM_HEADERS: Final = {"cache-control": "no-store", "x-accel-buffering": "no"}


def _model_names(cfg: Config) -> dict[str, list[str]]:
    """Client-facing model names by LLM backend."""
    return {
        name: [m.name for m in backend.models]
        for name, backend in cfg.backends.items()
        if isinstance(backend, LlmBackendConfig)
    }


def routes(console: Console) -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        from crossway.ui.console import config_of

        cfg = config_of(request)
        answer = await console.api.get(cfg, "/models")
        return render(
            request,
            "models.html",
            "models",
            data=answer.body if answer.ok else None,
            error=None if answer.ok else answer.error,
            playground_routes=entries(cfg, "llm"),
            model_names=_model_names(cfg),
            gateway=data_plane_url(cfg),
        )

    async def chat(request: Request) -> Response:
        from crossway.ui.console import config_of

        cfg = config_of(request)
        form = await request.form()
        fields = {k: str(form.get(k) or "") for k in ("route", "model", "key", "system", "user")}
        problem, url = _target(cfg, fields)
        if problem:
            return PlainTextResponse(f"Error: {problem}\n", status_code=400)
        messages = []
        if fields["system"].strip():
            messages.append({"role": "system", "content": fields["system"]})
        messages.append({"role": "user", "content": fields["user"]})
        payload = {"model": fields["model"], "messages": messages, "stream": True}
        return await stream_chat(url, fields["key"].strip(), payload)

    return [
        Route("/ui/models", page, methods=["GET"]),
        Route("/ui/models/chat", chat, methods=["POST"]),
    ]


def _target(cfg: Config, fields: dict[str, str]) -> tuple[str | None, str]:
    """A problem with the form (None when fine) and the chat URL on the chosen route."""
    entry = next((e for e in entries(cfg, "llm") if e.route == fields["route"]), None)
    if entry is None:
        return "choose one of the LLM routes listed", ""
    if not fields["model"].strip():
        return "choose a model", ""
    if not fields["user"].strip():
        return "write a user message", ""
    if max(len(fields["user"]), len(fields["system"])) > MAX_FIELD_CHARS:
        return f"a message may hold at most {MAX_FIELD_CHARS} characters", ""
    prefix = "" if entry.prefix == "/" else entry.prefix
    return None, f"{data_plane_url(cfg)}{prefix}/chat/completions"


def _error_message(body: bytes) -> str:
    """The OpenAI-style error message of an answer, else its text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:500] or "(no message)"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return str(data)[:500]


def _deltas(data: bytes) -> tuple[str, str | None]:
    """The text of one stream event, and an error message when the event is an error."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "", None
    if not isinstance(event, dict):
        return "", None
    if event.get("error") is not None:
        return "", _error_message(data)
    text = ""
    for choice in event.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            text += delta["content"]
    return text, None


def _message_text(body: bytes) -> str:
    """The text of a whole (not streamed) chat answer."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "Error: the gateway's answer is not JSON\n"
    choices = data.get("choices") if isinstance(data, dict) else None
    parts = []
    for choice in choices or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "".join(parts)


async def stream_chat(url: str, key: str, payload: dict[str, Any]) -> Response:
    """POST `payload` to the gateway and answer its text deltas as they arrive (plain text).
    An error answer is one readable line with the gateway's status, sent with that status."""
    import aiohttp

    from crossway.proxy.outbound import create_session

    session = create_session(
        timeout=aiohttp.ClientTimeout(total=TOTAL_SECONDS, sock_connect=CONNECT_SECONDS), limit=4
    )
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    try:
        upstream = await session.post(
            url, data=orjson.dumps(payload), headers=headers, allow_redirects=False
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        await session.close()
        reason = str(exc) or type(exc).__name__
        return PlainTextResponse(
            f"Error: cannot reach the gateway at {url}: {reason}\n", status_code=502
        )
    if upstream.status >= 400:
        try:
            body = await upstream.content.read(MAX_ERROR_BYTES)
        except (aiohttp.ClientError, OSError, TimeoutError):
            body = b""
        finally:
            upstream.release()
            await session.close()
        line = f"Error: the gateway answered HTTP {upstream.status}: {_error_message(body)}\n"
        return PlainTextResponse(line, status_code=upstream.status)
    return StreamingResponse(
        _relay(session, upstream),
        media_type="text/plain; charset=utf-8",
        headers=STREAM_HEADERS,
    )


async def _relay(
    session: aiohttp.ClientSession, upstream: aiohttp.ClientResponse
) -> AsyncIterator[bytes]:
    import aiohttp

    parser = SSEParser(MAX_EVENT_BYTES)
    try:
        if upstream.content_type == "application/json":  # an answer that was not streamed
            whole = await upstream.content.read(MAX_EVENT_BYTES)
            yield _message_text(whole).encode()
            return
        async for chunk in upstream.content.iter_any():
            text = ""
            for _name, data in parser.feed(chunk):
                if data.strip() == b"[DONE]":
                    if text:
                        yield text.encode()
                    return
                delta, error = _deltas(data)
                text += delta
                if error is not None:
                    yield f"{text}\nError: {error}\n".encode()
                    return
            if text:
                yield text.encode()
    except (aiohttp.ClientError, OSError, TimeoutError, GatewayError) as exc:
        yield f"\nError: the stream broke off: {exc or type(exc).__name__}\n".encode()
    finally:
        upstream.release()
        await session.close()
