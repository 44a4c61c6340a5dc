"""The conformance fixture: an MCP server (mcp SDK) with the tools, prompts and resources the
`@modelcontextprotocol/conformance` server scenarios call, each behaving as its scenario checks.

Run: python -m tests.mcp.conformance.server PORT   (Streamable HTTP at /mcp, with an event store
so a stream closed mid-call can be resumed with Last-Event-ID)
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId

from mcp import types

# A 1x1 red PNG and a 44-byte silent WAV header with 2 samples.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
WAV = (
    b"RIFF(\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00"
    b"\x80\x3e\x00\x00\x02\x00\x10\x00data\x04\x00\x00\x00\x00\x00\x00\x00"
)
PNG_B64 = base64.b64encode(PNG).decode()
WAV_B64 = base64.b64encode(WAV).decode()


class MemoryEventStore(EventStore):
    """Every event of every stream, in memory (enough for a test run)."""

    def __init__(self) -> None:
        self._events: list[tuple[EventId, StreamId, types.JSONRPCMessage | None]] = []
        self._ids = itertools.count(1)

    async def store_event(
        self, stream_id: StreamId, message: types.JSONRPCMessage | None
    ) -> EventId:
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        found = [i for i, (eid, _, _) in enumerate(self._events) if eid == last_event_id]
        if not found:
            return None
        stream = self._events[found[0]][1]
        for event_id, stream_id, message in self._events[found[0] + 1 :]:
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


def build() -> MCPServer:
    server = MCPServer("crossway-conformance-fixture", instructions="Conformance fixture server.")

    # -- tools ------------------------------------------------------------------------------------

    @server.tool(description="Returns a simple text response.")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @server.tool(description="Returns an image.")
    def test_image_content() -> list[types.ContentBlock]:
        return [types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")]

    @server.tool(description="Returns audio.")
    def test_audio_content() -> list[types.ContentBlock]:
        return [types.AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")]

    @server.tool(description="Returns an embedded resource.")
    def test_embedded_resource() -> list[types.ContentBlock]:
        resource = types.TextResourceContents(
            uri="test://embedded-resource",
            mime_type="text/plain",
            text="This is an embedded resource content.",
        )
        return [types.EmbeddedResource(type="resource", resource=resource)]

    @server.tool(description="Returns text, an image and an embedded resource.")
    def test_multiple_content_types() -> list[types.ContentBlock]:
        resource = types.TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text='{"test":"data","value":123}',
        )
        return [
            types.TextContent(type="text", text="Multiple content types test:"),
            types.ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
            types.EmbeddedResource(type="resource", resource=resource),
        ]

    @server.tool(description="Sends three log messages while it runs.")
    async def test_tool_with_logging(ctx: Context) -> str:
        await ctx.info("Tool execution started")
        await asyncio.sleep(0.05)
        await ctx.info("Tool processing data")
        await asyncio.sleep(0.05)
        await ctx.info("Tool execution completed")
        return "Tool with logging executed successfully"

    @server.tool(description="Reports progress 0, 50 and 100 of 100.")
    async def test_tool_with_progress(ctx: Context) -> str:
        for progress in (0, 50, 100):
            await ctx.report_progress(progress, 100)
            if progress < 100:
                await asyncio.sleep(0.05)
        return "Tool with progress executed successfully"

    @server.tool(description="Always fails.")
    def test_error_handling() -> str:
        raise RuntimeError("This tool intentionally returns an error for testing")

    @server.tool(description="Asks the client's LLM to answer a prompt.")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        result = await ctx.session.create_message(
            [
                types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text=prompt)
                )
            ],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = result.content
        text = content.text if isinstance(content, types.TextContent) else str(content)
        return f"LLM response: {text}"

    @server.tool(description="Asks the user for a username and an email.")
    async def test_elicitation(message: str, ctx: Context) -> str:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        result = await ctx.session.elicit(message, schema, related_request_id=ctx.request_id)
        return f"User response: action={result.action}, content={result.content}"

    @server.tool(description="Elicitation whose schema has defaults for every primitive type.")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "default": "John Doe"},
                "age": {"type": "integer", "default": 30},
                "score": {"type": "number", "default": 95.5},
                "status": {
                    "type": "string",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "default": True},
            },
        }
        result = await ctx.session.elicit(
            "Please confirm your details", schema, related_request_id=ctx.request_id
        )
        return f"Elicitation completed: action={result.action}, content={result.content}"

    @server.tool(description="Elicitation with every enum schema variant.")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {
                    "type": "string",
                    "oneOf": [
                        {"const": "value1", "title": "First Option"},
                        {"const": "value2", "title": "Second Option"},
                        {"const": "value3", "title": "Third Option"},
                    ],
                },
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"},
                        ]
                    },
                },
            },
        }
        result = await ctx.session.elicit("Pick options", schema, related_request_id=ctx.request_id)
        return f"Elicitation completed: action={result.action}, content={result.content}"

    @server.tool(
        description="Closes its SSE stream mid-call; the result arrives after reconnection."
    )
    async def test_reconnection(ctx: Context) -> str:
        await asyncio.sleep(0.05)
        await ctx.close_sse_stream()
        await asyncio.sleep(0.1)
        return "Reconnection test completed"

    # JSON Schema 2020-12 keywords must reach the client untouched (SEP-1613).
    def json_schema_2020_12_tool(**arguments: Any) -> str:
        return f"received {sorted(arguments)}"

    server.add_tool(
        json_schema_2020_12_tool,
        name="json_schema_2020_12_tool",
        description="Tool with JSON Schema 2020-12 features",
    )
    tool = server._tool_manager.get_tool("json_schema_2020_12_tool")
    if tool is not None:
        tool.parameters = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "$anchor": "address",
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                }
            },
            "properties": {
                "name": {"type": "string"},
                "address": {"$ref": "#/$defs/address"},
                "kind": {"type": "string"},
            },
            "allOf": [{"anyOf": [{"required": ["name"]}, {"required": ["address"]}]}],
            "if": {"properties": {"kind": {"const": "company"}}},
            "then": {"required": ["address"]},
            "else": {"required": ["name"]},
            "additionalProperties": False,
        }

    # A tool argument mirrored in an `Mcp-Param-Region` header (SEP-2243); the SDK checks it.
    def test_custom_header(region: str) -> str:
        return f"region {region}"

    server.add_tool(test_custom_header, name="test_custom_header", description="Routes by region.")
    routed = server._tool_manager.get_tool("test_custom_header")
    if routed is not None:
        routed.parameters = {
            "type": "object",
            "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
            "required": ["region"],
        }

    # -- 2026-07-28: input-required results (SEP-2322) and diagnostic tools (SEP-2575) ------------

    def ask(requests: dict[str, Any], state: str | None = None) -> types.InputRequiredResult:
        body: dict[str, Any] = {"resultType": "input_required", "inputRequests": requests}
        if state is not None:
            body["requestState"] = state
        return types.InputRequiredResult.model_validate(body)

    def form(message: str, field: str, kind: str = "string") -> dict[str, Any]:
        return {
            "method": "elicitation/create",
            "params": {
                "message": message,
                "requestedSchema": {
                    "type": "object",
                    "properties": {field: {"type": kind}},
                    "required": [field],
                },
            },
        }

    def sample(text: str, max_tokens: int) -> dict[str, Any]:
        return {
            "method": "sampling/createMessage",
            "params": {
                "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
                "maxTokens": max_tokens,
            },
        }

    roots_request: dict[str, Any] = {"method": "roots/list", "params": {}}

    def answer(ctx: Context, key: str) -> dict[str, Any] | None:
        responses = ctx.input_responses or {}
        response = responses.get(key)
        if response is None:
            return None
        data = (
            response.model_dump(by_alias=True, exclude_none=True)
            if hasattr(response, "model_dump")
            else response
        )
        return data if isinstance(data, dict) else None

    def sampled_text(data: dict[str, Any]) -> str:
        content = data.get("content")
        if isinstance(content, list):
            content = content[0] if content else {}
        return str(content.get("text", "")) if isinstance(content, dict) else ""

    @server.tool(description="Asks for the user's name through an input-required result.")
    def test_input_required_result_elicitation(ctx: Context) -> Any:
        reply = answer(ctx, "user_name")
        name = (reply or {}).get("content", {}).get("name") if reply else None
        if not name:
            return ask({"user_name": form("What is your name?", "name")})
        return f"Hello, {name}!"

    @server.tool(description="Asks the client's LLM through an input-required result.")
    def test_input_required_result_sampling(ctx: Context) -> Any:
        reply = answer(ctx, "capital_question")
        if reply is None:
            return ask({"capital_question": sample("What is the capital of France?", 100)})
        return f"Sampling answered: {sampled_text(reply)}"

    @server.tool(description="Asks for the client's roots through an input-required result.")
    def test_input_required_result_list_roots(ctx: Context) -> Any:
        reply = answer(ctx, "client_roots")
        if reply is None:
            return ask({"client_roots": roots_request})
        uris = [str(r.get("uri")) for r in reply.get("roots", []) if isinstance(r, dict)]
        return f"Client roots: {', '.join(uris) or '(none)'}"

    @server.tool(description="Round-trips requestState.")
    def test_input_required_result_request_state(ctx: Context) -> Any:
        reply = answer(ctx, "confirm")
        if reply is None or ctx.request_state != "confirm-round-1":
            return ask({"confirm": form("Please confirm", "ok", "boolean")}, "confirm-round-1")
        return "state-ok: confirmed"

    @server.tool(description="Several input requests at once.")
    def test_input_required_result_multiple_inputs(ctx: Context) -> Any:
        keys = ("user_name", "greeting", "client_roots")
        replies = {k: answer(ctx, k) for k in keys}
        if any(r is None for r in replies.values()) or ctx.request_state != "multi-1":
            requests = {
                "user_name": form("What is your name?", "name"),
                "greeting": sample("Generate a greeting", 50),
                "client_roots": roots_request,
            }
            return ask(requests, "multi-1")
        return "All inputs received"

    @server.tool(description="Two rounds of input requests with evolving state.")
    def test_input_required_result_multi_round(ctx: Context) -> Any:
        if ctx.request_state == "round-2" and answer(ctx, "step2") is not None:
            return "Multi-round completed"
        if ctx.request_state == "round-1" and answer(ctx, "step1") is not None:
            return ask({"step2": form("Step 2: What is your favorite color?", "color")}, "round-2")
        return ask({"step1": form("Step 1: What is your name?", "name")}, "round-1")

    @server.tool(description="Input-required result whose state is integrity protected.")
    def test_input_required_result_tampered_state(ctx: Context) -> Any:
        if ctx.request_state == "sealed-1" and answer(ctx, "confirm") is not None:
            return "State verified"
        return ask({"confirm": form("Please confirm", "ok", "boolean")}, "sealed-1")

    @server.tool(description="Only asks for what the client declared it supports.")
    def test_input_required_result_capabilities(ctx: Context) -> Any:
        if ctx.input_responses:
            return "Capabilities respected"
        caps = ctx.client_capabilities
        requests: dict[str, Any] = {}
        if caps is not None and caps.sampling is not None:
            requests["llm"] = sample("Say hi", 20)
        if caps is not None and caps.elicitation is not None:
            requests["user"] = form("Your name?", "name")
        if caps is not None and caps.roots is not None:
            requests["roots"] = roots_request
        return ask(requests) if requests else "No client capabilities to ask with"

    @server.prompt(description="A prompt that needs elicited context first.")
    def test_input_required_result_prompt(ctx: Context) -> Any:
        reply = answer(ctx, "user_context")
        context = (reply or {}).get("content", {}).get("context") if reply else None
        if not context:
            return ask({"user_context": form("What context should the prompt use?", "context")})
        return f"Use this context: {context}"

    @server.tool(description="Needs the client's sampling capability.")
    async def test_missing_capability(ctx: Context) -> str:
        caps = ctx.client_capabilities
        if caps is None or caps.sampling is None:
            from mcp.shared.exceptions import MCPError

            raise MCPError(
                code=-32021,
                message="Client did not declare the sampling capability",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return "sampling declared"

    @server.tool(description="Logs at info level (only when the request asked for logs).")
    async def test_logging_tool(ctx: Context) -> str:
        await ctx.info("test_logging_tool ran")
        return "logged"

    @server.tool(
        description="Asks for input while it streams (input-required, never a stray request)."
    )
    def test_streaming_elicitation(ctx: Context) -> Any:
        reply = answer(ctx, "stream_input")
        if reply is None:
            return ask({"stream_input": form("Continue?", "ok", "boolean")})
        return "stream done"

    changes = itertools.count(1)

    @server.tool(description="Adds a tool and announces tools/list_changed.")
    async def test_trigger_tool_change(ctx: Context) -> str:
        name = f"dynamic_tool_{next(changes)}"
        server.add_tool(lambda: name, name=name, description="Added at run time.")
        await ctx.notify_tools_changed()
        return f"added {name}"

    @server.tool(description="Adds a prompt and announces prompts/list_changed.")
    async def test_trigger_prompt_change(ctx: Context) -> str:
        name = f"dynamic_prompt_{next(changes)}"
        server.prompt(name=name, description="Added at run time.")(lambda: name)
        await ctx.notify_prompts_changed()
        return f"added {name}"

    @server.tool(description="Announces that a resource changed (notifications/resources/updated).")
    async def test_trigger_resource_update(uri: str, ctx: Context) -> str:
        await ctx.notify_resource_updated(uri)
        return f"updated {uri}"

    # -- resources --------------------------------------------------------------------------------

    @server.resource(
        "test://static-text", mime_type="text/plain", description="A static text resource."
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource(
        "test://static-binary", mime_type="image/png", description="A static binary resource."
    )
    def static_binary() -> bytes:
        return PNG

    @server.resource(
        "test://watched-resource", mime_type="text/plain", description="A resource to subscribe to."
    )
    def watched() -> str:
        return "Watched resource content."

    @server.resource(
        "test://template/{id}/data", mime_type="application/json", description="Data by id."
    )
    def template(id: str) -> str:
        return f'{{"id":"{id}","templateTest":true,"data":"Data for ID: {id}"}}'

    # -- prompts ----------------------------------------------------------------------------------

    @server.prompt(description="A simple prompt without arguments.")
    def test_simple_prompt() -> str:
        return "This is a simple prompt for testing."

    @server.prompt(description="A prompt with two required arguments.")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @server.prompt(description="A prompt that embeds a resource.")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
        resource = types.TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(content=types.EmbeddedResource(type="resource", resource=resource)),
            UserMessage(
                content=types.TextContent(
                    type="text", text="Please process the embedded resource above."
                ),
            ),
        ]

    @server.prompt(description="A prompt with an image.")
    def test_prompt_with_image() -> list[UserMessage]:
        return [
            UserMessage(
                content=types.ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
            ),
            UserMessage(
                content=types.TextContent(type="text", text="Please analyze the image above."),
            ),
        ]

    @server.completion()
    async def complete(
        ref: Any, argument: types.CompletionArgument, context: Any
    ) -> types.Completion:
        options = ["paris", "park", "party"]
        return types.Completion(
            values=[o for o in options if o.startswith(argument.value)],
            total=len(options),
            has_more=False,
        )

    # -- handlers MCPServer has no decorator for ------------------------------------------------------

    subscriptions: set[str] = set()

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        subscriptions.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscriptions.discard(str(params.uri))
        return types.EmptyResult()

    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler(
        "resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe
    )
    if lowlevel.get_request_handler("logging/setLevel") is None:
        lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    return server


def main() -> None:
    port = int(sys.argv[1])
    build().run(
        "streamable-http",
        host="127.0.0.1",
        port=port,
        event_store=MemoryEventStore(),
        retry_interval=100,
    )


if __name__ == "__main__":
    main()
