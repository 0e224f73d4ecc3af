#!/usr/bin/env bash
# The main command: sets up .venv if needed, then runs the embedded default end to end on the CPU
# (synthetic world -> our VQVAE -> CAGE -> controlled animation, composition and control accuracy).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "$root/.venv/bin/python" scripts/toy_pipeline.py "$@"
