#!/usr/bin/env bash
# Sets everything up (venv, Debian's chromium for the browser test) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser test will be skipped" >&2
  else
    echo "warning: chromium is not installed (apt-get install chromium); the browser test will be skipped" >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"
