"""The simulator's HTTP surface (aiohttp): OpenAI-compatible chat and completions, `/v1/models`,
`/health`, vLLM's `/metrics`, a DCGM `/gpu/metrics`, and `/sim/fault` + `/sim/stats` for tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError

from crossway.samples.model_server.config import SimConfig
from crossway.samples.model_server.engine import (
    CHARS_PER_TOKEN,
    Engine,
    Prompt,
    Sequence,
    count_tokens,
)
from crossway.samples.model_server.metrics import GARBAGE_PAGE, VllmPage, render_dcgm
from crossway.samples.openai_server import _error, _invalid_messages

MAX_BODY_BYTES: Final = 16 * 1024 * 1024
FILLER: Final = tuple(
    w + " " for w in "the sim can say any old bit for you and its end may not win yet".split()
)
assert all(len(t) == CHARS_PER_TOKEN for t in FILLER)
"""Generated tokens: three-letter words plus a space, so every token is CHARS_PER_TOKEN
characters and the text counts back to `completion_tokens`."""
METRICS_FAULTS: Final = frozenset({"ok", "garbage", "500", "hang"})
CHAT_FAULTS: Final = frozenset({"ok", "500", "close", "midstream"})
PROMETHEUS_TEXT: Final = "text/plain; version=0.0.4; charset=utf-8"
SSE_HEADERS: Final = {"content-type": "text/event-stream", "cache-control": "no-cache"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def render_chat(messages: list[dict[str, Any]]) -> str:
    """The prompt text of a chat: a minimal template, stable across requests that share their
    first messages (so they share prefix-cache blocks)."""
    parts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            text = "".join(
                str(p.get("text", "")) for p in content if p.get("type") in ("text", "input_text")
            )
        else:
            text = "" if content is None else str(content)
        parts.append(f"<|{message['role']}|>\n{text}\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)


def output_token(i: int) -> str:
    return FILLER[i % len(FILLER)]


def _usage(seq: Sequence) -> dict[str, Any]:
    return {
        "prompt_tokens": seq.prompt_tokens,
        "completion_tokens": seq.generated,
        "total_tokens": seq.prompt_tokens + seq.generated,
        "prompt_tokens_details": {"cached_tokens": seq.cached_tokens or 0},
    }


def _completions_prompt(value: object) -> Prompt | None:
    """One prompt: a string, or token ids (either possibly wrapped in a one-element list)."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str | list):
        value = value[0]
    if isinstance(value, str) and value:
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    ):
        return tuple(value)
    return None


