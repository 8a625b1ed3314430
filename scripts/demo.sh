#!/usr/bin/env bash
# Sets everything up and starts the demo: the Dagster UI on http://127.0.0.1:3000 with sensors
# running on the sample videos (local profile, CPU, no downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cosmos demo "$@"
