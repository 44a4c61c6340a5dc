"""The console reads and changes everything through the admin API, in process.

A page never reaches a store itself: it calls the admin API's own routes (over an in-process
ASGI transport, authenticated by a secret that never leaves the process), so the console can do nothing the API
cannot, and every check and error of the API applies to it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import httpx
import orjson
from starlette.types import ASGIApp

from crossway.config import Config

INTERNAL_HOST: Final = "127.0.0.1"
"""The Host of the console's in-process API calls (a loopback name, as the API expects)."""


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """One admin API answer: its status and decoded JSON body (None when not JSON)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        """The API's error message, for showing on the page."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("message", "error"))
        return f"the admin API answered {self.status}"


class AdminApi:
    """Calls the admin app (set with `bind` once it exists)."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None
        self._client: httpx.AsyncClient | None = None
        self._credentials: dict[str, str] = {}

    def bind(self, app: ASGIApp, credentials: dict[str, str]) -> None:
        """Call `app` (the admin plane) with `credentials` (headers that authenticate the
        console's in-process calls: `AdminAuth.console_headers()`)."""
        self._app = app
        self._credentials = dict(credentials)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            assert self._app is not None, "AdminApi.bind() was not called"
            self._client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self._app),
                base_url=f"http://{INTERNAL_HOST}",
                timeout=30.0,
            )
        return self._client

    async def call(
        self,
        cfg: Config,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
    ) -> ApiAnswer:
        headers = {"accept": "application/json", **self._credentials}
        if json is not None:
            content = orjson.dumps(json)
            headers["content-type"] = "application/json"
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        response = await self._http().request(
            method, path, params=clean, content=content, headers=headers
        )
        try:
            body = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            body = None
        return ApiAnswer(response.status_code, body)

    async def get(self, cfg: Config, path: str, **params: Any) -> ApiAnswer:
        return await self.call(cfg, "GET", path, params=params)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
