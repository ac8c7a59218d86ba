#!/usr/bin/env bash
# The edge deployment end to end, against the real release server on this machine:
#
# 1. the aarch64 agent under qemu-aarch64 enrols (token from POST /api/v1/nodes), heartbeats,
#    turns active, runs a job, and its predictions equal the x86-64 agent's;
# 2. the one-line installer, as the "Add node" page shows it (curl … /install.sh | sh -s --),
#    downloads the x86-64 agent from the server, checks its SHA-256, creates the user, enrols,
#    writes the unit; the agent started as the installer says turns active and runs a job;
#    re-running it upgrades in place and keeps the node's identity; a wrong token is refused
#    with exit 1 and a clear message; --uninstall removes everything;
# 3. the Ansible playbook (deploy/ansible) enrols this machine as a fleet of one.
#
#   scripts/edge_test.sh     # after cargo leptos build --release and scripts/build-agents.sh
#
# Run as root: the installer creates a system user and writes /usr/local/bin, /etc and
# /var/lib. Without systemd (as on CI) the agent is started the way the installer prints.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_cross_tools
ensure_rabbitmq
[ "$(id -u)" = 0 ] || die "run as root: the installer creates a system user"

target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
bin="${AIEDGE_SERVER_BIN:-$target_dir/release/server}"
agents="${AIEDGE_AGENTS_OUT:-$ROOT/dist/agents}"
port="${AIEDGE_EDGE_PORT:-3300}"
[ -x "$bin" ] || die "no server binary at $bin: cargo leptos build --release"
[ -f "$agents/SHA256SUMS" ] || die "no agents in $agents: scripts/build-agents.sh"
port_open 127.0.0.1 "$port" && die "port $port is taken: set AIEDGE_EDGE_PORT"
[ -e /usr/local/bin/node-agent ] && die "an agent is installed here already (/usr/local/bin/node-agent): uninstall it first"

