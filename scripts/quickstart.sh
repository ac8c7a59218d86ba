#!/usr/bin/env bash
# Sets up what is missing, builds, and starts AI on the Edge on SQLite with a local RabbitMQ
# and an admin account, then prints the URL and the admin's credentials. Running it again
# reuses what exists (tools, build, data, admin). `scripts/quickstart.sh stop` stops it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

DATA_DIR="${AIEDGE_DATA_DIR:-$ROOT/data}"
BIND="${AIEDGE_BIND:-127.0.0.1:3000}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVER="$TARGET/release/server"
PIDFILE="$DATA_DIR/server.pid"
CREDS="$DATA_DIR/admin-credentials.txt"
ADMIN_EMAIL="${AIEDGE_ADMIN_EMAIL:-admin@aiedge.local}"

stop() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "stopping the server"
    kill -TERM "$(cat "$PIDFILE")"
  fi
  rm -f "$PIDFILE"
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

ensure_rust_tools
ensure_node_packages
ensure_rabbitmq

say "building (release)"
cargo leptos build --release

mkdir -p "$DATA_DIR"
chmod 700 "$DATA_DIR"
if [ ! -f "$CREDS" ]; then
  password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
  printf '%s\n' "$password" | "$SERVER" --data-dir "$DATA_DIR" admin create --email "$ADMIN_EMAIL" --password-stdin >/dev/null
  umask 077
  printf 'email: %s\npassword: %s\n' "$ADMIN_EMAIL" "$password" > "$CREDS"
fi

stop
say "starting the server on http://$BIND"
nohup "$SERVER" --data-dir "$DATA_DIR" --bind "$BIND" --site-root "$ROOT/target/site" \
  >"$DATA_DIR/server.log" 2>&1 &
echo $! > "$PIDFILE"
for _ in $(seq 1 120); do
  curl -fsS "http://$BIND/healthz" >/dev/null 2>&1 && break
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || die "the server stopped; see $DATA_DIR/server.log"
  sleep 0.5
done
curl -fsS "http://$BIND/healthz" >/dev/null || die "the server is not healthy; see $DATA_DIR/server.log"

cat <<MSG

  AI on the Edge is running.

    URL:       http://$BIND
    Admin:     $(sed -n 's/^email: //p' "$CREDS")
    Password:  $(sed -n 's/^password: //p' "$CREDS")

  Logs: $DATA_DIR/server.log    Stop: scripts/quickstart.sh stop

MSG
