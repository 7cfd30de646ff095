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
exec .venv/bin/python -m pytest "$@"
