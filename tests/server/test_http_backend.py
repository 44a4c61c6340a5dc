"""The plain HTTP backend: paths, queries, headers and bodies forwarded; cookies never shared."""

from __future__ import annotations

import urllib.error
import urllib.request

from aiohttp import web

from tests.helpers import start_gateway

CONFIG = """
routes:
  - name: api
    match:
      path:
        prefix: /api
    strip_prefix: true
    backend: web
  - name: web
    backend: web
    policies:
      - type: api_key
        keys:
          team: team-key-0123456789abcdef
backends:
  web:
    type: http
    url: {upstream}
    headers:
      x-added: by-crossway
"""


async def test_forwarding_and_no_shared_cookies() -> None:
    seen: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(
            {
                "path": request.raw_path,
                "added": request.headers.get("x-added", ""),
                "cookie": request.headers.get("cookie", ""),
                "authorization": request.headers.get("authorization", ""),
                "body": (await request.read()).decode(),
            }
        )
        resp = web.Response(text="ok", headers={"x-upstream": "1"})
        resp.set_cookie("session", "secret-of-first-client")
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        with start_gateway(CONFIG.format(upstream=f"http://localhost:{port}")) as gw:

            def fetch(path: str, body: bytes | None = None) -> tuple[int, str, str]:
                req = urllib.request.Request(
                    gw.url + path,
                    data=body,
                    method="POST" if body else "GET",
                    headers={"authorization": "Bearer team-key-0123456789abcdef"},
                )
                try:
                    resp = urllib.request.urlopen(req)
                except urllib.error.HTTPError as exc:
                    raise AssertionError((path, exc.read())) from None
                with resp:
                    return resp.status, resp.headers.get("x-upstream", ""), resp.read().decode()

            import asyncio

            assert await asyncio.to_thread(fetch, "/a%40b/c?x=1&y=%20") == (200, "1", "ok")
            assert await asyncio.to_thread(fetch, "/api/items?q=2", b"payload") == (200, "1", "ok")
            assert await asyncio.to_thread(fetch, "/again") == (200, "1", "ok")
    finally:
        await runner.cleanup()
    assert seen[0]["path"] == "/a%40b/c?x=1&y=%20"
    assert seen[1]["path"] == "/items?q=2" and seen[1]["body"] == "payload"
    assert all(s["added"] == "by-crossway" for s in seen)
    # The upstream set a cookie for the first client; no later request may carry it.
    assert all(s["cookie"] == "" for s in seen)
    # The caller's key was checked by Crossway on the guarded route and not passed on; the
    # unguarded /api route forwards the client's headers as they are.
    assert seen[0]["authorization"] == "" and seen[2]["authorization"] == ""
    assert seen[1]["authorization"] == "Bearer team-key-0123456789abcdef"
