"""Sample A2A agents (built with `a2a-sdk`) for the quickstart, examples/a2a.yaml and the tests.

    python -m crossway.samples.a2a_agents --agent writer [--port 9201] [--version 1.0|0.3|both]

Each agent answers deterministically, offline, and serves its card at
`/.well-known/agent-card.json` (and the legacy `/.well-known/agent.json`), JSON-RPC at `/`
and HTTP+JSON (REST) under `/` (`POST /message:send`, `GET /tasks/{id}`, ...; the v0.3 REST
routes are under `/v1/`). `--version` picks the protocol: `1.0` (v1.0 only), `0.3` (only v0.3,
its card a plain v0.3 card) or `both` (one app serving both, as a2a-sdk 1.x does).

The agents:
- `writer`: text only (`text/plain`); skills `summarize` and `translate`. Metadata
  `{"reply": "message"}` makes it answer with a plain message instead of a task.
- `vision`: takes `image/png`, `image/jpeg` and `text/plain`; skill `describe-image` reports
  each image part's type and size.
- `streamer`: emits `steps` (metadata, default 5) working updates and artifact chunks,
  `delay` seconds apart (default 0.05), then completes; cancelable while it runs.
- `asker`: asks for input (`input-required`) and completes on the follow-up message in the
  same task or context.
- `failer`: every task ends `failed`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from a2a.compat.v0_3.conversions import to_compat_agent_card
from a2a.helpers.proto_helpers import get_message_text, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler, RequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import create_jsonrpc_routes, create_rest_routes
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    Role,
    Task,
    TaskState,
    TaskStatus,
)
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

Version = Literal["1.0", "0.3", "both"]
VERSIONS: Final[tuple[Version, ...]] = ("1.0", "0.3", "both")
DEFAULT_PORTS: Final = {
    "writer": 9201,
    "vision": 9202,
    "streamer": 9203,
    "asker": 9204,
    "failer": 9205,
}
CARD_PATHS: Final = ("/.well-known/agent-card.json", "/.well-known/agent.json")
V10: Final = "1.0"
V03: Final = "0.3.0"
DEFAULT_STEPS: Final = 5
DEFAULT_DELAY: Final = 0.05
MAX_STEPS: Final = 1000
MAX_DELAY: Final = 5.0
SUMMARY_WORDS: Final = 12
IMAGE_MODES: Final = ("image/png", "image/jpeg")
TEXT: Final = "text/plain"


# --- the agents' logic -------------------------------------------------------------------------


def _text(context: RequestContext) -> str:
    return get_message_text(context.message) if context.message else ""


def _metadata(context: RequestContext) -> dict[str, Any]:
    """The message's metadata, overridden by the request's."""
    merged: dict[str, Any] = {}
    if context.message is not None and context.message.HasField("metadata"):
        merged.update(MessageToDict(context.message.metadata))
    merged.update(context.metadata or {})
    return merged


async def _open_task(context: RequestContext, queue: EventQueue) -> TaskUpdater:
    """Publish the task (when the message starts one) and return an updater for it."""
    task_id, context_id = context.task_id or "", context.context_id or ""
    if context.current_task is None:
        history = [context.message] if context.message else []
        task = Task(
            id=task_id,
            context_id=context_id,
            status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
            history=history,
        )
        await queue.enqueue_event(task)
    return TaskUpdater(queue, task_id, context_id)


class SampleExecutor(AgentExecutor):
    """Common shape: open the task, run `work`, cancel by publishing `canceled`."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await _open_task(context, event_queue)
        await self.work(context, updater)

    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        raise NotImplementedError

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel(updater.new_agent_message([new_text_part("Canceled.")]))


def summarize(text: str) -> str:
    """The writer's `summarize`: the first sentence, at most a dozen words."""
    first = text.strip().split(". ")[0]
    words = first.split()
    short = " ".join(words[:SUMMARY_WORDS])
    return f"Summary: {short}{'...' if len(words) > SUMMARY_WORDS else ''}"


def translate(text: str) -> str:
    """The writer's `translate` (into 'upper case', deterministic)."""
    return f"Translation: {text.upper()}"


