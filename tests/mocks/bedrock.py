"""A mock of Bedrock Runtime's Converse and ConverseStream APIs.

It checks what AWS checks: the SigV4 signature (re-computed with botocore from the received
method, raw path, signed headers, body and timestamp, using the mock's own copy of the
credentials), the signature's age, or a Bedrock API key as bearer; and what Converse validates
(roles alternating from user, non-blank text, tool results answering the previous tool uses,
a `toolConfig` whenever tool blocks appear). It answers in the exact wire format: JSON with
`x-amzn-ErrorType` for errors, `application/vnd.amazon.eventstream` binary frames with correct
CRCs (and Bedrock's random `p` padding) for streams, exceptions as exception frames.
"""

from __future__ import annotations

import datetime
import hmac
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from crossway.llm.providers.eventstream import encode_message
from tests.mocks.base import (
    MockServer,
    RecordedRequest,
    Reply,
    injected_fault,
    json_response,
    running,
    send_stream,
    split_text,
)

ACCESS_KEY = "AKIAMOCKACCESSKEY123"
SECRET_KEY = "mock/secret/key/for/sigv4/tests/0000000"
SESSION_TOKEN = "mock-session-token"
API_KEY = "bedrock-api-key-mock"
REGION = "us-east-1"
MAX_SKEW = datetime.timedelta(minutes=5)

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9\-;]+), Signature=(?P<sig>[0-9a-f]{64})$"
)
_PATH = re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>converse|converse-stream|invoke)$")

TOP_LEVEL = {
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "promptVariables",
    "additionalModelResponseFieldPaths",
    "requestMetadata",
    "performanceConfig",
}
ERROR_NAMES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


def error(
    status: int, name: str | None, message: str, extra: dict[str, str] | None = None
) -> web.Response:
    name = name or ERROR_NAMES.get(status, "InternalServerException")
    headers = {
        "x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        **(extra or {}),
    }
    return json_response(status, {"message": message}, headers)


