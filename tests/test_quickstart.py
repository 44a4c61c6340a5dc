"""`make run`'s quickstart: the sample upstreams and Crossway answer offline with no keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import openai
import pytest

from mcp import Client
from tests.helpers import ROOT, free_port, http_status, wait_for


@pytest.fixture
def quickstart() -> Iterator[str]:
    port, admin = free_port(), free_port()
    env = {
        **os.environ,
        "CROSSWAY_PORT": str(port),
        "CROSSWAY_ADMIN_PORT": str(admin),
        "SAMPLE_LLM_PORT": str(free_port()),
        "SAMPLE_MCP_PORT": str(free_port()),
        "SAMPLE_POOL_PORTS": f"{free_port()},{free_port()}",
        "SAMPLE_A2A_WRITER_PORT": str(free_port()),
        "SAMPLE_A2A_VISION_PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossway.quickstart"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (
                proc.poll() is not None or http_status(f"http://127.0.0.1:{admin}/readyz") == 200
            ),
            what="quickstart",
        )
        assert proc.poll() is None, "quickstart exited early"
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


async def test_quickstart_answers_llm_and_mcp(quickstart: str) -> None:
    client = openai.AsyncOpenAI(base_url=quickstart + "/v1", api_key="unused")
    resp = await client.chat.completions.create(
        model="sample-model", messages=[{"role": "user", "content": "hello"}]
    )
    assert resp.choices[0].message.content == "You said: hello"
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "You said: stream please"
    # inference routing: sim-model is served by the pool of two simulated model servers
    raw = await client.chat.completions.with_raw_response.create(
        model="sim-model", messages=[{"role": "user", "content": "hello pool"}], max_tokens=4
    )
    assert raw.headers["x-gateway-destination-endpoint"].startswith("127.0.0.1:")
    assert raw.parse().usage.completion_tokens == 4
    await client.close()

    async with Client(quickstart + "/mcp") as mcp:
        tools = await mcp.list_tools()
        names = {t.name for t in tools.tools}
        assert any(n.endswith("echo") for n in names), names
        echo = next(n for n in names if n.endswith("echo"))
        result = await mcp.call_tool(echo, {"text": "through the gateway"})
        assert "through the gateway" in str(result.content[0])

    # A2A: the catalog lists the sample agents, and a message reaches the writer through Crossway.
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(quickstart + "/a2a/agents") as resp:
            assert resp.status == 200
            catalog = await resp.json()
        names = {entry["name"] for entry in catalog.get("agents", catalog)}
        assert {"writer", "vision"} <= names, catalog
        message = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {
                "message": {
                    "messageId": "quickstart-1",
                    "role": "ROLE_USER",
                    "parts": [{"text": "Summarize this. It is long."}],
                }
            },
        }
        async with http.post(
            quickstart + "/a2a/writer/", json=message, headers={"A2A-Version": "1.0"}
        ) as resp:
            assert resp.status == 200
            answer = await resp.json()
        assert "result" in answer, answer
        assert answer["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED", answer
