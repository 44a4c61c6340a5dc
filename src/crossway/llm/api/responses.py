"""The OpenAI Responses API (`POST /v1/responses`) in front of any provider.

Crossway keeps no conversation state, so a Responses request must carry its whole input:
`previous_response_id` and `item_reference` items are refused with a 400 that says so, and
answers report `store: false`. Function tools, function calls and their outputs, text and image
input, `instructions`, `text.format` (JSON schema) and `reasoning.effort` translate to canonical
chat; hosted tools (web search, file search, computer use...) do not and are refused.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

from crossway.errors import BadRequest, GatewayError
from crossway.llm.api.sse import named_event
from crossway.llm.usage import usage_from_chat

Json = dict[str, Any]

API_NAME: Final = "responses"
_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _bad(message: str, param: str | None = None) -> BadRequest:
    return BadRequest(f"{param}: {message}" if param else message, param=param)


def _id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


# --- request ------------------------------------------------------------------------------


def responses_to_chat(body: Any) -> Json:
    """Translate a Responses request body into a canonical chat body, or raise `BadRequest`."""
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("Missing required parameter: 'model'.", "model")
    if body.get("previous_response_id"):
        raise _bad(
            "Crossway does not store responses; send the whole conversation in `input` "
            "instead of previous_response_id",
            "previous_response_id",
        )
    messages: list[Json] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        messages.append({"role": "user", "content": raw_input})
    elif isinstance(raw_input, list):
        calls: list[Json] | None = None  # consecutive function calls share one assistant turn
        for i, item in enumerate(raw_input):
            where = f"input[{i}]"
            if isinstance(item, dict) and item.get("type") == "function_call":
                if calls is None:
                    calls = []
                    messages.append({"role": "assistant", "content": None, "tool_calls": calls})
                calls.append(_function_call(item, where))
                continue
            calls = None
            message = _input_item(item, where)
            if message is not None:
                messages.append(message)
    else:
        raise _bad("Missing required parameter: 'input'.", "input")
    if not messages or all(m["role"] == "system" for m in messages):
        raise _bad("input must hold at least one message", "input")

    out: Json = {"model": model, "messages": messages}
    for key in ("temperature", "top_p", "parallel_tool_calls", "user", "seed"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
    tool_choice = body.get("tool_choice")
    if tool_choice is not None:
        out["tool_choice"] = _tool_choice(tool_choice)
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        response_format = _response_format(text["format"])
        if response_format is not None:
            out["response_format"] = response_format
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        out["reasoning_effort"] = reasoning["effort"]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _function_call(item: Json, where: str) -> Json:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise _bad("function_call needs call_id and name", where)
    arguments = item.get("arguments") or "{}"
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _input_item(item: Any, where: str) -> Json | None:
    if not isinstance(item, dict):
        raise _bad("must be an object", where)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise _bad("role must be user, assistant, system or developer", f"{where}.role")
        return {"role": role, "content": _content(item.get("content"), where)}
    if kind == "function_call_output":
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            raise _bad("function_call_output needs call_id", where)
        output = item.get("output")
        if isinstance(output, list):
            output = "".join(p.get("text", "") for p in output if isinstance(p, dict))
        return {"role": "tool", "tool_call_id": call_id, "content": str(output or "")}
    if kind == "reasoning":
        return None  # reasoning items are provider-specific traces
    if kind == "item_reference":
        raise _bad("Crossway does not store items; send the item itself", where)
    raise _bad(f"unsupported input item type {kind!r}", where)


def _content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad("content must be a string or a list of parts", f"{where}.content")
    parts: list[Json] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise _bad("input_image needs an image_url (file ids are not supported)", where)
            image: Json = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and isinstance(part.get("file_data"), str):
            file: Json = {"file_data": part["file_data"]}
            if part.get("filename"):
                file["filename"] = part["filename"]
            parts.append({"type": "file", "file": file})
        else:
            raise _bad(f"unsupported content part {kind!r}", f"{where}.content[{j}]")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _tools(tools: Any) -> list[Json]:
    if not isinstance(tools, list):
        raise _bad("must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _bad(
                f"hosted tool {kind!r} is not available through Crossway; use function tools",
                f"tools[{i}]",
            )
        if not isinstance(tool.get("name"), str):
            raise _bad("function tools need a name", f"tools[{i}]")
        function: Json = {"name": tool["name"]}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("must be auto, none, required or a function", "tool_choice")


def _response_format(fmt: Json) -> Json | None:
    kind = fmt.get("type")
    if kind == "json_schema":
        schema: Json = {"name": fmt.get("name", "response"), "schema": fmt.get("schema", {})}
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        if fmt.get("description"):
            schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


# --- response -----------------------------------------------------------------------------


def responses_usage(usage: Any) -> Json:
    u = usage_from_chat(usage)
    if u is None:
        return {
            "input_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 0,
        }
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def _envelope(request: Json, response_id: str, created: int, model: str) -> Json:
    """The fields of a Response object that echo the request."""
    tools = request.get("tools") or []
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "store": False,
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": tools,
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _finish(response: Json, finish_reason: str | None) -> None:
    reason = _INCOMPLETE.get(finish_reason or "")
    if reason:
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": reason}
    else:
        response["status"] = "completed"


def _message_item(item_id: str, text: str, status: str) -> Json:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> Json:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def chat_to_response(resp: Json, request: Json, model: str) -> Json:
    """Translate a canonical `chat.completion` into a Response object for `model`."""
    out = _envelope(request, _id("resp_"), int(resp.get("created") or time.time()), model)
    choice = (resp.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[Json] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        summary = [{"type": "summary_text", "text": reasoning}]
        output.append({"type": "reasoning", "id": _id("rs_"), "summary": summary})
    text = message.get("content") or message.get("refusal")
    if text:
        output.append(_message_item(_id("msg_"), text, "completed"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            _call_item(
                _id("fc_"),
                call.get("id") or _id("call_"),
                function.get("name", ""),
                function.get("arguments") or "",
                "completed",
            )
        )
    out["output"] = output
    out["usage"] = responses_usage(resp.get("usage"))
    _finish(out, choice.get("finish_reason"))
    return out


# --- errors -------------------------------------------------------------------------------


def error_event(exc: GatewayError, sequence_number: int) -> Json:
    return {
        "type": "error",
        "code": exc.code or exc.type,
        "message": exc.message,
        "param": exc.param,
        "sequence_number": sequence_number,
    }


# --- streaming ----------------------------------------------------------------------------


class ResponsesStreamWriter:
    """Turns canonical chunks into the Responses API's typed event stream.

    `response.created` and `response.in_progress` open the stream; each output item (message
    text or a function call) gets `response.output_item.added`, its deltas, its `.done` events
    and `response.output_item.done`; `response.completed` (or `response.incomplete`) carries the
    whole response with usage. A broken stream ends with `error` and `response.failed`.
    """

    def __init__(self, request: Json, model: str) -> None:
        self._response = _envelope(request, _id("resp_"), int(time.time()), model)
        self._seq = 0
        self._started = False
        self._output: list[Json] = []
        self._open: Json | None = None  # the item receiving deltas
        self._calls: dict[int, Json] = {}  # canonical tool-call index -> item
        self._finish_reason: str | None = None
        self._usage: Any = None

    @property
    def started(self) -> bool:
        return self._started

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return named_event(kind, data)

    def _start(self) -> bytes:
        self._started = True
        return self._event("response.created", response=self._response) + self._event(
            "response.in_progress", response=self._response
        )

    def _add_item(self, item: Json) -> bytes:
        out = self._close_item()
        self._output.append(item)
        self._open = item
        out += self._event(
            "response.output_item.added", output_index=len(self._output) - 1, item=dict(item)
        )
        if item["type"] == "message":
            out += self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=len(self._output) - 1,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            )
        return out

    def _close_item(self) -> bytes:
        item = self._open
        if item is None:
            return b""
        self._open = None
        index = self._output.index(item)
        item["status"] = "completed"
        out = b""
        if item["type"] == "message":
            part = item["content"][0]
            out += self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            out += self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        else:
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def feed(self, chunk: Json) -> bytes:
        """Events for one canonical chunk (possibly none)."""
        out = b"" if self._started else self._start()
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._open is None or self._open["type"] != "message":
                    out += self._add_item(_message_item(_id("msg_"), "", "in_progress"))
                assert self._open is not None
                self._open["content"][0]["text"] += text
                out += self._event(
                    "response.output_text.delta",
                    item_id=self._open["id"],
                    output_index=len(self._output) - 1,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return out

    def _tool_delta(self, call: Json) -> bytes:
        out = b""
        index = call.get("index", 0)
        function = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            item = _call_item(
                _id("fc_"),
                call.get("id") or _id("call_"),
                function.get("name") or "",
                "",
                "in_progress",
            )
            self._calls[index] = item
            out += self._add_item(item)
        arguments = function.get("arguments")
        if arguments:
            item["arguments"] += arguments
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=self._output.index(item),
                delta=arguments,
            )
        return out

    def finish(self) -> bytes:
        """Close the stream after the upstream ended it cleanly."""
        if self._finish_reason is None:
            return self.error(GatewayError("the upstream ended the stream before it finished"))
        out = (b"" if self._started else self._start()) + self._close_item()
        self._response["output"] = self._output
        self._response["usage"] = responses_usage(self._usage)
        _finish(self._response, self._finish_reason)
        kind = (
            "response.completed"
            if self._response["status"] == "completed"
            else "response.incomplete"
        )
        return out + self._event(kind, response=self._response)

    def error(self, exc: GatewayError) -> bytes:
        """End a broken stream with `error` and `response.failed`."""
        out = b"" if self._started else self._start()
        out += named_event("error", error_event(exc, self._seq))
        self._seq += 1
        self._response["status"] = "failed"
        self._response["output"] = self._output
        self._response["error"] = {"code": "server_error", "message": exc.message}
        return out + self._event("response.failed", response=self._response)
