"""FastMCP's proxy in front of the bench upstream (run with bench/.peers/fastmcp's Python).

    python bench/mcp/fastmcp_proxy.py UPSTREAM_URL PORT

The documented recipe: `create_proxy(url)` then serve it over Streamable HTTP.
"""

import sys

from fastmcp.server import create_proxy

proxy = create_proxy(sys.argv[1], name="fastmcp-proxy")
proxy.run(transport="http", host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
