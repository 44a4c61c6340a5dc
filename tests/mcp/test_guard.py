"""Guardrails on MCP routes: the `mcp` SDK client through Crossway's Streamable HTTP endpoint to
a real MCP server (`tests.mcp.servers.guarded`, over stdio and Streamable HTTP), in both
protocol eras: a tool call whose arguments hold a card number is refused before the server
sees it; e-mail addresses and phone numbers in tool results, prompts and resources are masked.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from typing import Any

import mcp.types as types
import pytest
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from crossway.config.guardrails import GuardrailsConfig
from crossway.mcp import guard as mcp_guard
from crossway.mcp.jsonrpc import INVALID_PARAMS
from crossway.policy import build_chain
from crossway.policy.guardrails import DECISIONS, GuardBlocked
from crossway.server.context import RequestContext
from mcp import Client
from tests.helpers import ROOT, Gateway, free_port, start_gateway
from tests.mcp.conftest import spawn, stop
from tests.mcp.servers.guarded import EMAIL, PHONE

MODERN = "2026-07-28"
MODES = ["legacy", MODERN]
CARD = "4111 1111 1111 1111"
GUARD_POLICY: dict[str, Any] = {
    "type": "guardrails",
    "name": "pii",
    "detectors": [
        {"type": "pii", "entities": ["email", "phone"], "response": "mask"},
        {"type": "pii", "entities": ["credit_card"], "request": "block"},
    ],
}
"""The issue's guard: e-mails and phones masked in answers, card numbers refused in requests."""


def guarded_stdio() -> str:
    return (
        f'{{type: stdio, command: "{sys.executable}", '
        f'args: ["-m", "tests.mcp.servers.guarded", "stdio"], cwd: "{ROOT}"}}'
    )


def config(server: str, *, guard: bool = True) -> str:
    policies = json.dumps([GUARD_POLICY] if guard else [])
    return f"""
routes:
  - {{name: mcp, backend: tools, policies: {policies}}}
backends:
  tools:
    type: mcp
    servers:
      data: {server}
"""


@pytest.fixture(scope="module")
def guarded_http() -> Iterator[str]:
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "tests.mcp.servers.guarded", "streamable-http", str(port)], port
    )
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


@pytest.fixture(scope="module", params=["stdio", "streamable_http"])
def gateway(request: pytest.FixtureRequest, guarded_http: str) -> Iterator[Gateway]:
    server = (
        guarded_stdio()
        if request.param == "stdio"
        else f"{{type: streamable_http, url: {guarded_http}}}"
    )
    with start_gateway(config(server)) as gw:
        yield gw


async def received(client: Client) -> list[dict[str, Any]]:
    result = await client.call_tool("data_received", {})
    calls: list[dict[str, Any]] = json.loads(result.content[0].text)  # type: ignore[union-attr]
    return calls