data="$(mktemp -d "${TMPDIR:-/tmp}/aiedge-edge-XXXXXX")"
chmod 0755 "$data"
base="http://127.0.0.1:$port"
args=(--bind "127.0.0.1:$port" --data-dir "$data/server" --site-root "$ROOT/target/site" --agents-dir "$agents"
  --amqp-namespace aiedge-edge-test --heartbeat-timeout 6s)
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Whatever a failed run left installed.
  [ -e /usr/local/bin/node-agent ] && sh deploy/install.sh --uninstall >/dev/null 2>&1
  rm -rf "$data"
}
trap stop EXIT
fail() {
  for log in "$data"/*.log; do [ -f "$log" ] && { echo "--- $log (last 30 lines)" >&2; tail -30 "$log" >&2; }; done
  die "$*"
}

# Accounts: one per part, so each part's jobs (pool "own") can only go to its own node.
account() {
  printf '%s\n' "edge test password" | "$bin" "${args[@]}" admin create --email "$1@example.org" --password-stdin >/dev/null
  "$bin" "${args[@]}" token create --email "$1@example.org" --name edge-test | tail -1
}
qemu_token=$(account qemu)
install_token=$(account installer)
ansible_token=$(account ansible)

say "starting the release server on $base with the agents in $agents"
RUST_LOG=warn "$bin" "${args[@]}" >"$data/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fsS "$base/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$base/healthz" >/dev/null || fail "the server did not come up"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
api() { local token=$1; shift; curl -fsS -H "Authorization: Bearer $token" "$@"; }
add_node() { api "$1" -H 'content-type: application/json' -d "{\"name\": \"$2\"}" "$base/api/v1/nodes"; }
wait_active() { # token node-id → arch
  for _ in $(seq 1 120); do
    local node
    node=$(api "$1" "$base/api/v1/nodes/$2")
    if [ "$(json 'd["status"]' <<<"$node")" = active ]; then json 'd["arch"]' <<<"$node"; return 0; fi
    sleep 0.5
  done
  fail "node $2 did not turn active: $(api "$1" "$base/api/v1/nodes/$2")"
}
# Uploads the iris model, runs a job on the caller's own node, and compares its predictions
# with the x86-64 agent's output for the same model and rows.
run_job() { # token label
  local token=$1 label=$2
  api "$token" -F name=iris -F file=@runner/fixtures/iris_logreg.onnx -F default_input=@runner/fixtures/iris.csv \
    "$base/api/v1/applications" >/dev/null 2>&1 || true # already there on a second run
  local job status
  job=$(api "$token" -F application=iris -F pool=own "$base/api/v1/jobs" | json 'd["id"]')
  status=$(api "$token" "$base/api/v1/jobs/$job?wait=60" | json 'd["status"]')
  [ "$status" = succeeded ] || fail "$label: job $job ended $status"
  api "$token" "$base/api/v1/jobs/$job/result" -o "$data/$label.csv"
  "$agents/node-agent-x86_64-unknown-linux-musl" predict --model runner/fixtures/iris_logreg.onnx \
    --input runner/fixtures/iris.csv --output "$data/$label.expected.csv" 2>/dev/null
  python3 - "$data/$label.expected.csv" "$data/$label.csv" <<'PY' || fail "$label: predictions differ"
import csv, math, sys
a, b = (list(csv.reader(open(p))) for p in sys.argv[1:])
assert len(a) == len(b) and len(a) > 1, (len(a), len(b))
for x, y in zip(a, b):
    for u, v in zip(x, y):
        assert u == v or math.isclose(float(u), float(v), rel_tol=1e-4, abs_tol=1e-5), (u, v)
PY
  say "  $label: job $job succeeded, $(($(wc -l <"$data/$label.csv") - 1)) predictions equal to the x86-64 agent's"
}

# 1 ----------------------------------------------------------------------------------------
say "1. the aarch64 agent under qemu: enrol, heartbeats, a job"
new=$(add_node "$qemu_token" qemu-arm64)
node=$(json 'd["node"]["id"]' <<<"$new")
reg=$(json 'd["token"]' <<<"$new")
qemu-aarch64 "$agents/node-agent-aarch64-unknown-linux-musl" run --server "$base" --token "$reg" \
  --work-dir "$data/arm64" --heartbeat-interval 500ms --benchmark-interval 1h >"$data/qemu-agent.log" 2>&1 &
qemu_pid=$!
pids+=($qemu_pid)
arch=$(wait_active "$qemu_token" "$node")
[ "$arch" = aarch64 ] || fail "the qemu node reports arch $arch"
say "  node $node active, arch $arch"
run_job "$qemu_token" qemu-arm64
kill "$qemu_pid"

# 2 ----------------------------------------------------------------------------------------
say "2. the one-line installer"
new=$(add_node "$install_token" installed)
node=$(json 'd["node"]["id"]' <<<"$new")
line=$(json 'd["install"]' <<<"$new")
case "$line" in "curl -fsSL $base/install.sh | sudo sh -s -- --token "*) ;; *) fail "unexpected install line: $line" ;; esac
# The line as shown, without sudo: this script is root already.
sh -c "${line/| sudo sh/| sh}" >"$data/install.log" 2>&1 || fail "the installer failed"
grep -q "SHA-256 .* verified" "$data/install.log" || fail "the installer did not verify the download"
for f in /usr/local/bin/node-agent /etc/aiedge-agent/agent.env /etc/systemd/system/aiedge-agent.service \
  /var/lib/aiedge-agent/node-agent-state.json; do
  [ -e "$f" ] || fail "the installer did not write $f"
done
id aiedge-agent >/dev/null || fail "the installer did not create the user aiedge-agent"
[ "$(stat -c %U:%a /var/lib/aiedge-agent)" = aiedge-agent:700 ] || fail "/var/lib/aiedge-agent is $(stat -c %U:%a /var/lib/aiedge-agent)"
if [ -d /run/systemd/system ]; then
  systemctl is-active --quiet aiedge-agent || fail "aiedge-agent.service is not running"
else
  start=$(grep -A1 "systemd is not running" "$data/install.log" | tail -1 | sed 's/^ *//')
  [ -n "$start" ] || fail "the installer did not say how to run the agent without systemd"
  say "  no systemd here; starting the agent as the installer says: $start"
  sh -c "$start" >"$data/installed-agent.log" 2>&1 &
  pids+=($!)
fi
wait_active "$install_token" "$node" >/dev/null
say "  node $node active"
run_job "$install_token" installed
saved=$(cat /var/lib/aiedge-agent/node-agent-state.json)

say "  re-running the installer without a token upgrades in place"
sh -c "curl -fsSL $base/install.sh | sh -s --" >"$data/reinstall.log" 2>&1 || fail "re-running the installer failed"
grep -q "already enrolled" "$data/reinstall.log" || fail "the re-run did not keep the enrolment"
[ "$(cat /var/lib/aiedge-agent/node-agent-state.json)" = "$saved" ] || fail "the re-run changed the node's credentials"
if [ ! -d /run/systemd/system ]; then
  pgrep -u aiedge-agent -x node-agent >/dev/null && fail "the re-run did not stop the old agent"
  sh -c "$start" >"$data/installed-agent.log" 2>&1 &
  pids+=($!)
fi
sleep 3
wait_active "$install_token" "$node" >/dev/null
[ "$(api "$install_token" "$base/api/v1/nodes" | json 'len(d)')" = 1 ] || fail "the re-run made a second node"
say "  the same node $node, active, with the new binary"

# A fresh machine with a wrong token: refused, clearly.
sh deploy/install.sh --uninstall >"$data/uninstall.log" 2>&1 || fail "--uninstall failed"
out=$(sh -c "curl -fsSL $base/install.sh | sh -s -- --token aiedge_reg_wrong" 2>&1; echo "exit $?")
case "$out" in *"refused the token"*"exit 1") ;; *) fail "a wrong token was not refused clearly: $out" ;; esac
for f in /usr/local/bin/node-agent /var/lib/aiedge-agent; do [ -e "$f" ] && fail "a refused install left $f"; done
id aiedge-agent >/dev/null 2>&1 && fail "a refused install left the user aiedge-agent"
for f in /usr/local/bin/node-agent /etc/aiedge-agent /etc/systemd/system/aiedge-agent.service /var/lib/aiedge-agent; do
  [ -e "$f" ] && fail "--uninstall left $f"
done
id aiedge-agent >/dev/null 2>&1 && fail "--uninstall left the user aiedge-agent"
say "  --uninstall removes the binary, unit, configuration, state and user; a wrong token is refused and leaves nothing"

# 3 ----------------------------------------------------------------------------------------
say "3. the Ansible playbook enrols this machine"
scripts/ansible_test.sh "$base" "$ansible_token" >"$data/ansible.log" 2>&1 || { cat "$data/ansible.log" >&2; fail "the playbook failed"; }
[ "$(api "$ansible_token" "$base/api/v1/nodes" | json '[n["status"] for n in d]')" = "['active']" ] \
  || fail "after the playbook: $(api "$ansible_token" "$base/api/v1/nodes")"
run_job "$ansible_token" ansible
sh deploy/install.sh --uninstall >/dev/null
say "edge deployment: all passed"
