"""An MCP server (mcp SDK) that is an OAuth resource server: it accepts only `cc-N` tokens,
the ones the test's client-credentials token endpoint issues to Crossway.

Run: python -m tests.mcp.protected_server PORT
"""

from __future__ import annotations

import re
import sys

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

ACCEPTED = re.compile(r"^cc-\d+$")


class CrosswayTokens:
    async def verify_token(self, token: str) -> AccessToken | None:
        if not ACCEPTED.match(token):
            return None
        return AccessToken(token=token, client_id="crossway", scopes=[])


def main() -> None:
    port = int(sys.argv[1])
    server = MCPServer(
        "protected",
        token_verifier=CrosswayTokens(),
        auth=AuthSettings(
            issuer_url="http://127.0.0.1:9/",  # never contacted: the verifier is local
            resource_server_url=f"http://127.0.0.1:{port}/mcp",
        ),
    )

    @server.tool()
    def seen_token() -> str:
        """The bearer token this server received."""
        token = get_access_token()
        return token.token if token else "none"

    server.run("streamable-http", port=port, host="127.0.0.1")


if __name__ == "__main__":
    main()
