"""The container's health check: exit 0 when Crossway's admin plane answers `GET /healthz` with
200, else print why and exit 1. Standard library only (the slim image has no curl); the port
is `CROSSWAY_ADMIN_PORT` (default 15000), the path an optional first argument (`/readyz`)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_ADMIN_PORT = "15000"
TIMEOUT_SECONDS = 3.0


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    port = os.environ.get("CROSSWAY_ADMIN_PORT") or DEFAULT_ADMIN_PORT
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
