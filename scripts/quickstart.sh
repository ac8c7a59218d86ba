#!/usr/bin/env bash
# Sets up what is missing, builds, and starts AI on the Edge on SQLite with a local RabbitMQ,
# an admin account and one local node agent, then prints the URL and the admin's credentials.
# Running it again reuses what exists (tools, build, data, admin, the enrolled node).
# `scripts/quickstart.sh stop` stops the server and the agent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

DATA_DIR="${AIEDGE_DATA_DIR:-$ROOT/data}"
BIND="${AIEDGE_BIND:-127.0.0.1:3000}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVER="$TARGET/release/server"
AGENT="$TARGET/release/node-agent"
PIDFILE="$DATA_DIR/server.pid"
# Outside the data directory: the agent has no business with the server's files. As root the
# agent runs as a user of its own, which may not reach into this checkout (e.g. under /root).
AGENT_USER=aiedge-agent
if [ "$(id -u)" = 0 ]; then
  AGENT_DIR="${AIEDGE_AGENT_DIR:-/var/lib/aiedge/local-agent}"
else
  AGENT_DIR="${AIEDGE_AGENT_DIR:-$ROOT/local-agent}"
fi
AGENT_PIDFILE="$DATA_DIR/agent.pid"
CREDS="$DATA_DIR/admin-credentials.txt"
ADMIN_EMAIL="${AIEDGE_ADMIN_EMAIL:-admin@aiedge.local}"

stop_pid() {
  local file=$1 what=$2
  if [ -f "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null; then
    say "stopping the $what"
    kill -TERM "$(cat "$file")"
    for _ in $(seq 1 50); do kill -0 "$(cat "$file")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$file"
}

stop() {
  stop_pid "$AGENT_PIDFILE" "node agent"
  stop_pid "$PIDFILE" server
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

ensure_rust_tools
ensure_node_packages
ensure_rabbitmq

say "building (release)"
cargo leptos build --release --precompress
cargo build --release -p node-agent

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

# One local node: enrolled once (its credentials stay in its state file), started every time.
# Earlier quickstarts kept it inside the data directory.
if [ -d "$DATA_DIR/local-agent" ] && [ ! -e "$AGENT_DIR" ]; then mv "$DATA_DIR/local-agent" "$AGENT_DIR"; fi
mkdir -p "$AGENT_DIR"
# As root, the agent runs as a system user of its own, which cannot read the data directory
# (mode 0700, root's); its scripts run as uids of their own. As anyone else it runs as you, and
# its scripts are kept out of the data directory by Landlock and their own network namespace.
as_agent=()
if [ "$(id -u)" = 0 ]; then
  id "$AGENT_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$AGENT_USER"
  chown -R "$AGENT_USER:" "$AGENT_DIR"
  install -D -m 0755 "$AGENT" /usr/local/lib/aiedge/node-agent
  AGENT=/usr/local/lib/aiedge/node-agent
  as_agent=(setpriv --reuid "$AGENT_USER" --regid "$AGENT_USER" --init-groups)
fi
token_args=()
if [ ! -f "$AGENT_DIR/node-agent-state.json" ]; then
  # Shared with everyone: the quickstart's users run their jobs on the local machine.
  token="$("$SERVER" --data-dir "$DATA_DIR" node add --owner "$ADMIN_EMAIL" --name "$(hostname)-local" --share-with-everyone \
    | sed -n 's/^token: //p')"
  [ -n "$token" ] || die "could not issue a registration token for the local node"
  token_args=(--token "$token")
fi
say "starting the local node agent"
nohup "${as_agent[@]}" "$AGENT" run --server "http://$BIND" --name "$(hostname)-local" --work-dir "$AGENT_DIR" "${token_args[@]}" \
  >"$DATA_DIR/agent.log" 2>&1 &
echo $! > "$AGENT_PIDFILE"

cat <<MSG

  AI on the Edge is running.

    URL:       http://$BIND
    Admin:     $(sed -n 's/^email: //p' "$CREDS")
    Password:  $(sed -n 's/^password: //p' "$CREDS")

  A local node agent runs beside it: see "My nodes" or the admin page.
  Logs: $DATA_DIR/server.log, $DATA_DIR/agent.log    Stop: scripts/quickstart.sh stop

MSG