class WriterExecutor(SampleExecutor):
    """Text in, text out: summarize or translate (skill id in metadata, else by keyword)."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        if _metadata(context).get("reply") == "message":
            answer = self.answer(context)
            await event_queue.enqueue_event(
                new_text_message(answer, context_id=context.context_id, role=Role.ROLE_AGENT)
            )
            return
        await super().execute(context, event_queue)

    def answer(self, context: RequestContext) -> str:
        text = _text(context)
        meta = _metadata(context)
        skill = meta.get("skillId") or meta.get("crossway/skill")
        if skill == "translate" or (skill is None and text.lower().startswith("translate")):
            return translate(text)
        return summarize(text)

    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        await updater.start_work()
        await updater.add_artifact([new_text_part(self.answer(context))], name="result")
        await updater.complete()


class VisionExecutor(SampleExecutor):
    """Describes each image part (media type and size, or its URL)."""

    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        await updater.start_work()
        lines: list[str] = []
        parts = context.message.parts if context.message else []
        for part in parts:
            if part.HasField("raw"):
                kind = part.media_type or "application/octet-stream"
                lines.append(f"An image ({kind}, {len(part.raw)} bytes).")
            elif part.HasField("url"):
                lines.append(f"An image ({part.media_type or 'unknown type'}) at {part.url}.")
        if not lines:
            lines.append("No image received; send an image/png or image/jpeg part.")
        await updater.add_artifact([new_text_part(" ".join(lines))], name="description")
        await updater.complete()


class StreamerExecutor(SampleExecutor):
    """Slow and chatty: `steps` status updates and artifact chunks, `delay` seconds apart."""

    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        meta = _metadata(context)
        steps = max(1, min(int(meta.get("steps", DEFAULT_STEPS)), MAX_STEPS))
        delay = max(0.0, min(float(meta.get("delay", DEFAULT_DELAY)), MAX_DELAY))
        artifact_id = f"{updater.task_id}-stream"
        for step in range(steps):
            await updater.start_work(
                updater.new_agent_message([new_text_part(f"step {step + 1}/{steps}")])
            )
            await updater.add_artifact(
                [new_text_part(f"chunk {step + 1} ")],
                artifact_id=artifact_id,
                name="stream",
                append=step > 0,
                last_chunk=step == steps - 1,
            )
            await asyncio.sleep(delay)
        await updater.complete()


class AskerExecutor(SampleExecutor):
    """Asks a question first; the follow-up (same task, or same context) gets the answer."""

    QUESTION: Final = "Which language should the answer be in?"

    def __init__(self) -> None:
        self.waiting: set[str] = set()
        """Context ids whose task is waiting for input."""

    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        task = context.current_task
        follow_up = (
            task is not None and task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        ) or updater.context_id in self.waiting
        if not follow_up:
            self.waiting.add(updater.context_id)
            await updater.requires_input(updater.new_agent_message([new_text_part(self.QUESTION)]))
            return
        self.waiting.discard(updater.context_id)
        await updater.start_work()
        await updater.add_artifact(
            [new_text_part(f"Answer in {_text(context)}: 42")], name="answer"
        )
        await updater.complete()


class FailerExecutor(SampleExecutor):
    """Every task fails (status `failed`, with a message saying why)."""

    async def work(self, context: RequestContext, updater: TaskUpdater) -> None:
        await updater.start_work()
        await updater.failed(
            updater.new_agent_message([new_text_part("The failer sample agent always fails.")])
        )


# --- cards --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What a sample agent is: its executor, card text, modes and skills."""

    executor: Callable[[], AgentExecutor]
    description: str
    input_modes: tuple[str, ...]
    output_modes: tuple[str, ...]
    skills: tuple[AgentSkill, ...]


def _skill(
    id_: str,
    name: str,
    description: str,
    tags: list[str],
    examples: list[str],
    modes: tuple[str, ...],
) -> AgentSkill:
    return AgentSkill(
        id=id_,
        name=name,
        description=description,
        tags=tags,
        examples=examples,
        input_modes=list(modes),
        output_modes=[TEXT],
    )


SPECS: Final[dict[str, AgentSpec]] = {
    "writer": AgentSpec(
        WriterExecutor,
        "Writes: summarizes and translates text.",
        (TEXT,),
        (TEXT,),
        (
            _skill(
                "summarize",
                "Summarize text",
                "Summarizes a text in one short sentence.",
                ["text", "summary", "writing"],
                ["Summarize this article", "Give me the gist of this report"],
                (TEXT,),
            ),
            _skill(
                "translate",
                "Translate text",
                "Translates a text into another language.",
                ["text", "translation", "language"],
                ["Translate this paragraph into French"],
                (TEXT,),
            ),
        ),
    ),
    "vision": AgentSpec(
        VisionExecutor,
        "Looks at images and describes them.",
        (*IMAGE_MODES, TEXT),
        (TEXT,),
        (
            _skill(
                "describe-image",
                "Describe an image",
                "Describes what an image shows (PNG or JPEG).",
                ["image", "vision", "photo"],
                ["What is in this picture?", "Describe this photo"],
                (*IMAGE_MODES, TEXT),
            ),
        ),
    ),
    "streamer": AgentSpec(
        StreamerExecutor,
        "Streams a long answer step by step.",
        (TEXT,),
        (TEXT,),
        (
            _skill(
                "stream-report",
                "Stream a report",
                "Produces a long report, streamed chunk by chunk.",
                ["stream", "report", "long-running"],
                ["Write a long report, streaming it"],
                (TEXT,),
            ),
        ),
    ),
    "asker": AgentSpec(
        AskerExecutor,
        "Asks a clarifying question before answering.",
        (TEXT,),
        (TEXT,),
        (
            _skill(
                "clarify",
                "Answer after a question",
                "Asks which language to answer in, then answers.",
                ["question", "multi-turn"],
                ["Answer my question, ask me first"],
                (TEXT,),
            ),
        ),
    ),
    "failer": AgentSpec(
        FailerExecutor,
        "Always fails (for testing failure handling).",
        (TEXT,),
        (TEXT,),
        (
            _skill(
                "fail",
                "Fail",
                "Fails every task.",
                ["failure", "testing"],
                ["Please fail"],
                (TEXT,),
            ),
        ),
    ),
}
AGENTS: Final = tuple(SPECS)