def text_of(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


# -- request direction: refused before the server sees it -----------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_card_number_in_tool_arguments_is_refused(gateway: Gateway, mode: Any) -> None:
    async with Client(gateway.url + "/mcp", mode=mode) as client:
        before = len([c for c in await received(client) if c.get("tool") == "pay"])
        with pytest.raises(MCPError) as info:
            await client.call_tool("data_pay", {"card": f"my card is {CARD}", "amount": 5})
        error = info.value.error
        assert error.code == INVALID_PARAMS
        assert "guardrail 'pii'" in error.message and "credit_card" in error.message
        assert "4111" not in error.message and "4111" not in json.dumps(error.data)
        assert error.data == {"guard": "pii", "detector": "credit_card", "direction": "request"}
        after = [c for c in await received(client) if c.get("tool") == "pay"]
        assert len(after) == before  # the server never got the call
        # the same tool without a card number goes through
        assert text_of(await client.call_tool("data_pay", {"card": "on file", "amount": 5})) == (
            "charged 5"
        )


@pytest.mark.parametrize("mode", MODES)
async def test_card_number_in_prompt_arguments_is_refused(gateway: Gateway, mode: Any) -> None:
    async with Client(gateway.url + "/mcp", mode=mode) as client:
        with pytest.raises(MCPError, match="guardrail 'pii'"):
            await client.get_prompt("data_introduce", {"name": CARD.replace(" ", "")})
        assert not [c for c in await received(client) if c.get("name") == CARD.replace(" ", "")]


# -- response direction: masked on the way back -----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_email_in_echoed_tool_result_is_masked(gateway: Gateway, mode: Any) -> None:
    async with Client(gateway.url + "/mcp", mode=mode) as client:
        result = await client.call_tool("data_echo", {"text": f"mail {EMAIL} or call {PHONE}"})
        assert text_of(result) == "mail <EMAIL> or call <PHONE>"
        # what the server says back is an answer too: its own list of calls is masked
        calls = [c for c in await received(client) if c.get("tool") == "echo"]
        assert calls[-1]["text"] == "mail <EMAIL> or call <PHONE>"


@pytest.mark.parametrize("mode", MODES)
async def test_structured_and_embedded_results_are_masked(gateway: Gateway, mode: Any) -> None:
    async with Client(gateway.url + "/mcp", mode=mode) as client:
        result = await client.call_tool("data_contact", {})
        assert result.structured_content == {"name": "Jane", "email": "<EMAIL>"}
        assert EMAIL not in text_of(result)
        result = await client.call_tool("data_card", {})
        assert result.content[0].text == "write to <EMAIL>"  # type: ignore[union-attr]
        assert result.content[1].resource.text == "Jane <<EMAIL>>"  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_prompt_and_resource_are_masked(gateway: Gateway, mode: Any) -> None:
    async with Client(gateway.url + "/mcp", mode=mode) as client:
        prompt = await client.get_prompt("data_introduce", {"name": "Bob"})
        assert prompt.messages[0].content.text == "Introduce Bob to Jane (<EMAIL>)."  # type: ignore[union-attr]
        uri = next(str(r.uri) for r in (await client.list_resources()).resources)
        read = await client.read_resource(uri)
        assert read.contents[0].text == "Jane Doe, <EMAIL>, <PHONE>"  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", ["streamable", "sse"])
async def test_answers_streamed_as_sse_and_the_legacy_endpoint(
    gateway: Gateway, transport: str
) -> None:
    """A result sent as an SSE stream (a log line comes first), and the legacy HTTP+SSE
    endpoint: guarded the same way."""
    target = gateway.url + "/mcp" if transport == "streamable" else sse_client(gateway.url + "/sse")
    logs: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    async with Client(target, mode="legacy", logging_callback=on_log) as client:
        result = await client.call_tool("data_chatty", {"text": f"to {EMAIL}"})
        assert text_of(result) == "to <EMAIL>"
        assert logs == ["working on it"]
        with pytest.raises(MCPError, match="guardrail 'pii'"):
            await client.call_tool("data_chatty", {"text": CARD})
        assert [c["text"] for c in await received(client) if c.get("tool") == "chatty"][-1] == (
            "to <EMAIL>"
        )
        assert logs == ["working on it"]  # the refused call never ran


async def test_without_a_guard_nothing_is_touched(guarded_http: str) -> None:
    with start_gateway(
        config(f"{{type: streamable_http, url: {guarded_http}}}", guard=False)
    ) as gw:
        async with Client(gw.url + "/mcp", mode="legacy") as client:
            assert text_of(await client.call_tool("data_pay", {"card": CARD, "amount": 1})) == (
                "charged 1"
            )
            assert text_of(await client.call_tool("data_echo", {"text": EMAIL})) == EMAIL


# -- the arguments' Mcp-Param-* mirrors (2026-07-28) ------------------------------------------


def _ctx(detectors: list[dict[str, Any]]) -> RequestContext:
    policy = GuardrailsConfig.model_validate(
        {"type": "guardrails", "name": "g", "detectors": detectors}
    )
    return RequestContext("r", "b", "1", "/", chain=build_chain([policy]))


async def test_param_headers_are_masked_like_the_arguments() -> None:
    ctx = _ctx([{"type": "pii", "entities": ["email"], "request": "mask"}])
    wrapped = "=?base64?" + base64.b64encode(f"Zoë <{EMAIL}>".encode()).decode() + "?="
    params = {"name": "send", "arguments": {"to": EMAIL, "cc": [f"Zoë <{EMAIL}>"], EMAIL: 1}}
    headers = {"mcp-param-to": EMAIL, "mcp-param-cc": wrapped, "mcp-param-n": "1"}
    out = await mcp_guard.guard_request(ctx, "tools/call", params, headers)
    assert params["arguments"] == {"to": "<EMAIL>", "cc": ["Zoë <<EMAIL>>"], EMAIL: 1}  # keys kept
    assert out is not None and out["mcp-param-to"] == "<EMAIL>" and out["mcp-param-n"] == "1"
    cc = out["mcp-param-cc"]
    assert base64.b64decode(cc[len("=?base64?") : -2]).decode() == "Zoë <<EMAIL>>"
    assert headers["mcp-param-to"] == EMAIL  # the caller's dict is not changed
    assert ctx.attrs[DECISIONS] == [
        {"guard": "g", "detector": "email", "action": "mask", "direction": "request", "count": 4}
    ]


async def test_a_value_only_in_a_param_header_is_refused() -> None:
    ctx = _ctx([{"type": "pii", "entities": ["credit_card"], "request": "block"}])
    params: dict[str, Any] = {"name": "pay", "arguments": {"card": "on file"}}
    with pytest.raises(GuardBlocked):
        await mcp_guard.guard_request(ctx, "tools/call", params, {"mcp-param-card": CARD})


async def test_other_methods_and_binary_content_are_not_scanned() -> None:
    ctx = _ctx([{"type": "pii", "entities": ["email"], "action": "mask"}])
    params: dict[str, Any] = {"uri": f"mailto:{EMAIL}", "arguments": {"x": EMAIL}}
    await mcp_guard.guard_request(ctx, "resources/read", params, None)
    assert params["arguments"] == {"x": EMAIL}
    blob = {"contents": [{"uri": "x://y", "blob": base64.b64encode(EMAIL.encode()).decode()}]}
    assert await mcp_guard.guard_result(ctx, "resources/read", blob) == blob
    image = {"content": [{"type": "image", "data": "aGk=", "mimeType": "image/png"}]}
    assert await mcp_guard.guard_result(ctx, "tools/call", image) == image
