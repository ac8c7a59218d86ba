#!/usr/bin/env bash
# The agent's footprint: for each cross-built agent its stripped size, and for x86-64 the
# resident memory and CPU of an enrolled, idle agent (heartbeats every 2 s, no jobs) over
# $SECONDS_IDLE seconds (default 60), beside the plain release build (`cargo build --release
# -p node-agent`, glibc) in the same run.
#
#   scripts/agent_footprint.sh [seconds]    # after cargo leptos build --release and build-agents.sh
#
# Resident memory is read from /proc/PID/smaps_rollup at the end (anonymous = heap and stacks;
# file = the binary's pages in use); CPU from /proc/PID/stat (user + system ticks) between the
# end of a 10 s warm-up and the end of the run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_rabbitmq

seconds="${1:-60}"
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
bin="${AIEDGE_SERVER_BIN:-$target_dir/release/server}"
agents="${AIEDGE_AGENTS_OUT:-$ROOT/dist/agents}"
port="${AIEDGE_FOOTPRINT_PORT:-3400}"
[ -x "$bin" ] || die "no server binary at $bin"
port_open 127.0.0.1 "$port" && die "port $port is taken: set AIEDGE_FOOTPRINT_PORT"

data="$(mktemp -d "${TMPDIR:-/tmp}/aiedge-footprint-XXXXXX")"
args=(--bind "127.0.0.1:$port" --data-dir "$data/server" --amqp-namespace aiedge-footprint)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT

echo "stripped size (what the installer downloads):"
for f in "$agents"/node-agent-*; do
  printf '  %-44s %6.1f MB\n' "$(basename "$f")" "$(awk -v s="$(stat -c %s "$f")" 'BEGIN { print s / 1e6 }')"
done
glibc="$target_dir/release/node-agent"
if [ -x "$glibc" ]; then
  stripped="$data/node-agent-release-stripped"
  mkdir -p "$data" && cp "$glibc" "$stripped" && strip "$stripped"
  printf '  %-44s %6.1f MB\n' "release profile, glibc (stripped)" "$(awk -v s="$(stat -c %s "$stripped")" 'BEGIN { print s / 1e6 }')"
fi

# ONNX speed: the shipped build against the release build on the zoo's 20 000-row benchmark
# inputs (best of three runs each, alternating), as `node-agent predict` reports it.
zoo="${AIEDGE_ZOO:-/var/tmp/aiedge-zoo}"
if [ -x "$glibc" ] && [ -f "$zoo/manifest.tsv" ]; then
  echo "ONNX speed, rows/s (best of 3, 20 000 rows): shipped x86_64 musl build / release glibc build"
  rate() { "$1" predict --model "$zoo/$2.onnx" --input "$zoo/$3" --output - 2>&1 >/dev/null | sed -n 's/.*(\([0-9]*\) rows\/s).*/\1/p'; }
  for model in iris_logreg_nozipmap digits_pca_logreg_nozipmap iris_svc_nozipmap bc_rf_nozipmap bc_gb_nozipmap bc_minmax_mlp_nozipmap diabetes_hgb; do
    input=$(awk -F'\t' -v n="$model" '$1 == n { print $4 }' "$zoo/manifest.tsv")
    best_m=0 best_g=0
    for _ in 1 2 3; do
      m=$(rate "$agents/node-agent-x86_64-unknown-linux-musl" "$model" "$input"); [ "$m" -gt "$best_m" ] && best_m=$m
      g=$(rate "$glibc" "$model" "$input"); [ "$g" -gt "$best_g" ] && best_g=$g
    done
    awk -v n="$model" -v m="$best_m" -v g="$best_g" 'BEGIN { printf "  %-28s %10d %10d   %.2f\n", n, m, g, m / g }'
  done
fi

printf '%s\n' "footprint password" | "$bin" "${args[@]}" admin create --email footprint@example.org --password-stdin >/dev/null
RUST_LOG=warn "$bin" "${args[@]}" >"$data/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

# Starts an agent with a fresh node; prints its pid.
start_agent() { # label binary
  local token
  token=$("$bin" "${args[@]}" node add --owner footprint@example.org --name "$1" | sed -n 's/^token: //p')
  "$2" run --server "http://127.0.0.1:$port" --token "$token" --work-dir "$data/$1" --no-scripts \
    >"$data/$1.log" 2>&1 &
  echo $!
}
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/smaps_rollup"; }

musl_pid=$(start_agent musl "$agents/node-agent-x86_64-unknown-linux-musl")
pids+=("$musl_pid")
glibc_pid=
if [ -x "$glibc" ]; then glibc_pid=$(start_agent glibc "$glibc"); pids+=("$glibc_pid"); fi
sleep 10
hz=$(getconf CLK_TCK)
declare -A t0
for p in $musl_pid $glibc_pid; do t0[$p]=$(ticks "$p"); done
sleep "$seconds"
echo "idle, enrolled, heartbeats every 2 s, over $seconds s after a 10 s warm-up:"
printf '  %-30s %9s %9s %9s %8s %8s\n' agent "RSS MB" "anon MB" "file MB" threads "CPU %"
for p in $musl_pid $glibc_pid; do
  kill -0 "$p" 2>/dev/null || { cat "$data"/*.log >&2; die "an agent stopped"; }
  label="x86_64 musl, agent profile"
  [ "$p" = "$glibc_pid" ] && label="x86_64 glibc, release profile"
  cpu=$(awk -v a="${t0[$p]}" -v b="$(ticks "$p")" -v hz="$hz" -v s="$seconds" 'BEGIN { printf "%.3f", (b - a) / hz / s * 100 }')
  printf '  %-30s %9.1f %9.1f %9.1f %8s %8s\n' "$label" \
    "$(awk -v k="$(kb "$p" Rss)" 'BEGIN { print k / 1024 }')" \
    "$(awk -v k="$(kb "$p" Anonymous)" 'BEGIN { print k / 1024 }')" \
    "$(awk -v a="$(kb "$p" Rss)" -v b="$(kb "$p" Anonymous)" 'BEGIN { print (a - b) / 1024 }')" \
    "$(ls "/proc/$p/task" | wc -l)" "$cpu"
done
