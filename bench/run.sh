#!/usr/bin/env bash
# `make bench`: direct vs the reference proxies (granian + aiohttp, granian + pyreqwest) vs Crossway vs
# LiteLLM (and the translation paths), in one run.
# Installs what it needs (nginx and wrk from Debian, LiteLLM into bench/.peers/litellm, py-spy when
# profiling), then runs bench/harness.py, which writes bench/results/YYYY-MM-DD-HHMM.{md,json}.
#
#   bash bench/run.sh [--quick] [--only crossway reference ...] [--seconds 10]
#   BENCH_PROFILE=1 bash bench/run.sh    # also profile the Python proxies with py-spy
#   BENCH_NICE=-10 bash bench/run.sh     # run at a higher priority than other work (root)
set -euo pipefail
cd "$(dirname "$0")/.."

LITELLM_VERSION="${LITELLM_VERSION:-1.106.2}"
PY_SPY_VERSION="${PY_SPY_VERSION:-0.4.3}"
RUN_TIMEOUT_S="${BENCH_TIMEOUT_S:-1200}"
PEERS=bench/.peers

say() { echo "[bench] $*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- system tools: nginx (upstream), wrk (load), taskset (pinning) ---------------------------
missing=()
command -v wrk >/dev/null || missing+=(wrk)
{ command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } || missing+=(nginx)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Crossway's own environment ---------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv (make install)"
  make install
fi

# --- LiteLLM proxy, in its own virtual environment ---------------------------------------------
mkdir -p "$PEERS"
if [ ! -x "$PEERS/litellm/bin/litellm" ]; then
  say "installing litellm[proxy]==$LITELLM_VERSION into $PEERS/litellm"
  rm -f "$PEERS/litellm.unavailable"
  if python3 -m venv "$PEERS/litellm" \
    && "$PEERS/litellm/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" "a2a-sdk==1.3.0" >"$PEERS/litellm-install.log" 2>&1; then
    say "LiteLLM installed"
  else
    reason="pip install 'litellm[proxy]==$LITELLM_VERSION' failed: $(tail -n 1 "$PEERS/litellm-install.log" 2>/dev/null || true)"
    echo "$reason" >"$PEERS/litellm.unavailable"
    rm -rf "$PEERS/litellm"
    say "LiteLLM not available: $reason"
  fi
fi

# --- py-spy, only when profiling ----------------------------------------------------------------
args=("$@")
if [ "${BENCH_PROFILE:-0}" = "1" ]; then
  if [ ! -x "$PEERS/tools/bin/py-spy" ]; then
    say "installing py-spy==$PY_SPY_VERSION into $PEERS/tools"
    python3 -m venv "$PEERS/tools" && "$PEERS/tools/bin/pip" install -q "py-spy==$PY_SPY_VERSION" \
      || say "py-spy could not be installed; profiles will be missing"
  fi
  args+=(--profile)
fi

# One benchmark at a time on this machine: any bench script that takes this lock (bench/mcp/run.sh
# can: `flock bench/.work/bench.lock ...`) waits for the others instead of skewing their figures.
mkdir -p bench/.work
exec 9>bench/.work/bench.lock
if ! flock -n 9; then
  say "another benchmark holds bench/.work/bench.lock; waiting for it"
  flock 9
fi
say "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
# BENCH_NICE=-10 (as root) gives the benchmark's processes priority over other work on a shared
# machine; everything the harness starts inherits it. Off by default.
exec nice -n "${BENCH_NICE:-0}" timeout "$RUN_TIMEOUT_S" .venv/bin/python -m bench.harness "${args[@]}"
