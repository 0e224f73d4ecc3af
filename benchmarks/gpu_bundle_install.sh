#!/usr/bin/env bash
# On the GPU machine (no network): install the wheels benchmarks/gpu_bundle.sh put in .gpu_bundle/wheels, offline,
# into the machine's Python, and point the suite at the bundled golden set. The project itself is not installed:
# its scripts put the repository root on sys.path.
#
#   bash benchmarks/gpu_bundle_install.sh && python benchmarks/gpu_suite.py --out $OUT/gpu
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu_bundle/wheels
if [[ ! -d $WHEELS ]]; then
    echo "error: $WHEELS not found: run bash benchmarks/gpu_bundle.sh on a machine with the network, and carry .gpu_bundle" >&2
    exit 1
fi
python -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/*.whl
python -c "import omegaconf, taming; print('bundle installed: omegaconf', omegaconf.__version__)"
