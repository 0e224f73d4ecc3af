#!/usr/bin/env bash
# The GPU suite's bundle, made on the CPU machine (it has the network; the GPU machine has none): the wheels the GPU
# machine lacks, for Python 3.12 manylinux x86_64, into .gpu_bundle/wheels, and the golden set the suite replays
# (tiny_ldm) into .gpu_bundle/golden. The device call carries .gpu_bundle (README, "Benchmarks"); the GPU machine
# installs it with benchmarks/gpu_bundle_install.sh.
#
#   bash benchmarks/gpu_bundle.sh [--with-av]
#
# Wheels: omegaconf and antlr4-python3-runtime 4.9 (lutils/configuration.py; antlr 4.9 ships only a source archive,
# so its pure-Python wheel is built here), taming-transformers-rom1504 (the ldm-vq autoencoder of bair). wandb is
# not bundled: it is imported only when a run logs to it. PyAV (~40 MB) is left out unless --with-av: only the toy
# pipeline's mp4 files need it, and it skips them (gif and png still written) without it. Golden data: $CAGE_GOLDEN_DIR, else ../shared/golden.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
BUNDLE=.gpu_bundle
WHEELS=$BUNDLE/wheels
GOLDEN=${CAGE_GOLDEN_DIR:-../shared/golden}
WITH_AV=0
[[ "${1:-}" == "--with-av" ]] && WITH_AV=1

rm -rf "$BUNDLE"
mkdir -p "$WHEELS" "$BUNDLE/golden"
download() {  # platform, packages...
    local platform=$1; shift
    "$PYTHON" -m pip download --quiet --only-binary=:all: --python-version 3.12 --platform "$platform" --no-deps \
        -d "$WHEELS" "$@"
}
download any "omegaconf==2.3.*" taming-transformers-rom1504
"$PYTHON" -m pip wheel --quiet --no-deps "antlr4-python3-runtime==4.9.*" -w "$WHEELS"
if [[ $WITH_AV == 1 ]]; then
    download manylinux2014_x86_64 av
else
    echo "PyAV left out (about 40 MB; only the toy pipeline's mp4 files need it): rerun with --with-av to bundle it"
fi
if [[ ! -d "$GOLDEN/tiny_ldm" ]]; then
    echo "error: golden set $GOLDEN/tiny_ldm not found (set CAGE_GOLDEN_DIR)" >&2
    exit 1
fi
cp -r "$GOLDEN/tiny_ldm" "$BUNDLE/golden/"
ls -l "$WHEELS"
echo "bundle: $(du -sh "$BUNDLE" | cut -f1) in $BUNDLE (the device call's carry limit is 64 MiB)"