def verify_signature(
    recorded: RecordedRequest, *, session_token: str | None
) -> web.Response | None:
    """None if the request carries a valid SigV4 signature for the mock's credentials."""
    headers = recorded.headers
    auth = headers.get("authorization", "")
    if auth.startswith("Bearer "):
        if not hmac.compare_digest(auth[7:], API_KEY):
            return error(
                403,
                "AccessDeniedException",
                "Authentication failed: Please make sure your API Key is valid.",
            )
        return None
    m = _AUTH.match(auth)
    if m is None:
        return error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    if m["akid"] != ACCESS_KEY:
        return error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    amz_date = headers.get("x-amz-date", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return error(
            403, "IncompleteSignatureException", "X-Amz-Date header is missing or malformed"
        )
    if abs(datetime.datetime.now(datetime.UTC) - when) > MAX_SKEW:
        return error(
            403,
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than allowed.",
        )
    signed = m["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed or m["date"] != amz_date[:8]:
        return error(
            403,
            "IncompleteSignatureException",
            "Authorization header requires host and x-amz-date to be signed",
        )
    if session_token is not None and headers.get("x-amz-security-token") != session_token:
        return error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    query = "&".join(f"{k}={v}" for k, v in recorded.query.items())
    url = f"http://{headers['host']}{recorded.path}" + (f"?{query}" if query else "")
    request = AWSRequest(
        method=recorded.method,
        url=url,
        data=recorded.body,
        headers={h: headers.get(h, "") for h in signed},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(ACCESS_KEY, SECRET_KEY, session_token), m["service"], m["region"]
    )
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    if m["service"] != "bedrock" or not hmac.compare_digest(expected, m["sig"]):
        return error(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.",
        )
    return None


def validate(body: Any) -> str | None:
    """What Converse would reject in this body, as its ValidationException message."""
    if not isinstance(body, dict):
        return "Malformed input request"
    extra = set(body) - TOP_LEVEL
    if extra:
        return f"Malformed input request: extraneous key [{sorted(extra)[0]}] is not permitted"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "A conversation must start with a user message. Try again with a conversation that starts with a user message."
    tool_config = body.get("toolConfig")
    pending: set[str] = set()
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if i == 0 and role != "user":
            return "A conversation must start with a user message. Try again with a conversation that starts with a user message."
        if i > 0 and messages[i - 1].get("role") == role:
            return "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again."
        content = msg.get("content")
        if not isinstance(content, list) or not content:
            return f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
        results = {b["toolResult"].get("toolUseId") for b in content if "toolResult" in b}
        if pending and not pending <= results:
            return f"Expected toolResult blocks at messages.{i}.content for the following Ids: {', '.join(sorted(pending - results))}"
        pending = set()
        for j, block in enumerate(content):
            if len(block) != 1:
                return f"messages.{i}.content.{j}: a ContentBlock must hold exactly one member"
            (kind,) = block
            if kind == "text" and not str(block["text"]).strip():
                return f"The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to the text field, and try again."
            if kind in ("toolUse", "toolResult") and not tool_config:
                return "The toolConfig field must be defined when using toolUse and toolResult content blocks."
            if kind == "toolUse":
                if not isinstance(block["toolUse"].get("input"), dict):
                    return f"messages.{i}.content.{j}.toolUse.input must be an object"
                pending.add(block["toolUse"]["toolUseId"])
            if kind == "image" and block["image"].get("format") not in (
                "png",
                "jpeg",
                "gif",
                "webp",
            ):
                return f"messages.{i}.content.{j}.image.format: invalid"
            if kind not in (
                "text",
                "image",
                "document",
                "video",
                "toolUse",
                "toolResult",
                "reasoningContent",
                "cachePoint",
                "guardContent",
            ):
                return f"messages.{i}.content.{j}: unknown ContentBlock member {kind}"
    if tool_config is not None:
        tools = tool_config.get("tools")
        if not isinstance(tools, list) or not tools:
            return "toolConfig.tools must hold at least one tool"
        for k, tool in enumerate(tools):
            spec = tool.get("toolSpec") or {}
            if not spec.get("name") or not isinstance(
                (spec.get("inputSchema") or {}).get("json"), dict
            ):
                return f"toolConfig.tools.{k}.toolSpec: name and inputSchema.json are required"
        choice = tool_config.get("toolChoice")
        if choice is not None and (
            len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool")
        ):
            return "toolConfig.toolChoice: exactly one of auto, any, tool"
    inference = body.get("inferenceConfig") or {}
    if set(inference) - {"maxTokens", "temperature", "topP", "stopSequences"}:
        return "inferenceConfig: unknown key"
    return None


def content_blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.thinking is not None:
        blocks.append(
            {"reasoningContent": {"reasoningText": {"text": reply.thinking, "signature": "sig"}}}
        )
    if reply.text:
        blocks.append({"text": reply.text})
    for n, call in enumerate(reply.tool_calls):
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": call.id or f"tooluse_mock{n:02d}",
                    "name": call.name,
                    "input": call.arguments,
                }
            }
        )
    return blocks


def usage(reply: Reply) -> dict[str, Any]:
    out = {
        "inputTokens": reply.input_tokens,
        "outputTokens": reply.output_tokens,
        "totalTokens": reply.input_tokens
        + reply.cached_tokens
        + reply.cache_write_tokens
        + reply.output_tokens,
    }
    if reply.cached_tokens or reply.cache_write_tokens:
        out["cacheReadInputTokens"] = reply.cached_tokens
        out["cacheWriteInputTokens"] = reply.cache_write_tokens
    return out


def stop_reason(reply: Reply) -> str:
    return reply.stop or ("tool_use" if reply.tool_calls else "end_turn")


_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def event(kind: str, payload: dict[str, Any]) -> bytes:
    padded = {**payload, "p": _PAD[: 7 + len(kind) % 20]}
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, orjson.dumps(padded))


def exception(kind: str, message: str) -> bytes:
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, orjson.dumps({"message": message}))


