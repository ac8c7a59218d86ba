#!/usr/bin/env bash
# This platform beside Celery, measured back to back on this machine, so that every performance
# claim is a ratio taken in one run rather than a number from some hour (issue 21).
#
# 1. Celery (pinned in scripts/peer_bench/requirements.txt, in a venv of its own): RabbitMQ as the
#    broker, the `rpc://` result backend, the prefork pool with one worker process (or
#    --celery-concurrency), a no-op task. The worker runs in the background on a queue of its own
#    and is stopped before step 2; scripts/peer_bench/celery_driver.py times N tasks one at a time
#    (round trip p50/p95) and M tasks sent at once (tasks/s).
# 2. jobs_bench (server/examples/jobs_bench.rs) on SQLite, then on PostgreSQL: the same N and M,
#    --agents 4, --no-runner, everything else its defaults.
# Then one table with both and the ratios: ours / Celery for the round trip (below 1 is faster),
# ours / Celery for jobs/s (above 1 is more). About 30 s (plus, the first time, the venv or a build).
#
#   scripts/peer_bench.sh                  # Celery, then ours on SQLite and on PostgreSQL
#   scripts/peer_bench.sh --sqlite         # ours on SQLite only (--postgres: PostgreSQL only)
#   scripts/peer_bench.sh --sequential 300 --jobs 3000 --agents 4 --celery-concurrency 1
#   scripts/peer_bench.sh -- --queue-ahead 4   # anything after -- goes to jobs_bench
#
# Uses the release binaries in $CARGO_TARGET_DIR (default /var/tmp/aiedge-target) and builds
# them if missing (or always with --build). The Celery venv: $AIEDGE_CELERY_VENV (default
# /var/tmp/aiedge-celery-venv). Raw outputs stay in a directory named at the end.
# Run it on an otherwise idle machine: next to a build the numbers mean nothing.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

