#!/usr/bin/env bash
# Runs the cross-built agents (scripts/build-agents.sh) under qemu-user, as on the ARM boards:
#
# - `probe` on each target: the agent measures the machine it believes it is on;
# - `predict` over the whole ONNX model zoo (scripts/zoo.sh) with the aarch64 agent, and over a
#   handful of models with the armv7 one, each compared cell by cell with the x86-64 agent's
#   output for the same model and rows (labels equal, numbers within 1e-5 + 1e-4 relative:
#   NEON and AVX kernels round differently).
#
#   scripts/agents_qemu_test.sh          # agents in dist/agents (or $AIEDGE_AGENTS_OUT)
#
# armv7 runs with -cpu cortex-a15 (NEON and VFPv4, like a Raspberry Pi 2/3 in 32-bit mode), as
# tract's own CI does. The armv7 agent links glibc: qemu finds its loader in the sysroot of
# Debian's gcc-arm-linux-gnueabihf (libc6-armhf-cross).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_cross_tools
ensure_python3
apt_install libc6-armhf-cross

agents="${AIEDGE_AGENTS_OUT:-$ROOT/dist/agents}"
zoo="${AIEDGE_ZOO:-/var/tmp/aiedge-zoo}"
x86="$agents/node-agent-x86_64-unknown-linux-musl"
arm64="$agents/node-agent-aarch64-unknown-linux-musl"
armv7="$agents/node-agent-armv7-unknown-linux-gnueabihf"
for f in "$x86" "$arm64" "$armv7"; do [ -x "$f" ] || die "missing $f: run scripts/build-agents.sh first"; done
[ -f "$zoo/manifest.tsv" ] || die "no model zoo in $zoo: run scripts/zoo.sh first"

run_arm64() { qemu-aarch64 "$arm64" "$@"; }
run_armv7() { qemu-arm -cpu cortex-a15 -L /usr/arm-linux-gnueabihf "$armv7" "$@"; }

work="$(mktemp -d "${TMPDIR:-/tmp}/aiedge-qemu-XXXXXX")"
trap 'rm -rf "$work"' EXIT

say "probe under qemu (the agent's facts as an ARM board would report them)"
for t in arm64 armv7; do
  "run_$t" probe >"$work/probe-$t.json"
  python3 - "$work/probe-$t.json" "$t" <<'PY'
import json, sys
facts = json.load(open(sys.argv[1]))["facts"]
want = {"arm64": "aarch64", "armv7": "arm"}[sys.argv[2]]
assert facts["arch"] == want, f"arch {facts['arch']!r}, expected {want!r}"
assert facts["cpu_cores"] >= 1 and facts["total_memory_bytes"] > 0, facts
print(f"  {sys.argv[2]}: arch {facts['arch']}, {facts['cpu_cores']} cores, agent {facts['agent_version']}")
PY
done

# Compares two predictions CSVs cell by cell.
compare() {
  python3 - "$1" "$2" "$3" <<'PY'
import csv, math, sys
a, b, name = sys.argv[1], sys.argv[2], sys.argv[3]
ra, rb = list(csv.reader(open(a))), list(csv.reader(open(b)))
if len(ra) != len(rb):
    sys.exit(f"{name}: {len(ra)} rows on x86-64, {len(rb)} on ARM")
for i, (x, y) in enumerate(zip(ra, rb)):
    if len(x) != len(y):
        sys.exit(f"{name}: row {i} has {len(x)} cells on x86-64, {len(y)} on ARM")
    for j, (u, v) in enumerate(zip(x, y)):
        if u == v:
            continue
        try:
            fu, fv = float(u), float(v)
        except ValueError:
            sys.exit(f"{name}: row {i} column {j}: {u!r} on x86-64, {v!r} on ARM")
        if not math.isclose(fu, fv, rel_tol=1e-4, abs_tol=1e-5):
            sys.exit(f"{name}: row {i} column {j}: {u} on x86-64, {v} on ARM")
PY
}

predict_all() {
  local t=$1; shift
  local n=0
  for name in "$@"; do
    local input
    input=$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' "$zoo/manifest.tsv")
    "$x86" predict --model "$zoo/$name.onnx" --input "$zoo/$input" --output "$work/$name.x86.csv" 2>/dev/null
    "run_$t" predict --model "$zoo/$name.onnx" --input "$zoo/$input" --output "$work/$name.$t.csv" 2>"$work/$name.$t.err" \
      || { cat "$work/$name.$t.err" >&2; die "$name: predict failed on $t"; }
    compare "$work/$name.x86.csv" "$work/$name.$t.csv" "$name ($t)"
    n=$((n + 1))
  done
  say "  $t: $n models, predictions equal to the x86-64 agent's"
}

mapfile -t models < <(tail -n +2 "$zoo/manifest.tsv" | cut -f1)
say "predict under qemu-aarch64: the whole zoo (${#models[@]} models)"
predict_all arm64 "${models[@]}"
# A handful of operator families: linear, SVM, forest, boosting, an MLP, a convolution.
few=(iris_logreg iris_svc bc_rf bc_gb diabetes_std_mlp torch_cnn)
for m in "${few[@]}"; do grep -q "^$m	" "$zoo/manifest.tsv" || die "the zoo has no $m (scripts/make_zoo.py changed?)"; done
say "predict under qemu-arm (cortex-a15): ${few[*]}"
predict_all armv7 "${few[@]}"
say "the ARM agents run and agree with x86-64"
