"""The guardrails policy as backends use it: blocks name the guard and detector and never the
text, masks write back, decisions are recorded without text, external checks' verdicts and
failures follow `action` and `fail`, and stream guards chain guards per channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from crossway.config.guardrails import GuardrailsConfig
from crossway.guard.content import Slot, string_slots
from crossway.policy.base import PolicyChain, build_chain
from crossway.policy.guardrails import (
    DECISIONS,
    GuardBlocked,
    GuardrailPolicy,
    guard_content,
    guarded,
    stream_guard,
)
from crossway.proxy import client
from crossway.server.context import RequestContext
from crossway.telemetry import metrics
from tests.proxy.test_outbound import serving

CARD = "4111 1111 1111 1111"


@pytest.fixture(autouse=True)
async def closing() -> AsyncIterator[None]:
    yield
    await client.close_session()


def _ctx(*guards: dict[str, Any]) -> RequestContext:
    chain = build_chain(
        [GuardrailsConfig.model_validate({"type": "guardrails", **g}) for g in guards]
    )
    return RequestContext("route", "backend", "req-1", "/v1/chat/completions", chain=chain)


PII = {
    "name": "pii",
    "detectors": [
        {"type": "pii", "entities": ["email", "phone"], "response": "mask"},
        {"type": "pii", "entities": ["credit_card"], "request": "block"},
    ],
}


def _slots(*texts: str) -> tuple[list[Any], list[Slot]]:
    messages = [{"role": "user", "content": t} for t in texts]
    return messages, string_slots(messages, "message", [], frozenset({"role"}))


async def test_a_block_names_guard_and_detector_never_the_text() -> None:
    ctx = _ctx(PII)
    messages, slots = _slots("hello", f"pay with {CARD} now")
    before = metrics.GUARD_DECISIONS.labels("pii", "credit_card", "block", "request")._value.get()
    with pytest.raises(GuardBlocked) as err:
        await guard_content(ctx, slots, "request")
    exc = err.value
    assert exc.status_code == 400 and exc.code == "guardrail_blocked"
    assert "'pii'" in exc.message and "'credit_card'" in exc.message
    assert "4111" not in exc.message and "4111" not in str(exc.detail)
    # What is kept of the refused content (the request log) keeps no match either.
    assert "4111" not in orjson.dumps(messages).decode()
    assert ctx.attrs[DECISIONS] == [
        {
            "guard": "pii",
            "detector": "credit_card",
            "action": "block",
            "direction": "request",
            "count": 1,
        }
    ]
    after = metrics.GUARD_DECISIONS.labels("pii", "credit_card", "block", "request")._value.get()
    assert after == before + 1


async def test_masks_write_back_into_the_json() -> None:
    ctx = _ctx(PII)
    messages, slots = _slots("write to jane@example.com or +1 415 555 2671")
    await guard_content(ctx, slots, "response")
    assert messages[0]["content"] == "write to <EMAIL> or <PHONE>"
    assert slots[0].changed
    # The request direction of the same guard only blocks cards: nothing else changes.
    messages, slots = _slots("write to jane@example.com")
    await guard_content(ctx, slots, "request")
    assert messages[0]["content"] == "write to jane@example.com"


def test_routes_without_a_guard_are_not_guarded() -> None:
    assert not guarded(RequestContext("r", "b", "i", "/"))
    assert not guarded(RequestContext("r", "b", "i", "/", chain=PolicyChain([])))
    assert guarded(_ctx(PII))


async def test_guards_apply_in_chain_order() -> None:
    ctx = _ctx(
        {"name": "first", "detectors": [{"type": "pii", "entities": ["email"], "action": "mask"}]},
        {"name": "second", "detectors": [{"type": "words", "words": ["EMAIL"], "action": "block"}]},
    )
    _, slots = _slots("mail jane@example.com")
    with pytest.raises(GuardBlocked) as err:  # the second sees the first one's placeholder
        await guard_content(ctx, slots, "request")
    assert err.value.guard == "second"


async def test_stream_guard_chains_guards_per_channel_and_blocks() -> None:
    ctx = _ctx(
        {
            "name": "a",
            "stream_window": 48,
            "detectors": [{"type": "pii", "entities": ["email"], "action": "mask"}],
        },
        {
            "name": "b",
            "stream_window": 8,
            "detectors": [{"type": "pii", "entities": ["credit_card"], "response": "block"}],
        },
    )
    sg = stream_guard(ctx)
    assert sg is not None
    text = "reach me at jane.doe@example.com please, or not at all."
    out = {0: "", 1: ""}
    for i, ch in enumerate(text):
        out[0] += sg.feed(0, ch)
        out[1] += sg.feed(1, text[i])
    rest = sg.flush_all()
    assert out[0] + rest[0] == out[1] + rest[1] == "reach me at <EMAIL> please, or not at all."
    assert stream_guard(_ctx({"detectors": [{"type": "pii", "request": "block"}]})) is None
    with pytest.raises(GuardBlocked) as err:
        for ch in f"card {CARD} end of it all":
            sg.feed(2, ch)
        sg.flush(2)
    assert err.value.guard == "b" and err.value.direction == "response"


def _hook(answer: Any, status: int = 200) -> Any:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(answer), status=status, content_type="application/json"
        )

    return handler


async def test_webhook_rewrite_is_written_back_and_block_refuses() -> None:
    async with serving(
        {
            "/rewrite": _hook({"action": "rewrite", "texts": ["[redacted]"]}),
            "/block": _hook({"action": "block", "reason": "codename"}),
        }
    ) as service:
        ctx = _ctx(
            {
                "name": "hook",
                "detectors": [
                    {"type": "webhook", "url": service.url + "/rewrite", "response": "mask"}
                ],
            }
        )
        messages, slots = _slots("project zeus")
        await guard_content(ctx, slots, "response")
        assert messages[0]["content"] == "[redacted]"
        ctx = _ctx(
            {
                "name": "hook",
                "detectors": [
                    {"type": "webhook", "url": service.url + "/block", "request": "block"}
                ],
            }
        )
        _, slots = _slots("project zeus")
        with pytest.raises(GuardBlocked, match="codename"):
            await guard_content(ctx, slots, "request")
        sent = orjson.loads(service.seen[-1].body)
        assert sent["guard"] == "hook" and sent["direction"] == "request"
        assert service.seen[-1].headers.get("X-Request-ID") == "req-1"


@pytest.mark.parametrize(
    ("fail", "action", "refused", "counted"),
    [
        ("closed", "block", True, "error_closed"),
        ("open", "block", False, "error_open"),
        ("closed", "log", False, "error_open"),  # `log` only records, whatever `fail` says
    ],
)
async def test_a_failed_check_follows_fail_and_action(
    fail: str, action: str, refused: bool, counted: str
) -> None:
    async with serving({"/hook": _hook({"oops": True}, status=500)}) as service:
        ctx = _ctx(
            {
                "name": "hook",
                "detectors": [
                    {
                        "type": "webhook",
                        "url": service.url + "/hook",
                        "action": action,
                        "fail": fail,
                    }
                ],
            }
        )
        _, slots = _slots("anything")
        if refused:
            with pytest.raises(GuardBlocked, match="unavailable"):
                await guard_content(ctx, slots, "request")
        else:
            await guard_content(ctx, slots, "request")
        assert ctx.attrs[DECISIONS][0]["action"] == counted


def test_a_bad_detector_is_reported_with_the_guard_name() -> None:
    with pytest.raises(ValueError, match="detectors\\[0\\]"):
        GuardrailsConfig.model_validate(
            {"type": "guardrails", "detectors": [{"type": "regex", "pattern": "(a)\\1"}]}
        )
    policy = GuardrailPolicy(GuardrailsConfig.model_validate(PII | {"type": "guardrails"}))
    assert policy.guard.acts_on("request") and policy.guard.acts_on("response")
