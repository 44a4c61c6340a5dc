"""A mock of Vertex AI: Google's OAuth token endpoint (verifying the service account's signed JWT
assertion with its public key) and the Gemini / Anthropic publisher routes, which accept only
tokens it issued. Gemini routes behave like `tests.mocks.gemini`; Anthropic routes like
`tests.mocks.anthropic` with Vertex's rules (`anthropic_version` in the body, no `model`)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.mocks import anthropic, gemini
from tests.mocks.base import MockServer, RecordedRequest, json_response, running

PROJECT = "mock-project"
CLIENT_EMAIL = "crossway-test@mock-project.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/(?P<publisher>google|anthropic)"
    r"/models/(?P<model>[^/:]+):(?P<action>generateContent|streamGenerateContent|rawPredict|streamRawPredict)$"
)


class VertexMock(MockServer):
    """The mock plus its service account key and the tokens it issued."""

    def __init__(self, token_lifetime: int = 3599) -> None:
        super().__init__(handle)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.token_lifetime = token_lifetime
        self.tokens: dict[str, float] = {}
        self.token_requests = 0

    def service_account(self) -> dict[str, Any]:
        """A service-account key file's content whose `token_uri` points at this mock."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "mockkeyid0001",
            "private_key": pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "1000000000000",
            "token_uri": f"{self.url}/token",
        }


def google_error(status: int, message: str) -> web.Response:
    return gemini.error(status, message)


async def token(server: VertexMock, recorded: RecordedRequest) -> web.Response:
    server.token_requests += 1
    form = dict(parse_qsl(recorded.body.decode()))
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        return json_response(
            400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
        )
    try:
        claims = jwt.decode(
            form.get("assertion", ""),
            server.key.public_key(),
            algorithms=["RS256"],
            audience=f"{server.url}/token",
            issuer=CLIENT_EMAIL,
        )
    except jwt.PyJWTError as exc:
        return json_response(
            400, {"error": "invalid_grant", "error_description": f"Invalid JWT Signature. ({exc})"}
        )
    if claims.get("scope") != SCOPE or claims["exp"] - claims["iat"] > 3600:
        return json_response(
            400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope or lifetime"}
        )
    access = f"ya29.mock-{server.token_requests}"
    server.tokens[access] = time.monotonic() + server.token_lifetime
    return json_response(
        200, {"access_token": access, "expires_in": server.token_lifetime, "token_type": "Bearer"}
    )


async def handle(
    server: MockServer, request: web.Request, recorded: RecordedRequest
) -> web.StreamResponse:
    assert isinstance(server, VertexMock)
    if recorded.method == "POST" and recorded.path == "/token":
        return await token(server, recorded)
    m = _PATH.match(recorded.path)
    if recorded.method != "POST" or m is None:
        return google_error(404, f"The requested URL {recorded.path} was not found on this server.")
    auth = recorded.headers.get("authorization", "")
    expiry = server.tokens.get(auth.removeprefix("Bearer "))
    if not auth.startswith("Bearer ") or expiry is None or expiry < time.monotonic():
        return google_error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
            "other valid authentication credential.",
        )
    if m["project"] != PROJECT:
        return google_error(403, f"Permission denied on resource project {m['project']}.")
    if m["publisher"] == "google":
        if m["action"] not in ("generateContent", "streamGenerateContent"):
            return google_error(400, "Gemini models are served by generateContent")
        return await gemini.serve_generate(server, request, recorded, m["model"], m["action"])
    if m["action"] not in ("rawPredict", "streamRawPredict"):
        return google_error(400, "Anthropic models are served by rawPredict")
    body = anthropic.checked_body(recorded, vertex=True)
    if isinstance(body, web.Response):
        return body
    if bool(body.get("stream")) != (m["action"] == "streamRawPredict"):
        return anthropic.error(400, "stream must be set exactly for streamRawPredict")
    return await anthropic.answer(request, server.next_reply(), body, m["model"])


@asynccontextmanager
async def start_vertex_mock(token_lifetime: int = 3599) -> AsyncIterator[VertexMock]:
    """A running Vertex mock; point the provider's `base_url` at `url`."""
    async with running(VertexMock(token_lifetime)) as server:
        yield server
