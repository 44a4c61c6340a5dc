"""External guard checks against real local services: an OpenAI-format moderation mock (the
official `openai` SDK reads it, and sends what Crossway sends), a webhook that allows, blocks
and rewrites, and every way a service can let a check down (nothing listening, too slow, a
500, a redirect, garbage, a wrong rewrite, too large, an untrusted certificate)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from crossway.config.guardrails import ModerationDetector, PiiDetector, WebhookDetector
from crossway.guard.external import (
    MAX_ANSWER_BYTES,
    MAX_REASON_CHARS,
    ExternalVerdict,
    ModerationCheck,
    WebhookCheck,
    build_external,
)
from crossway.proxy import client
from tests.helpers import free_port
from tests.proxy.test_outbound import Pki, pki, redirect, server_context, serving

__all__ = ["pki"]  # the fixture, shared with the outbound tests

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_KEY = "sk-moderation-key"
SECRET_TEXT = "my card is 4111 1111 1111 1111 and I will kill the process"


@pytest.fixture(autouse=True)
async def closing() -> AsyncIterator[None]:
    yield
    await client.close_session()


# -- an OpenAI-format moderation service --------------------------------------------------------

CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
TRIGGERS = {"kill": ("violence",), "hateful": ("hate", "hate/threatening")}


def moderation_result(text: str) -> dict[str, Any]:
    """One `results[]` entry as OpenAI's moderation API writes it."""
    true = {c for word, found in TRIGGERS.items() if word in text.lower() for c in found}
    return {
        "flagged": bool(true),
        "categories": {c: c in true for c in CATEGORIES},
        "category_scores": {c: 0.93 if c in true else 0.0001 for c in CATEGORIES},
        "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
    }


async def moderate(request: web.Request) -> web.Response:
    body = await request.json()
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    return web.json_response(
        {
            "id": "modr-0123",
            "model": body.get("model", "omni-moderation-latest"),
            "results": [moderation_result(t) for t in inputs],
        }
    )


def moderation(url: str, **options: Any) -> ModerationCheck:
    config = ModerationDetector.model_validate(
        {"type": "moderation", "url": url, "api_key": API_KEY, "timeout": 5, **options}
    )
    check = build_external(config, guard="safety")
    assert isinstance(check, ModerationCheck)
    return check


async def test_the_mock_is_what_the_openai_sdk_sends_and_reads() -> None:
    async with serving({"/v1/moderations": moderate}) as service:
        sdk = openai.AsyncOpenAI(base_url=service.url + "/v1", api_key=API_KEY, max_retries=0)
        answer = await sdk.moderations.create(
            input=["hello", "I will kill it"], model="omni-moderation-latest"
        )
        await sdk.close()
        assert [r.flagged for r in answer.results] == [False, True]
        assert answer.results[1].categories.violence is True
        check = moderation(service.url + "/v1/moderations", model="omni-moderation-latest")
        await check.check(["hello", "I will kill it"], "request")
    from_sdk, from_crossway = service.seen
    assert orjson.loads(from_crossway.body) == orjson.loads(from_sdk.body)
    assert from_crossway.path == from_sdk.path == "/v1/moderations"
    headers = {k.lower(): v for k, v in from_crossway.headers.items()}
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["content-type"] == "application/json"


async def test_moderation_allows_clean_text_and_omits_an_unset_model() -> None:
    async with serving({"/m": moderate}) as service:
        check = moderation(service.url + "/m")
        verdict = await check.check(["hello", "", "how are you?"], "response")
    assert verdict == ExternalVerdict()
    assert orjson.loads(service.seen[0].body) == {"input": ["hello", "how are you?"]}


async def test_moderation_blocks_with_the_category_names_never_the_text() -> None:
    async with serving({"/m": moderate}) as service:
        check = moderation(service.url + "/m")
        verdict = await check.check(["fine", SECRET_TEXT, "a hateful thing"], "request")
    assert verdict.blocked == "violence, hate, hate/threatening"
    assert verdict.failed is None and verdict.rewritten is None
    assert "kill" not in verdict.blocked and "4111" not in verdict.blocked


async def test_moderation_counts_only_the_configured_categories() -> None:
    async with serving({"/m": moderate}) as service:
        violence_only = moderation(service.url + "/m", categories=["violence"])
        assert await violence_only.check(["a hateful thing"], "request") == ExternalVerdict()
        hate = moderation(service.url + "/m", categories=["hate"])  # covers hate/threatening
        verdict = await hate.check(["a hateful thing", "kill"], "request")
    assert verdict.blocked == "hate, hate/threatening"


async def test_a_flagged_result_without_categories_still_blocks() -> None:
    async def bare(_: web.Request) -> web.Response:
        return web.json_response({"results": [{"flagged": True}]})

    async with serving({"/m": bare}) as service:
        verdict = await moderation(service.url + "/m").check(["x"], "request")
    assert verdict.blocked == "flagged"


