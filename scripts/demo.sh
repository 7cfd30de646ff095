#!/usr/bin/env bash
# Set up (idempotent) and run the demo: broker, server, a real edge and a simulated arena.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
if [ -z "${TURNOUT_SHARED:-}" ] && [ -d ../shared ]; then
  export TURNOUT_SHARED="$(cd ../shared && pwd)"
  export TURNOUT_MODEL_DIR="${TURNOUT_MODEL_DIR:-$TURNOUT_SHARED/models}"
fi
exec .venv/bin/turnout demo "$@"