sequential=300
jobs=3000
agents=4
celery_concurrency=1
dbs=()
build=
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sequential) sequential=${2:?}; shift 2 ;;
    --jobs) jobs=${2:?}; shift 2 ;;
    --agents) agents=${2:?}; shift 2 ;;
    --celery-concurrency) celery_concurrency=${2:?}; shift 2 ;;
    --sqlite) dbs+=(sqlite); shift ;;
    --postgres) dbs+=(postgres); shift ;;
    --build) build=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ ${#dbs[@]} -gt 0 ] || dbs=(sqlite postgres)
for n in "$sequential" "$jobs" "$agents" "$celery_concurrency"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "'$n' is not a positive count"
done
[[ "$agents" != *,* ]] || die "--agents takes one count here"

here="$ROOT/scripts/peer_bench"
target="${CARGO_TARGET_DIR:-/var/tmp/aiedge-target}"
bench="$target/release/examples/jobs_bench"
agent="$target/release/node-agent"
venv="${AIEDGE_CELERY_VENV:-/var/tmp/aiedge-celery-venv}"
out="$(mktemp -d /var/tmp/aiedge-peer-bench.XXXXXX)"

# Others' load makes both sides slow by different amounts: say so rather than print a ratio
# that looks measured.
busy=$(pgrep -f 'cargo (build|test|run)|rustc |ci-clone|scripts/test.sh' | grep -vx "$$" || true)
[ -z "$busy" ] || say "warning: builds or tests are running (pids $(echo "$busy" | tr '\n' ' ')): the numbers will not mean much"

ensure_rabbitmq
for db in "${dbs[@]}"; do [ "$db" != postgres ] || ensure_postgres; done

# --- our binaries ---------------------------------------------------------------------------
if [ -n "$build" ] || [ ! -x "$bench" ] || [ ! -x "$agent" ]; then
  say "building node-agent and jobs_bench (release) in $target"
  (cd "$ROOT" && CARGO_TARGET_DIR="$target" cargo build --quiet --release -p node-agent \
    && CARGO_TARGET_DIR="$target" cargo build --quiet --release -p server --example jobs_bench) >&2
fi

# --- the Celery venv, exactly as pinned -----------------------------------------------------
if ! cmp -s "$here/requirements.txt" "$venv/.peer_bench_requirements.txt"; then
  ensure_python3
  say "installing the pinned Celery in $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$venv/.peer_bench_requirements.txt"
fi

# --- Celery ---------------------------------------------------------------------------------
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree
export PEER_BENCH_QUEUE="peer_bench-$$"
export PEER_BENCH_BROKER="amqp://guest:guest@127.0.0.1:5672//"
node="peer_bench-$$@$(hostname)"
worker=

stop_worker() {
  [ -n "$worker" ] || return 0
  local pid=$worker
  worker=
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  (cd "$here" && "$venv/bin/python" celery_driver.py delete-queue) >/dev/null 2>&1 || true
}
trap stop_worker EXIT
trap 'exit 130' INT TERM

say "Celery: starting a prefork worker (--concurrency $celery_concurrency) on queue $PEER_BENCH_QUEUE"
(cd "$here" && exec "$venv/bin/celery" -A celery_app worker --pool prefork --concurrency "$celery_concurrency" \
  -Q "$PEER_BENCH_QUEUE" -n "$node" --loglevel WARNING) >"$out/celery-worker.log" 2>&1 &
worker=$!
(cd "$here" && "$venv/bin/python" celery_driver.py ping --node "$node" --timeout 60) \
  || die "the Celery worker did not come up; its log: $out/celery-worker.log"
say "Celery: $sequential tasks one at a time, then $jobs at once"
(cd "$here" && "$venv/bin/python" celery_driver.py run --sequential "$sequential" --tasks "$jobs") >"$out/celery.json" \
  || die "the Celery run failed: $(cat "$out/celery.json") (worker log: $out/celery-worker.log)"
stop_worker
read -r c_ver c_p50 c_p95 c_tput < <("$venv/bin/python" -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d["celery"], d["rt_p50_ms"], d["rt_p95_ms"], d["jobs_per_s"])' "$out/celery.json") \
  || die "cannot read $out/celery.json"

# --- ours -----------------------------------------------------------------------------------
declare -A o_p50 o_p95 o_tput
for db in "${dbs[@]}"; do
  flags=(--agents "$agents" --jobs "$jobs" --sequential "$sequential" --no-runner)
  [ "$db" = sqlite ] || flags+=(--postgres)
  flags+=("${extra[@]}")
  say "AI on the Edge ($db): jobs_bench ${flags[*]}"
  AIEDGE_AGENT_BIN="$agent" "$bench" "${flags[@]}" >"$out/jobs_bench-$db.txt" 2>"$out/jobs_bench-$db.err" \
    || die "jobs_bench failed on $db: see $out/jobs_bench-$db.txt and .err"
  # The sequential table's row and the throughput table's row for our agent count (the formats
  # are jobs_bench's: '| agents | jobs | p50 | p95 | …' and '| agents | jobs/s | … | failed | …').
  read -r p50 p95 tput failed < <(awk -F'|' -v a="$agents" '
    function num(s) { gsub(/ /, "", s); return s }
    /^[A-Z]/ { t = "" } /^Trivial job/ { t = "seq" } /^Sustained throughput/ { t = "tput" }
    t == "seq" && /^\| *[0-9]/ && num($2) == a && p50 == "" { p50 = num($4); p95 = num($5) }
    t == "tput" && /^\| *[0-9]/ && num($2) == a && tput == "" { tput = num($3); failed = num($6) }
    END { if (p50 == "" || tput == "") exit 1; print p50, p95, tput, failed }' "$out/jobs_bench-$db.txt") \
    || die "cannot read jobs_bench's tables in $out/jobs_bench-$db.txt"
  o_p50[$db]=$p50 o_p95[$db]=$p95 o_tput[$db]=$tput
  failures=$(grep -c 'failure:' "$out/jobs_bench-$db.txt" || true)
  [ "$failed" = 0 ] && [ "$failures" = 0 ] || say "warning: jobs_bench on $db reports $failed failed jobs in the throughput phase, $failures failure lines"
done

# --- the table --------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }'; }
built=$(date -u -r "$bench" '+%Y-%m-%d %H:%M UTC')
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "unknown commit")
[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] || commit+=" with uncommitted changes"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, tree $commit (jobs_bench built $built);" \
  "$sequential one at a time, then $jobs at once; jobs_bench --agents $agents --jobs $jobs --sequential $sequential --no-runner${extra[*]:+ ${extra[*]}}"
echo
echo "| | round trip p50 / p95 ms | jobs/s | round trip p50 / p95, ours ÷ Celery | jobs/s, ours ÷ Celery |"
echo "|---|---:|---:|---:|---:|"
procs="$celery_concurrency worker processes"; [ "$celery_concurrency" != 1 ] || procs="1 worker process"
printf '| Celery %s, prefork, %s, rpc:// | %.1f / %.1f | %.0f | | |\n' "$c_ver" "$procs" "$c_p50" "$c_p95" "$c_tput"
for db in "${dbs[@]}"; do
  name=SQLite; [ "$db" = sqlite ] || name=PostgreSQL
  echo "| AI on the Edge, $agents agents, $name | ${o_p50[$db]} / ${o_p95[$db]} | ${o_tput[$db]} |" \
    "$(ratio "${o_p50[$db]}" "$c_p50") / $(ratio "${o_p95[$db]}" "$c_p95") | $(ratio "${o_tput[$db]}" "$c_tput") |"
done
echo
# Issue 21's aims, for the run above (the jobs/s aim is for four agents).
for db in "${dbs[@]}"; do
  awk -v db="$db" -v p="${o_p50[$db]}" -v cp="$c_p50" -v t="${o_tput[$db]}" -v ct="$c_tput" -v a="$agents" 'BEGIN {
    r = p / cp; q = t / ct
    if (db == "sqlite") {
      printf "Aims, SQLite: round trip p50 ≤ 1.0× Celery: %.2f× (%s)", r, r <= 1.0 ? "met" : "not met"
      if (a == 4) printf "; jobs/s ≥ 2.5× Celery with four agents: %.2f× (%s)", q, q >= 2.5 ? "met" : "not met"
      print "."
    } else printf "Aims, PostgreSQL: round trip p50 ≤ 1.5× Celery: %.2f× (%s).\n", r, r <= 1.5 ? "met" : "not met"
  }'
done
say "raw outputs: $out"
