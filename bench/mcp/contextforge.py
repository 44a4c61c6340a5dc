"""IBM ContextForge (`mcp-contextforge-gateway`) as a bench peer: SQLite, in-memory cache, its
rate limiting off, one worker, the upstream registered as a gateway and exposed through a virtual
server at `/servers/<id>/mcp` (the documented way MCP clients reach it), with a JWT for the
platform admin as the client's token.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

SECRET = "crossway-bench-secret-key-0123456789abcdef"
PASSWORD = "Bench-Passw0rd-123!"


def _api(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())


def start(
    root: Path, upstream: str, start_fn: Any, ready_fn: Any, port: int
) -> tuple[Any, str, dict[str, str], dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-contextforge-"))
    env = {
        "DATABASE_URL": f"sqlite:///{workdir}/contextforge.db",
        "CACHE_TYPE": "memory",
        "RATE_LIMITING_ENABLED": "false",
        "TOOL_RATE_LIMIT": "1000",
        "SSRF_ALLOW_LOCALHOST": "true",
        "SSRF_ALLOW_PRIVATE_NETWORKS": "true",
        "MCPGATEWAY_UI_ENABLED": "false",
        "MCPGATEWAY_ADMIN_API_ENABLED": "true",
        "JWT_SECRET_KEY": SECRET,
        "AUTH_ENCRYPTION_SECRET": SECRET + "-enc",
        "PLATFORM_ADMIN_PASSWORD": PASSWORD,
        "BASIC_AUTH_PASSWORD": PASSWORD,
        "LOG_LEVEL": "ERROR",
    }
    proc = start_fn(
        "contextforge",
        [str(root / "bin" / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)],
        "0",
        env=env,
        cwd=workdir,
    )
    ready_fn(proc, port)
    token = (
        subprocess.run(
            [
                str(root / "bin" / "python"),
                "-m",
                "mcpgateway.utils.create_jwt_token",
                "--username",
                "admin@example.com",
                "--exp",
                "600",
                "--secret",
                SECRET,
            ],
            capture_output=True,
            text=True,
            check=True,
            env={"JWT_SECRET_KEY": SECRET, "PATH": "/usr/bin:/bin"},
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if _api(base, token, "GET", "/health").get("status") == "healthy":
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("ContextForge did not become healthy")
        time.sleep(0.5)
    _api(
        base,
        token,
        "POST",
        "/gateways",
        {"name": "up", "url": upstream, "transport": "STREAMABLEHTTP"},
    )
    tools = _api(base, token, "GET", "/tools")
    tool = next(t for t in tools if t.get("originalName") == "echo")
    server = _api(
        base,
        token,
        "POST",
        "/servers",
        {"server": {"name": "bench", "associated_tools": [tool["id"]]}},
    )
    url = f"{base}/servers/{server['id']}/mcp"
    return (
        proc,
        url,
        {"authorization": f"Bearer {token}"},
        {"name": tool["name"], "arguments": {"text": "hello"}},
    )
