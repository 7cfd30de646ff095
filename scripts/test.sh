#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. Real data comes from ../shared
# (override with TURNOUT_SHARED=/path/to/shared).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
if [ -z "${TURNOUT_SHARED:-}" ] && [ -d ../shared ]; then
  TURNOUT_SHARED="$(cd ../shared && pwd)"
fi
export TURNOUT_SHARED
export TURNOUT_MODEL_DIR="${TURNOUT_MODEL_DIR:-${TURNOUT_SHARED:+$TURNOUT_SHARED/models}}"
.venv/bin/ruff check .
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# The whole suite: tests marked `isolated` (each owns its brokers, namespaces and schema, and mostly waits:
# link cuts, broker outages, failovers) run in a second pytest beside the rest, which runs in order.
log="$(mktemp -t turnout-isolated.XXXXXX.log)"
.venv/bin/python -m pytest -m isolated -p no:cacheprovider >"$log" 2>&1 &
isolated=$!
rc=0
.venv/bin/python -m pytest -m "not isolated" || rc=$?
rc_isolated=0
wait "$isolated" || rc_isolated=$?
echo "================ tests marked isolated (run beside the rest) ================"
cat "$log"
rm -f "$log"
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
exit "$rc_isolated"
