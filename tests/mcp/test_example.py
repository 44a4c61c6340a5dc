"""examples/mcp.yaml runs: server-everything and the sample server federated behind /mcp."""

from __future__ import annotations

import shutil
import sys

from mcp import Client
from tests.helpers import ROOT, free_port, start_gateway
from tests.mcp.conftest import EVERYTHING_BIN


async def test_example_config_federates_everything_and_the_sample() -> None:
    text = (ROOT / "examples" / "mcp.yaml").read_text()
    # Run the locally installed server-everything instead of fetching it with npx.
    text = text.replace(
        'command: npx\n        args: ["-y", "@modelcontextprotocol/server-everything"]',
        f'command: {shutil.which("node")}\n        args: ["{EVERYTHING_BIN.resolve()}"]',
    )
    assert str(EVERYTHING_BIN.resolve()) in text
    port = free_port()
    env = {
        "CROSSWAY_PORT": str(port),
        "PYTHON": sys.executable,
        "REMOTE_MCP_URL": f"http://127.0.0.1:{free_port()}/mcp",
    }
    admin = free_port()
    text = text.replace("listen:\n", f"admin:\n  port: {admin}\nlisten:\n", 1)
    with start_gateway(text, env=env, port=port, admin_port=admin) as gw:
        async with Client(gw.url + "/mcp", mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"everything_echo", "sample_add"} <= names
            echoed = await client.call_tool("everything_echo", {"message": "hi"})
            assert "hi" in echoed.content[0].text  # type: ignore[union-attr]
            added = await client.call_tool("sample_add", {"a": 1, "b": 2})
            assert added.content[0].text in ("3", "3.0")  # type: ignore[union-attr]
