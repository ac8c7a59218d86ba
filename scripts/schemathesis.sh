#!/usr/bin/env bash
# Schemathesis against the JSON API: generated requests for every operation of
# /api/v1/openapi.json, sent with a valid API token, and every answer checked against the
# document (no 5xx, only documented statuses and content types, bodies that match their schemas).
#
#   scripts/schemathesis.sh      # the release server cargo-leptos built
#
# It starts the server on a fresh data directory (SQLite) and its own port, makes an account and
# an API token with the admin CLI, uploads a small ONNX model and submits a job, so there is data
# to read, runs Schemathesis, and stops the server. Exits non-zero when a check fails.
#
# Environment:
#   AIEDGE_SERVER_BIN   the server binary (default: $CARGO_TARGET_DIR/release/server)
#   LEPTOS_SITE_ROOT    the built site (default: target/site; the API does not need it)
#   AIEDGE_ST_PORT      the port to serve on (default 3200)
#   AIEDGE_ST_EXAMPLES  test cases per operation and phase (default 100)
#   AIEDGE_ST_SEED      the generator's seed (default 1: every run sends the same requests)
#   AIEDGE_ST_VENV      Schemathesis's virtual environment (default /var/tmp/aiedge-schemathesis)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_schemathesis
ensure_rabbitmq

target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
bin="${AIEDGE_SERVER_BIN:-$target_dir/release/server}"
site="${LEPTOS_SITE_ROOT:-$ROOT/target/site}"
port="${AIEDGE_ST_PORT:-3200}"
examples="${AIEDGE_ST_EXAMPLES:-100}"
seed="${AIEDGE_ST_SEED:-1}"
[ -x "$bin" ] || die "no server binary at $bin: build it (cargo leptos build --release) or set AIEDGE_SERVER_BIN"
port_open 127.0.0.1 "$port" && die "port $port is taken: set AIEDGE_ST_PORT"

data="$(mktemp -d "${TMPDIR:-/tmp}/aiedge-st-XXXXXX")"
base="http://127.0.0.1:$port"
# Its own exchanges and queues on the shared broker, the same every run (nothing piles up).
args=(--bind "127.0.0.1:$port" --data-dir "$data" --site-root "$site" --amqp-namespace aiedge-schemathesis)
server_pid=
stop() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap stop EXIT

email=schemathesis@example.org
printf '%s\n' "schemathesis password" | "$bin" "${args[@]}" admin create --email "$email" --password-stdin >/dev/null
token="$("$bin" "${args[@]}" token create --email "$email" --name schemathesis | tail -1)"

say "starting $bin on $base"
RUST_LOG=warn "$bin" "${args[@]}" >"$data/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$data/server.log" >&2; die "the server did not start"; }
  sleep 0.2
done
curl -fsS "$base/healthz" >/dev/null || { cat "$data/server.log" >&2; die "the server did not answer /healthz"; }

# Something to read: a model with a default input, and a job (no node runs it: it stays queued).
auth=(-H "Authorization: Bearer $token")
curl -fsS "${auth[@]}" -F name=iris -F file=@runner/fixtures/iris_logreg.onnx -F default_input=@runner/fixtures/iris.csv \
  "$base/api/v1/applications" >/dev/null || die "uploading the model failed"
curl -fsS "${auth[@]}" -F application=iris "$base/api/v1/jobs" >/dev/null || die "submitting a job failed"

say "schemathesis $SCHEMATHESIS_VERSION: $examples cases per operation, seed $seed"
status=0
"$SCHEMATHESIS" run "$base/api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" \
  --seed "$seed" \
  --workers 1 \
  --generation-database none \
  --request-timeout 70 \
  --no-color || status=$?
if [ "$status" -ne 0 ]; then
  say "the server's log:"
  tail -n 50 "$data/server.log" >&2
  die "schemathesis found failures (exit $status)"
fi
say "schemathesis: no failures"
