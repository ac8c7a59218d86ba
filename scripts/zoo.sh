#!/usr/bin/env bash
# Builds the ONNX model zoo that runner/tests/zoo.rs and runner/examples/onnx_bench.rs use:
# scikit-learn models exported with skl2onnx, small PyTorch-style networks, and onnxruntime's
# reference outputs (scripts/make_zoo.py). Idempotent: creates the Python environment when
# missing, installs the pinned packages when they differ, and rebuilds the zoo only when the
# script or the package versions changed (a second run takes about a second).
#
#   scripts/zoo.sh                 # zoo in $AIEDGE_ZOO, default /var/tmp/aiedge-zoo
#
# Environment: AIEDGE_ZOO (where the zoo goes), AIEDGE_PY (the venv, default /var/tmp/aiedge-py).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${AIEDGE_PY:-/var/tmp/aiedge-py}"
export AIEDGE_ZOO="${AIEDGE_ZOO:-/var/tmp/aiedge-zoo}"

# The versions the zoo's expected outputs were checked with; bump them together.
packages=(
  numpy==2.4.6
  scikit-learn==1.9.1
  skl2onnx==1.20.0
  onnx==1.23.2
  onnxruntime==1.32.0
)

if [[ ! -x "$venv/bin/python" ]]; then
  echo "zoo: creating the Python environment in $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.aiedge-zoo-packages"
if [[ "$(cat "$stamp" 2>/dev/null)" != "${packages[*]}" ]]; then
  echo "zoo: installing ${packages[*]}"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
  echo "${packages[*]}" > "$stamp"
fi
"$venv/bin/python" "$here/make_zoo.py"
