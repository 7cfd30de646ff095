#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian/Ubuntu machine.
#   scripts/setup.sh demo   -> Python env with edge+server (the demo falls back to an embedded broker)
#   scripts/setup.sh test   -> also Mosquitto, ffmpeg (RTSP tests), Chromium (browser tests), PostgreSQL,
#                              poppler-utils and Pango (report PDF tests)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-demo}"

apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "setup: installing Debian packages: $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ "$mode" = test ]; then
  need=()
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v nft >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 || need+=(iproute2 nftables)   # link-cut tests
  command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
  command -v rtsp-server-perl >/dev/null 2>&1 || need+=(rtsp-server-perl)   # RTSP camera for stream-drop tests
  [ -x /usr/bin/chromium ] || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v pdftoppm >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1 || need+=(poppler-utils)   # report PDF tests
  ls /usr/lib/*/libpangoft2-1.0.so.0 >/dev/null 2>&1 || need+=(libpango-1.0-0 libpangoft2-1.0-0)   # WeasyPrint (report PDF)
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)   # the report's font
  if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.turnout-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  extras="edge,server"
  if [ "$mode" = test ]; then extras="edge,server,dev,openvino,quantize"; fi  # tests: OpenVINO vs onnxruntime, int8
  .venv/bin/python -m pip install -q -e ".[${extras}]"
  touch "$stamp"
fi

# Dashboard libraries come from the npm registry and are served by the server itself (no CDN).
if [ -f server/dashboard/package.json ] && [ ! -d server/dashboard/static/vendor ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  (cd server/dashboard && npm ci --silent --no-audit --no-fund && npm run --silent vendor)
fi
# Swagger UI and ReDoc for /docs and /redoc, the same way.
if [ -f server/apidocs/package.json ] && [ ! -d server/apidocs/static/vendor ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  (cd server/apidocs && npm ci --silent --no-audit --no-fund && npm run --silent vendor)
fi
