#!/usr/bin/env bash
# The test command: sets up .venv if needed, then runs the whole test suite (slow tests included).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k dataset -x`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -ra "$@"
