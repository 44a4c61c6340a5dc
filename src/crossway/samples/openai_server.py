"""A deterministic OpenAI-compatible model server: `python -m crossway.samples.openai_server --port N`.

It answers `/v1/chat/completions` (streamed or not, with usage), `/v1/models` and
`/v1/embeddings`. The reply echoes the last user message, so answers are predictable in demos
and tests.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from typing import Any, Final

import orjson
from aiohttp import web

SAMPLE_MODELS: Final = ("sample-model", "sample-model-mini")
EMBEDDING_DIMENSIONS: Final = 8


def reply_text(body: dict[str, Any]) -> str:
    """The sample's answer: an echo of the last user message."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(
                    str(p.get("text", ""))
                    for p in content
                    if isinstance(p, dict) and p.get("type") == "text"
                )
            return f"You said: {content}"
    return "Hello from the Crossway sample model."


def _error(
    status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": param, "code": None}}, status=status
    )


_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _invalid_messages(messages: list[Any]) -> tuple[str, str] | None:
    """Check messages the way the OpenAI API does: (param, message) of the first problem."""
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            return param, f"Invalid type for '{param}': expected an object."
        if message.get("role") not in _ROLES:
            return f"{param}.role", f"Invalid value for '{param}.role'."
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            return (
                f"{param}.content",
                f"Invalid type for '{param}.content': expected a string or an array.",
            )
        if isinstance(content, list) and not all(
            isinstance(p, dict) and "type" in p for p in content
        ):
            return f"{param}.content", f"Invalid content parts in '{param}.content'."
    return None


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def chat(request: web.Request) -> web.StreamResponse:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict) or not body.get("model"):
        return _error(400, "you must provide a model parameter", param="model")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return _error(400, "'messages' is a required property", param="messages")
    problem = _invalid_messages(body["messages"])
    if problem is not None:
        return _error(400, problem[1], param=problem[0])
    if "tools" in body and not isinstance(body["tools"], list):
        return _error(400, "Invalid type for 'tools': expected an array.", param="tools")
    model = body["model"]
    text = reply_text(body)
    words = text.split(" ")
    prompt_tokens = sum(
        len(str(m.get("content", "")).split()) for m in body["messages"] if isinstance(m, dict)
    )
    created = int(time.time())
    cid = "chatcmpl-sample" + hashlib.sha1(text.encode()).hexdigest()[:12]
    if not body.get("stream"):
        return web.json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": _usage(prompt_tokens, len(words)),
                "system_fingerprint": "fp_sample",
            }
        )
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    resp = web.StreamResponse(
        headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
    )
    await resp.prepare(request)

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        data: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_sample",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            data["usage"] = None
        return b"data: " + orjson.dumps(data) + b"\n\n"

    await resp.write(chunk({"role": "assistant", "content": ""}, None))
    for i, word in enumerate(words):
        await resp.write(chunk({"content": word if i == 0 else " " + word}, None))
    await resp.write(chunk({}, "stop"))
    if include_usage:
        final = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_sample",
            "choices": [],
            "usage": _usage(prompt_tokens, len(words)),
        }
        await resp.write(b"data: " + orjson.dumps(final) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def models(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "crossway-sample"}
                for m in SAMPLE_MODELS
            ],
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, "We could not parse the JSON body of your request.")
    inputs = body.get("input") if isinstance(body, dict) else None
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        return _error(400, "'input' is a required property", param="input")
    data = []
    for i, item in enumerate(inputs):
        digest = hashlib.sha256(str(item).encode()).digest()
        vector = [round(b / 255.0, 6) for b in digest[:EMBEDDING_DIMENSIONS]]
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(len(str(x).split()) for x in inputs)
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": body.get("model", "sample-embedding"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/embeddings", embeddings)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
