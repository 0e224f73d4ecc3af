#!/usr/bin/env bash
# The main command: sets up .venv if needed, then runs the data pipeline demo on a generated sample.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "$root/.venv/bin/python" scripts/data_pipeline_demo.py "$@"
