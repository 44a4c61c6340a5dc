#!/usr/bin/env bash
# MCP bench: tools/call through Crossway vs direct vs FastMCP's proxy vs ContextForge, tools/list
# over 20 upstreams x 50 tools, memory per held-open session. Installs each peer into its own
# virtual environment under bench/.peers/ (gitignored), then runs bench/mcp/bench.py, which writes
# bench/results/mcp-YYYY-MM-DD-HHMM.{md,json}.
#
#   bash bench/mcp/run.sh [--seconds 10] [--only direct crossway fastmcp contextforge]
set -euo pipefail
cd "$(dirname "$0")/../.."

# fastmcp 4.x needs a certifi newer than the registry offers here; 3.4.10 has the same create_proxy.
FASTMCP_VERSION="${FASTMCP_VERSION:-3.4.10}"
CONTEXTFORGE_VERSION="${CONTEXTFORGE_VERSION:-1.0.7.post20260921}"
PEERS=bench/.peers

say() { echo "[mcp-bench] $*"; }

command -v taskset >/dev/null || { say "taskset missing: apt-get install util-linux"; exit 1; }
[ -x .venv/bin/python ] || make install

install_peer() {  # name, pip requirement, file that proves it is installed
  local name=$1 req=$2 marker=$3
  if [ ! -x "$PEERS/$name/bin/$marker" ]; then
    say "installing $req into $PEERS/$name"
    python3 -m venv "$PEERS/$name"
    if ! "$PEERS/$name/bin/pip" install -q "$req" >"$PEERS/$name.install.log" 2>&1; then
      say "could not install $req (see $PEERS/$name.install.log); the bench reports it as failed"
    fi
  fi
}
mkdir -p "$PEERS"
install_peer fastmcp "fastmcp==$FASTMCP_VERSION" fastmcp
install_peer contextforge "mcp-contextforge-gateway==$CONTEXTFORGE_VERSION" mcpgateway

exec .venv/bin/python -m bench.mcp.bench "$@"