async def test_nothing_to_check_sends_nothing() -> None:
    async with serving({"/m": moderate, "/w": moderate}) as service:
        assert (
            await moderation(service.url + "/m").check(["", "  "], "request") == ExternalVerdict()
        )
        assert await webhook(service.url + "/w").check([], "request") == ExternalVerdict()
    assert service.seen == []


@pytest.mark.parametrize(
    "answer",
    [
        b"not json at all",
        b'{"results": "none"}',
        b'{"results": [{"categories": {}}]}',  # no `flagged`
        b'{"results": [{"flagged": "yes"}]}',
        b'{"results": [{"flagged": false}, {"flagged": false}]}',  # two results for one input
        b"[]",
    ],
)
async def test_moderation_garbage_is_a_failure(answer: bytes) -> None:
    async def garbage(_: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    async with serving({"/m": garbage}) as service:
        verdict = await moderation(service.url + "/m").check(["one input"], "request")
    assert verdict.failed is not None and verdict.blocked is None


# -- a webhook ----------------------------------------------------------------------------------


def webhook(url: str, **options: Any) -> WebhookCheck:
    config = WebhookDetector.model_validate(
        {"type": "webhook", "name": "classifier", "url": url, "timeout": 5, **options}
    )
    check = build_external(config, guard="safety")
    assert isinstance(check, WebhookCheck)
    return check


def answering(answer: Any, status: int = 200) -> Handler:
    async def handler(_: web.Request) -> web.Response:
        body = answer if isinstance(answer, bytes) else orjson.dumps(answer)
        return web.Response(body=body, status=status, content_type="application/json")

    return handler


async def test_webhook_contract_request_and_allow() -> None:
    async with serving({"/hook": answering({"action": "allow"})}) as service:
        check = webhook(service.url + "/hook", api_key="hook-key", headers={"x-tenant": "blue"})
        verdict = await check.check(["a", "b"], "response", request_id="req-42")
    assert verdict == ExternalVerdict()
    sent = service.seen[0]
    headers = {k.lower(): v for k, v in sent.headers.items()}
    assert orjson.loads(sent.body) == {
        "guard": "safety",
        "detector": "classifier",
        "direction": "response",
        "texts": ["a", "b"],
    }
    assert headers["authorization"] == "Bearer hook-key"
    assert headers["x-tenant"] == "blue"
    assert headers["x-request-id"] == "req-42"


async def test_webhook_without_api_key_sends_no_authorization() -> None:
    async with serving({"/hook": answering({"action": "allow"})}) as service:
        await webhook(service.url + "/hook").check(["a"], "request")
    assert "authorization" not in {k.lower() for k in service.seen[0].headers}


async def test_webhook_block_passes_its_reason_cleaned() -> None:
    long = "policy\x00 violation\n" + "x" * 500
    async with serving(
        {
            "/reason": answering({"action": "block", "reason": "confidential project"}),
            "/none": answering({"action": "block"}),
            "/long": answering({"action": "block", "reason": long}),
        }
    ) as service:
        assert (await webhook(service.url + "/reason").check(["t"], "request")).blocked == (
            "confidential project"
        )
        assert (await webhook(service.url + "/none").check(["t"], "request")).blocked == "flagged"
        reason = (await webhook(service.url + "/long").check(["t"], "request")).blocked
    assert reason is not None and reason.startswith("policy violation xxx")
    assert len(reason) == MAX_REASON_CHARS and "\x00" not in reason and "\n" not in reason


async def test_webhook_rewrite_replaces_the_texts_in_order() -> None:
    rewrite = {"action": "rewrite", "texts": ["one <X>", "two"]}
    async with serving(
        {"/rw": answering(rewrite), "/same": answering({"action": "rewrite", "texts": ["a", "b"]})}
    ) as service:
        assert (
            await webhook(service.url + "/rw").check(["one x", "two"], "response")
        ).rewritten == [
            "one <X>",
            "two",
        ]
        # a rewrite that changes nothing is an allow: nothing to write back
        assert (
            await webhook(service.url + "/same").check(["a", "b"], "response") == ExternalVerdict()
        )


@pytest.mark.parametrize(
    "answer",
    [
        b"<html>gateway error</html>",
        b'{"action": "maybe"}',
        b'{"verdict": "allow"}',
        b'{"action": "rewrite"}',
        b'{"action": "rewrite", "texts": "a"}',
        b'{"action": "rewrite", "texts": ["only one"]}',  # two were sent
        b'{"action": "rewrite", "texts": ["a", "b", "c"]}',
        b'{"action": "block", "reason": 7}',
        b"",
    ],
)
async def test_webhook_garbage_and_wrong_rewrites_are_failures(answer: bytes) -> None:
    async with serving({"/hook": answering(answer)}) as service:
        verdict = await webhook(service.url + "/hook").check(["a", "b"], "request")
    assert verdict.failed is not None
    assert verdict.blocked is None and verdict.rewritten is None


# -- a service that lets the check down ----------------------------------------------------------


async def test_nothing_listening_is_a_failure_and_fail_mode_decides() -> None:
    check = webhook(f"http://127.0.0.1:{free_port()}/hook")
    verdict = await check.check(["a"], "request")
    assert verdict.failed is not None and "unreachable" in verdict.failed
    closed = verdict.applied("closed")
    assert closed.blocked is not None and closed.failed == verdict.failed
    opened = verdict.applied("open")
    assert opened.blocked is None and opened.rewritten is None and opened.failed == verdict.failed
    assert ExternalVerdict(blocked="x").applied("open") == ExternalVerdict(blocked="x")


@pytest.mark.parametrize("stall", ["headers", "body"])
async def test_a_slow_service_fails_within_the_timeout(stall: str) -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def stalled(request: web.Request) -> web.StreamResponse:
        arrived.set()
        if stall == "headers":
            await release.wait()
            return web.json_response({"action": "allow"})
        response = web.StreamResponse(headers={"content-type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"action": ')
        await release.wait()
        await response.write(b'"allow"}')
        return response

    async with serving({"/hook": stalled}) as service:
        check = webhook(service.url + "/hook", timeout=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            verdict = await check.check(["a"], "request")
        finally:
            release.set()
        elapsed = loop.time() - started
    assert arrived.is_set()
    assert verdict.failed == "no answer within 0.3 s"
    assert 0.25 <= elapsed < 1.2  # the check's bound, not the client's later timers


@pytest.mark.parametrize("status", [500, 503, 404, 401])
async def test_an_error_status_is_a_failure(status: int) -> None:
    async with serving({"/m": answering({"action": "allow"}, status=status)}) as service:
        for check in (moderation(service.url + "/m"), webhook(service.url + "/m")):
            verdict = await check.check(["a"], "request")
            assert verdict.failed == f"answered HTTP {status}"


async def test_redirects_are_not_followed() -> None:
    async with serving({"/landing": answering({"action": "allow"})}) as target:
        async with serving({"/hook": redirect(target.url + "/landing", 307)}) as service:
            verdict = await webhook(service.url + "/hook", api_key="k").check(["a"], "request")
    assert verdict.failed == "answered HTTP 307 (redirects are not followed)"
    assert target.seen == []


async def test_an_answer_too_large_is_not_read_whole() -> None:
    big = orjson.dumps({"action": "block", "reason": "x" * (MAX_ANSWER_BYTES + 10_000)})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: the cap counts as it reads
        await response.prepare(request)
        for start in range(0, len(big), 65536):
            try:
                await response.write(big[start : start + 65536])
            except ConnectionError:
                break
        return response

    async with serving({"/sized": answering(big), "/chunked": chunked}) as service:
        for path in ("/sized", "/chunked"):
            verdict = await webhook(service.url + path).check(["a"], "request")
            assert verdict.failed is not None and "larger than" in verdict.failed


async def test_failures_are_logged_once_per_outage_without_the_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="crossway")
    state = {"status": 500}

    async def flaky(_: web.Request) -> web.Response:
        return web.json_response({"action": "allow"}, status=state["status"])

    async with serving({"/hook": flaky}) as service:
        check = webhook(service.url + "/hook")
        for _ in range(3):
            assert (await check.check([SECRET_TEXT], "request")).failed is not None
        state["status"] = 200
        assert await check.check([SECRET_TEXT], "request") == ExternalVerdict()
    lines = [r.getMessage() for r in caplog.records if r.name == "crossway.guard.external"]
    assert len(lines) == 2, lines
    assert "failing" in lines[0] and "HTTP 500" in lines[0] and "answers again" in lines[1]
    assert all(
        "4111" not in r.getMessage() and "kill" not in r.getMessage() for r in caplog.records
    )


# -- TLS comes from the outbound client's per-upstream settings ----------------------------------


async def test_tls_is_verified_against_the_configured_ca(pki: Pki) -> None:
    async with serving({"/m": moderate}, ssl_context=server_context(pki)) as service:
        untrusted = await moderation(service.url + "/m").check(["kill"], "request")
        assert untrusted.failed is not None and "certificate" in untrusted.failed
        trusted = moderation(service.url + "/m", tls={"ca_file": str(pki.ca)})
        await trusted.start()
        assert (await trusted.check(["kill"], "request")).blocked == "violence"


async def test_an_unreadable_ca_file_is_reported_at_start_and_fails_checks(
    caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    check = moderation("https://127.0.0.1:1/m", tls={"ca_file": str(tmp_path / "missing.pem")})
    await check.start()
    assert any("missing.pem" in r.getMessage() for r in caplog.records)
    verdict = await check.check(["a"], "request")
    assert verdict.failed is not None and "ca_file" in verdict.failed
    await check.close()


def test_local_detectors_have_no_external_check() -> None:
    assert build_external(PiiDetector(type="pii")) is None
