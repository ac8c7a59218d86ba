#!/usr/bin/env bash
# The ONNX runner against onnxruntime (one thread), in one run: builds the zoo if needed
# (scripts/zoo.sh) and the bench (release), then for each bench model measures onnxruntime
# (scripts/ort_bench.py) and right after it the runner (runner/examples/onnx_bench.rs), so both
# see the same machine load, and prints one markdown table with both and the ratio.
#
#   scripts/onnx_bench.sh            # honours CARGO_TARGET_DIR, AIEDGE_ZOO and AIEDGE_PY
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${AIEDGE_PY:-/var/tmp/aiedge-py}"
export AIEDGE_ZOO="${AIEDGE_ZOO:-/var/tmp/aiedge-zoo}"

"$here/zoo.sh" >&2
cd "$here/.."
cargo build --quiet --release -p runner --example onnx_bench >&2
bench="${CARGO_TARGET_DIR:-target}/release/examples/onnx_bench"

echo "| model | rows | runner rows/s | onnxruntime rows/s | ratio | runner 1-row µs | onnxruntime 1-row µs | csv rows/s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
models=$(awk -F'\t' 'NR > 1 && $4 != "-" { print $1 }' "$AIEDGE_ZOO/manifest.tsv")
rm -f "$AIEDGE_ZOO/bench_ort.tsv"
rows=""
for model in $models; do
  "$venv/bin/python" "$here/ort_bench.py" "$model" 2>/dev/null
  line="$("$bench" --only "$model" "$AIEDGE_ZOO")"
  echo "$line"
  rows+="$line"$'\n'
done
printf '%s' "$rows" | awk -F'|' '
  { r = $6; gsub(/[ x]/, "", r); if (r + 0 > 0) { n++; s += log(r); if (min == "" || r + 0 < min) min = r + 0 } }
  END { if (n) printf "\nrows/s ratio runner/onnxruntime over %d models: min %.2fx, geometric mean %.2fx\n", n, min, exp(s / n) }'
