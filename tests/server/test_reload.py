"""Config reload: swapped atomically under load with zero failed requests; invalid configs are
rejected while the old one keeps serving; SIGHUP reloads; requests in flight finish."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import aiohttp

from tests.helpers import Gateway, start_gateway, wait_for

CONFIG = """
routes:
  - name: llm
    match:
      path:
        prefix: /v1
    backend: llm
backends:
  llm:
    type: llm
    providers:
      sample:
        type: openai_compatible
        base_url: {upstream}
    models:
      - name: {alias}
        targets:
          - provider: sample
            model: sample-model
"""


def config(upstream: str, alias: str) -> str:
    return CONFIG.format(upstream=upstream, alias=alias)


def model_ids(gw: Gateway) -> set[str]:
    with urllib.request.urlopen(gw.url + "/v1/models") as resp:
        return {m["id"] for m in json.loads(resp.read())["data"]}


def reload_count(gw: Gateway, result: str) -> float:
    with urllib.request.urlopen(gw.admin_url + "/metrics") as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f'crossway_config_reloads_total{{result="{result}"}}'):
                return float(line.split()[-1])
    return 0.0


async def test_reload_under_load_has_zero_failures(sample_openai_process: str) -> None:
    with start_gateway(config(sample_openai_process, "alias-0")) as gw:
        statuses: list[int] = []
        stop = asyncio.Event()

        async def client(session: aiohttp.ClientSession) -> None:
            body = {"model": "sample-model", "messages": [{"role": "user", "content": "hi"}]}
            while not stop.is_set():
                # Ask for whichever alias is current; both resolve to the same upstream model.
                async with session.post(
                    gw.url + "/v1/chat/completions", json={**body, "model": current[0]}
                ) as resp:
                    await resp.read()
                    statuses.append(resp.status)

        current = ["alias-0"]
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(client(session)) for _ in range(16)]
            for i in range(1, 6):
                # Keep the previous alias valid in the new config, so requests racing the swap
                # are legitimately servable by either config.
                gw.write_config(
                    config(sample_openai_process, f"alias-{i}").replace(
                        "    models:\n",
                        f"    models:\n      - name: alias-{i - 1}\n        targets:\n          - provider: sample\n            model: sample-model\n",
                    )
                )
                await asyncio.to_thread(
                    wait_for, lambda i=i: f"alias-{i}" in model_ids(gw), 10, f"alias-{i}"
                )
                current[0] = f"alias-{i}"
            stop.set()
            await asyncio.gather(*tasks)
        assert len(statuses) > 100
        assert set(statuses) == {200}, (
            f"failed requests during reload: {[s for s in statuses if s != 200][:5]}"
        )
        assert reload_count(gw, "applied") >= 5


def test_invalid_config_is_rejected_and_old_keeps_serving(sample_openai_process: str) -> None:
    with start_gateway(config(sample_openai_process, "good")) as gw:
        gw.write_config(config(sample_openai_process, "good") + "\nbogus_key: 1\n")
        wait_for(lambda: reload_count(gw, "rejected") >= 1, 10, "rejected reload")
        assert "good" in model_ids(gw)
        assert "config reload rejected" in gw.log() and "bogus_key (line" in gw.log()
        with urllib.request.urlopen(gw.admin_url + "/config") as resp:
            shown = json.loads(resp.read())
        assert "bogus_key" in shown["rejected_reload"]


def test_sighup_reloads(sample_openai_process: str) -> None:
    with start_gateway(config(sample_openai_process, "before")) as gw:
        # Write without changing the mtime watcher's view long enough to matter: SIGHUP right away.
        gw.write_config(config(sample_openai_process, "after"))
        gw.sighup()
        wait_for(lambda: "after" in model_ids(gw), 10, "reload on SIGHUP")
        assert "before" not in model_ids(gw)


async def test_in_flight_stream_finishes_on_its_config() -> None:
    """A slow stream that started before a reload completes, although the reload removed its route."""
    from aiohttp import web

    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"n": 1}\n\n')
        await release.wait()
        await resp.write(b'data: {"n": 2}\n\ndata: [DONE]\n\n')
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow)
    app.router.add_get("/v1/models", lambda r: web.json_response({"object": "list", "data": []}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    upstream = f"http://127.0.0.1:{port}/v1"
    try:
        with start_gateway(config(upstream, "m")) as gw:
            async with aiohttp.ClientSession() as session:
                resp = await session.post(
                    gw.url + "/v1/chat/completions", json={"model": "m", "stream": True}
                )
                assert (await resp.content.readline()).startswith(b"data: ")
                gw.write_config(config(upstream, "other"))
                await asyncio.to_thread(wait_for, lambda: "other" in model_ids(gw), 10, "reload")
                release.set()
                rest = await resp.read()
                assert b'"n": 2' in rest and rest.endswith(b"data: [DONE]\n\n")
    finally:
        await runner.cleanup()
