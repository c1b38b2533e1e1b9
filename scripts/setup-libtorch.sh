#!/usr/bin/env bash
# Installs the libtorch that Proxima links (torch==2.11.0 from PyPI, the same build the GPU machines run)
# into the project-local folder .libtorch/, idempotently. Only the C++ parts are kept: torch/lib,
# torch/include, torch/share, plus the two small CUDA runtime wheels that libtorch_cpu.so needs to load
# (cudart, cupti). .cargo/config.toml points LIBTORCH and the binaries' rpath at this folder, so nobody
# sets environment variables by hand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.libtorch"
TORCH_VERSION=2.11.0
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85
stamp="$dest/.installed-torch-$TORCH_VERSION-cudart-$CUDART_VERSION-cupti-$CUPTI_VERSION"
if [[ -f "$stamp" && -f "$dest/torch/lib/libtorch_cpu.so" ]]; then
  exit 0
fi
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "setup-libtorch: python3 with pip is needed to fetch libtorch" >&2; exit 1; }
echo "setup-libtorch: installing libtorch $TORCH_VERSION into $dest (one time, ~1.3 GB)" >&2
wheels="$dest/.wheels"
rm -rf "$dest.tmp"
mkdir -p "$wheels" "$dest.tmp"
# The wheel tag must match a CPython that pip can name; the C++ libraries inside are the same for all.
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --platform manylinux_2_28_x86_64 \
  -d "$wheels" "torch==$TORCH_VERSION"
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$wheels" "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION"
"$python" - "$dest.tmp" "$wheels" <<'PY'
import glob, sys, zipfile
out, wheels = sys.argv[1], sys.argv[2]
keep = {"torch": ("torch/lib/", "torch/include/", "torch/share/"), "nvidia": ("nvidia/cu13/lib/",)}
for whl in glob.glob(wheels + "/*.whl"):
    prefixes = keep["torch"] if "/torch-" in whl else keep["nvidia"]
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            if info.filename.startswith(prefixes):
                z.extract(info, out)
PY
# libtorch_cpu.so finds cudart/cupti through its rpath $ORIGIN/../../nvidia/cu13/lib.
rm -rf "$dest/torch" "$dest/nvidia"
mv "$dest.tmp/torch" "$dest.tmp/nvidia" "$dest/"
rm -rf "$dest.tmp" "$wheels"
touch "$stamp"
echo "setup-libtorch: done" >&2
