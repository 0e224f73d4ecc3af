#!/usr/bin/env bash
# Create .venv at the project root and install the project with its test and web-editor extras; reuse it when it is
# complete.
# Re-installs when pyproject.toml changes. Override the interpreter with PYTHON=/path/to/python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.cage-install-stamp"
python="${PYTHON:-python3}"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$venv/bin/python" -c "import torch, torchvision, timm, taming, h5py, av, omegaconf, einops, torchdiffeq, wandb, pytest, starlette, uvicorn, httpx, playwright, dataset, lutils" 2>/dev/null; then
  echo "[setup] reusing $venv"
  exit 0
fi

if ! command -v "$python" >/dev/null 2>&1; then
  echo "[setup] error: $python not found; install Python >= 3.10 or set PYTHON=/path/to/python3" >&2
  exit 1
fi
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
  echo "[setup] error: Python >= 3.10 needed, $python is $("$python" --version 2>&1)" >&2; exit 1; }

echo "[setup] installing into $venv (first time: PyTorch and friends, a few minutes)"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
log="$venv/install.log"
if ! { "$venv/bin/python" -m pip install --upgrade pip && "$venv/bin/python" -m pip install -e "$root[test,app]"; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "[setup] error: installation failed; full log in $log" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "[setup] done (log: $log)"
