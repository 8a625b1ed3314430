#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
# torch and torchvision as a matching pair first: a lone `torch` requirement may pull a build
# without its torchvision, and Qwen2.5-VL's processors need torchvision.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  .venv/bin/pip install --quiet "torch==2.14.1" "torchvision==0.29.1" \
    || .venv/bin/pip install --quiet "torch" "torchvision"
fi
# Reinstall only when the project's requirements changed since the last setup.
stamp=".venv/.cosmos-installed"
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  .venv/bin/pip install --quiet -e ".[dev]"
  echo "$wanted" > "$stamp"
fi