class SimServer:
    """One simulator: the engine and the HTTP handlers around it."""

    def __init__(self, config: SimConfig, *, metrics_garbage: bool = False) -> None:
        self.config = config
        self.engine = Engine(config)
        self.vllm_page = VllmPage(self.engine)
        self.faults: dict[str, str] = {
            "metrics": "garbage" if metrics_garbage else "ok",
            "gpu_metrics": "ok",
            "chat": "ok",
        }
        self._fault_changed = asyncio.Event()
        self.started = int(time.time())

    # -- app ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._errors])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/gpu/metrics", self.gpu_metrics)
        app.router.add_get("/sim/fault", self.get_fault)
        app.router.add_post("/sim/fault", self.set_fault)
        app.router.add_get("/sim/stats", self.sim_stats)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        self._fault_changed = asyncio.Event()
        self.engine.start()

    async def _stop(self, app: web.Application) -> None:
        await self.engine.stop()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every failure as OpenAI error JSON, never a traceback."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason or "error", "invalid_request_error")
        except (ConnectionResetError, ClientConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            return _error(500, f"simulator error: {type(exc).__name__}", "server_error")

    # -- OpenAI API --------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' is a required property", param="messages")
        problem = _invalid_messages(messages)
        if problem is not None:
            return _error(400, problem[1], param=problem[0])
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        return await self._generate(request, body, render_chat(messages), max_tokens, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        if "prompt" not in body:
            return _error(400, "'prompt' is a required property", param="prompt")
        prompt = _completions_prompt(body["prompt"])
        if prompt is None:
            return _error(
                400,
                "'prompt' must be a non-empty string or token list (one prompt per request).",
                param="prompt",
            )
        return await self._generate(request, body, prompt, body.get("max_tokens"), chat=False)

    async def models(self, request: web.Request) -> web.Response:
        c = self.config
        data = [
            {
                "id": c.model,
                "object": "model",
                "created": self.started,
                "owned_by": "crossway-sim",
                "root": c.model,
                "parent": None,
                "max_model_len": c.max_model_len,
            }
        ]
        adapters = dict.fromkeys([*self.engine.adapters_seen, *self.engine.lora.loaded])
        data += [
            {
                "id": name,
                "object": "model",
                "created": self.started,
                "owned_by": "crossway-sim",
                "root": name,
                "parent": c.model,
            }
            for name in adapters
        ]
        return web.json_response({"object": "list", "data": data})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    # -- metrics -------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        fault = await self._fault_unless_hang("metrics")
        if fault == "ok":
            return web.Response(
                body=self.vllm_page.render(), headers={"content-type": PROMETHEUS_TEXT}
            )
        return self._metrics_fault(fault)

    async def gpu_metrics(self, request: web.Request) -> web.Response:
        fault = await self._fault_unless_hang("gpu_metrics")
        if fault == "ok":
            return web.Response(
                body=render_dcgm(self.engine), headers={"content-type": PROMETHEUS_TEXT}
            )
        return self._metrics_fault(fault)

    def _metrics_fault(self, fault: str) -> web.Response:
        if fault == "garbage":
            return web.Response(body=GARBAGE_PAGE, headers={"content-type": PROMETHEUS_TEXT})
        return web.Response(status=500, text="simulated metrics failure\n")

    async def _fault_unless_hang(self, key: str) -> str:
        """The fault set for `key`; while it is "hang", wait for it to change."""
        while self.faults[key] == "hang":
            await self._fault_changed.wait()
        return self.faults[key]

    # -- test hooks ----------------------------------------------------------------------

    async def get_fault(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults)

    async def set_fault(self, request: web.Request) -> web.Response:
        """`{"metrics": "ok|garbage|500|hang", "gpu_metrics": ..., "chat":
        "ok|500|close|midstream"}`: any subset; answers the faults now in force."""
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        allowed = {"metrics": METRICS_FAULTS, "gpu_metrics": METRICS_FAULTS, "chat": CHAT_FAULTS}
        for key, value in body.items():
            if key not in allowed:
                return _error(400, f"unknown fault {key!r}; known: {sorted(allowed)}", param=key)
            if value not in allowed[key]:
                return _error(
                    400, f"{key} must be one of {sorted(allowed[key])}, not {value!r}", param=key
                )
        self.faults.update(body)
        self._fault_changed.set()
        self._fault_changed = asyncio.Event()
        return web.json_response(self.faults)

    async def sim_stats(self, request: web.Request) -> web.Response:
        e = self.engine
        s = e.stats
        return web.json_response(
            {
                "running": len(e.running),
                "waiting": len(e.waiting),
                "kv_total_blocks": e.kv.total,
                "kv_used_blocks": e.kv.used,
                "kv_cached_blocks": len(e.kv.cached),
                "kv_evictions": e.kv.evictions,
                "lora_loaded": list(e.lora.loaded),
                "lora_loading": sorted(e.lora.loading),
                "lora_loads": e.lora.loads,
                "lora_evictions": e.lora.evictions,
                "prefix_queries": s.prefix_queries,
                "prefix_hits": s.prefix_hits,
                "prompt_tokens": s.prompt_tokens,
                "generation_tokens": s.generation_tokens,
                "preemptions": s.preemptions,
                "requests": dict(s.success),
                "busy_seconds": round(e.busy_seconds, 6),
            }
        )

    # -- generation ------------------------------------------------------------------------

    async def _json(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        return body

    def _adapter(self, model: object) -> str | web.Response | None:
        """None for the base model, the adapter's name, or a 400/404 answer."""
        c = self.config
        if not isinstance(model, str) or not model:
            return _error(400, "you must provide a model parameter", param="model")
        if model == c.model:
            return None
        if model in c.loras or c.lora_any:
            return model
        return web.json_response(
            {
                "error": {
                    "message": f"The model `{model}` does not exist or you do not have access "
                    "to it.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "model_not_found",
                }
            },
            status=404,
        )

    def _max_new(self, value: object, prompt_tokens: int) -> int | web.Response:
        c = self.config
        if value is None:
            max_new = min(c.output_tokens, c.max_output_tokens)
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return _error(400, "max_tokens must be an integer >= 1.", param="max_tokens")
        else:
            max_new = min(value, c.max_output_tokens)
        if prompt_tokens + max_new > c.max_model_len:
            return _error(
                400,
                f"This model's maximum context length is {c.max_model_len} tokens. However, you "
                f"requested {prompt_tokens + max_new} tokens ({prompt_tokens} in the messages, "
                f"{max_new} in the completion). Please reduce the length of the messages or "
                "completion.",
                param="messages",
            )
        if not self.engine.fits(prompt_tokens, max_new):
            return _error(
                400,
                f"The request needs more KV-cache blocks than the server has ({c.kv_blocks}).",
                param="messages",
            )
        return max_new

    async def _generate(
        self,
        request: web.Request,
        body: dict[str, Any],
        prompt: Prompt,
        max_tokens: object,
        *,
        chat: bool,
    ) -> web.StreamResponse:
        adapter = self._adapter(body.get("model"))
        if isinstance(adapter, web.Response):
            return adapter
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            return _error(400, "'stream' must be a boolean.", param="stream")
        if body.get("n") not in (None, 1):
            return _error(400, "The simulator generates one choice (n = 1).", param="n")
        max_new = self._max_new(max_tokens, count_tokens(prompt))
        if isinstance(max_new, web.Response):
            return max_new
        fault = self.faults["chat"]
        if fault == "500":
            return _error(500, "The simulator was told to fail.", "server_error")
        if fault == "close" or (fault == "midstream" and not stream):
            return self._close(request)
        seq = self.engine.submit(
            prompt, adapter=adapter, max_new=max_new, length_limited=max_tokens is not None
        )
        try:
            if stream:
                options = body.get("stream_options")
                include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
                return await self._stream(request, body["model"], seq, chat, include_usage)
            await self.engine.wait_done(seq)
            return web.json_response(self._full_answer(body["model"], seq, chat))
        finally:
            if seq.state != "done":
                self.engine.abort(seq)

    def _close(self, request: web.Request) -> web.Response:
        """Drop the connection without an answer (the client sees it closed)."""
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)

    def _full_answer(self, model: str, seq: Sequence, chat: bool) -> dict[str, Any]:
        text = "".join(output_token(i) for i in range(seq.generated))
        reason = seq.finish_reason
        if chat:
            return {
                "id": f"chatcmpl-sim{seq.id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": reason,
                    }
                ],
                "usage": _usage(seq),
                "system_fingerprint": "fp_crossway_sim",
            }
        return {
            "id": f"cmpl-sim{seq.id}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
            "usage": _usage(seq),
        }

    async def _stream(
        self, request: web.Request, model: str, seq: Sequence, chat: bool, include_usage: bool
    ) -> web.StreamResponse:
        created = int(time.time())
        base: dict[str, Any]
        if chat:
            base = {"id": f"chatcmpl-sim{seq.id}", "object": "chat.completion.chunk"}
        else:
            base = {"id": f"cmpl-sim{seq.id}", "object": "text_completion"}
        base |= {"created": created, "model": model}
        if chat:
            base["system_fingerprint"] = "fp_crossway_sim"

        def event(text: str | None, finish: str | None, role: bool = False) -> bytes:
            choice: dict[str, Any]
            if chat:
                delta: dict[str, Any] = {} if text is None else {"content": text}
                if role:
                    delta["role"] = "assistant"
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            data = base | {"choices": [choice]}
            if include_usage:
                data["usage"] = None
            return b"data: " + orjson.dumps(data) + b"\n\n"

        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        try:
            await self._write_events(request, resp, seq, chat, include_usage, base, event)
        except ConnectionResetError:  # the client went away; the caller aborts the sequence
            pass
        return resp

    async def _write_events(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        seq: Sequence,
        chat: bool,
        include_usage: bool,
        base: dict[str, Any],
        event: Callable[..., bytes],
    ) -> None:
        sent = 0
        while True:
            await self.engine.wait(seq, sent)
            buf = bytearray()
            if chat and sent == 0:  # the role chunk goes with the first token, as vLLM's
                buf += event("", None, role=True)
            available = seq.generated
            for i in range(sent, available):
                buf += event(output_token(i), None)
            sent = available
            if seq.state == "done":
                buf += event(None if chat else "", seq.finish_reason)
                if include_usage:
                    final = base | {"choices": [], "usage": _usage(seq)}
                    buf += b"data: " + orjson.dumps(final) + b"\n\n"
                buf += b"data: [DONE]\n\n"
                await resp.write(bytes(buf))
                await resp.write_eof()
                return
            await resp.write(bytes(buf))
            if self.faults["chat"] == "midstream":
                if request.transport is not None:
                    request.transport.close()
                return