def agent_card(name: str, base_url: str, version: Version = "1.0") -> AgentCard:
    """The v1.0 card of sample agent `name` at `base_url` (JSON-RPC and REST interfaces for
    each protocol version the agent speaks)."""
    spec = SPECS[name]
    base = base_url.rstrip("/")
    versions = {"1.0": [V10], "0.3": [V03], "both": [V10, V03]}[version]
    interfaces = [
        AgentInterface(url=base, protocol_binding=binding, protocol_version=v)
        for v in versions
        for binding in ("JSONRPC", "HTTP+JSON")
    ]
    return AgentCard(
        name=name,
        description=spec.description,
        version="1.0.0",
        supported_interfaces=interfaces,
        provider=AgentProvider(organization="Crossway samples", url="https://example.invalid"),
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=list(spec.input_modes),
        default_output_modes=list(spec.output_modes),
        skills=list(spec.skills),
    )


def card_json(card: AgentCard, version: Version) -> dict[str, Any]:
    """The card as the agent serves it: a plain v0.3 card for `0.3`, else a2a-sdk's v1.0 JSON
    (for `both`, with the v0.3 fields merged in, as a2a-sdk 1.x serves it)."""
    if version == "0.3":
        return to_compat_agent_card(card).model_dump(mode="json", by_alias=True, exclude_none=True)
    return agent_card_to_dict(card)


# --- the app ------------------------------------------------------------------------------------


class V03OnlyDispatcher(JsonRpcDispatcher):
    """JSON-RPC that knows only the v0.3 method names (`message/send`, ...): v1.0 names get
    -32601, as from an agent built with a2a-sdk 0.3."""

    METHOD_TO_MODEL: dict[str, type] = {}


def _card_routes(card: dict[str, Any]) -> list[BaseRoute]:
    async def serve_card(request: Request) -> JSONResponse:
        return JSONResponse(card)

    return [Route(path, serve_card, methods=["GET"]) for path in CARD_PATHS]


def build_handler(name: str, card: AgentCard) -> RequestHandler:
    """The a2a-sdk request handler of sample agent `name` (in-memory task store)."""
    return DefaultRequestHandler(
        agent_executor=SPECS[name].executor(),
        task_store=InMemoryTaskStore(),
        agent_card=card,
        validate_input_modes=True,
    )


def build_app(name: str, base_url: str, version: Version = "1.0") -> Starlette:
    """The ASGI app of sample agent `name`, reachable at `base_url`, speaking `version`."""
    if name not in SPECS:
        raise ValueError(f"unknown sample agent {name!r} (one of {', '.join(AGENTS)})")
    card = agent_card(name, base_url, version)
    handler = build_handler(name, card)
    routes = _card_routes(card_json(card, version))
    if version == "0.3":
        rpc = V03OnlyDispatcher(request_handler=handler, enable_v0_3_compat=True)
        routes.append(Route("/", rpc.handle_requests, methods=["POST"]))
        from a2a.compat.v0_3.rest_adapter import REST03Adapter

        for (path, method), endpoint in REST03Adapter(http_handler=handler).routes().items():
            routes.append(Route(path, endpoint, methods=[method]))
    else:
        compat = version == "both"
        routes += create_jsonrpc_routes(handler, "/", enable_v0_3_compat=compat)
        routes += create_rest_routes(handler, enable_v0_3_compat=compat)
    return Starlette(routes=routes)


def main(argv: list[str] | None = None) -> None:
    """The command line: serve one sample agent with uvicorn until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", required=True, choices=AGENTS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=None, help="default: 9201 writer ... 9205 failer"
    )
    parser.add_argument("--version", default="1.0", choices=VERSIONS)
    parser.add_argument("--public-url", default=None, help="the base URL its card names")
    args = parser.parse_args(argv)
    port = args.port if args.port is not None else DEFAULT_PORTS[args.agent]
    url = args.public_url or f"http://{args.host}:{port}"
    app = build_app(args.agent, url, args.version)

    import uvicorn

    uvicorn.run(app, host=args.host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