def _content_block(
    index: int, deltas: list[dict[str, Any]], start: dict[str, Any] | None = None
) -> list[bytes]:
    """A content block's events: its start (tool use only), one delta each, its stop."""
    events = []
    if start is not None:
        events.append(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
    for delta in deltas:
        events.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
    events.append(event("contentBlockStop", {"contentBlockIndex": index}))
    return events


def stream_events(reply: Reply) -> list[bytes]:
    blocks: list[tuple[list[dict[str, Any]], dict[str, Any] | None]] = []
    if reply.thinking is not None:
        deltas = [
            {"reasoningContent": {"text": piece}}
            for piece in split_text(reply.thinking, reply.pieces)
        ]
        deltas.append({"reasoningContent": {"signature": "sig"}})
        blocks.append((deltas, None))
    if reply.text:
        blocks.append(([{"text": piece} for piece in split_text(reply.text, reply.pieces)], None))
    for n, call in enumerate(reply.tool_calls):
        start = {"toolUse": {"toolUseId": call.id or f"tooluse_mock{n:02d}", "name": call.name}}
        arguments = orjson.dumps(call.arguments).decode()
        deltas = [{"toolUse": {"input": piece}} for piece in split_text(arguments, reply.pieces)]
        blocks.append((deltas, start))
    events = [event("messageStart", {"role": "assistant"})]
    for index, (deltas, block_start) in enumerate(blocks):
        events += _content_block(index, deltas, block_start)
    events.append(event("messageStop", {"stopReason": stop_reason(reply)}))
    events.append(event("metadata", {"usage": usage(reply), "metrics": {"latencyMs": 42}}))
    if reply.stream_error:
        events[2:] = [
            exception("throttlingException", "Too many tokens, please wait before trying again.")
        ]
    return events


class BedrockMock(MockServer):
    """The mock plus which credentials it expects (a session token, when set, is required)."""

    session_token: str | None = None

    def __init__(self) -> None:
        super().__init__(handle)


async def handle(
    server: MockServer, request: web.Request, recorded: RecordedRequest
) -> web.StreamResponse:
    m = _PATH.match(recorded.path)
    if recorded.method != "POST" or m is None:
        return error(
            404, "UnknownOperationException", f"Unknown operation {recorded.method} {recorded.path}"
        )
    refused = verify_signature(recorded, session_token=getattr(server, "session_token", None))
    if refused is not None:
        return refused
    try:
        body = orjson.loads(recorded.body)
    except orjson.JSONDecodeError:
        return error(400, "SerializationException", "Malformed request body")
    if m["action"] == "invoke":
        return await invoke(server, request, body, m["model"])
    problem = validate(body)
    if problem is not None:
        return error(400, "ValidationException", problem)
    reply = server.next_reply()
    faulted = await injected_fault(
        request,
        reply,
        lambda r: error(r.status, r.error_type, r.error_text, r.retry_headers),
    )
    if faulted is not None:
        return faulted
    if m["action"] == "converse":
        answer = {
            "output": {"message": {"role": "assistant", "content": content_blocks(reply)}},
            "stopReason": stop_reason(reply),
            "usage": usage(reply),
            "metrics": {"latencyMs": 42},
        }
        return json_response(200, answer, {"x-amzn-RequestId": "mock-request-id"})
    headers = {
        "content-type": "application/vnd.amazon.eventstream",
        "x-amzn-RequestId": "mock-request-id",
    }
    return await send_stream(request, reply, stream_events(reply), headers)


def vector(text: str, size: int) -> list[float]:
    seed = sum(text.encode()) or 1
    return [((seed * (i + 3)) % 97) / 96.0 for i in range(size)]


async def invoke(
    server: MockServer, request: web.Request, body: Any, model: str
) -> web.StreamResponse:
    """InvokeModel for the embeddings models: Titan Text Embeddings v2 and Cohere Embed."""
    reply = server.next_reply()
    faulted = await injected_fault(
        request, reply, lambda r: error(r.status, r.error_type, r.error_text)
    )
    if faulted is not None:
        return faulted
    if "titan-embed" in model:
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("inputText"), str)
            or set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"}
        ):
            return error(
                400,
                "ValidationException",
                "Malformed input request: #: required key [inputText] not found",
            )
        size = body.get("dimensions") or 8
        return json_response(
            200,
            {
                "embedding": vector(body["inputText"], size),
                "inputTextTokenCount": reply.input_tokens,
            },
        )
    if "cohere.embed" in model:
        texts = body.get("texts") if isinstance(body, dict) else None
        if (
            not isinstance(texts, list)
            or not texts
            or body.get("input_type")
            not in ("search_document", "search_query", "classification", "clustering")
        ):
            return error(
                400,
                "ValidationException",
                "Malformed input request: texts and input_type are required",
            )
        return json_response(
            200,
            {
                "id": "mock",
                "embeddings": [vector(t, 8) for t in texts],
                "texts": texts,
                "response_type": "embeddings_floats",
            },
        )
    return error(400, "ValidationException", f"The provided model identifier is invalid: {model}")


@asynccontextmanager
async def start_bedrock_mock(session_token: str | None = None) -> AsyncIterator[BedrockMock]:
    """A running Bedrock mock; point the provider's `base_url` at `url` (region `REGION`)."""
    server = BedrockMock()
    server.session_token = session_token
    async with running(server):
        yield server
