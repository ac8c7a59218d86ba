#!/bin/sh
# AI on the Edge: installs the node agent on this machine, enrols it and starts it.
#
#   curl -fsSL http://SERVER/install.sh | sudo sh -s -- --token aiedge_reg_… --name lab-pc-3
#
# The server serves this file with its own address filled in below. What it does, in order:
# picks the agent built for this machine (uname -m), downloads it from the server and checks its
# SHA-256 against the server's list, creates the system user `aiedge-agent`, enrols the machine
# with the one-time token (the token goes to the server once and is never written to disk),
# writes /etc/aiedge-agent/agent.env and the systemd unit aiedge-agent.service, and starts it.
# Without systemd it prints the command that runs the agent instead.
#
# Running it again upgrades the agent in place and keeps the node's identity (its credentials
# in /var/lib/aiedge-agent). `--uninstall` removes everything it installed.
#
# POSIX sh: it runs under dash, busybox ash and bash alike.
set -eu

SERVER="@@SERVER@@"
case "$SERVER" in @@*) SERVER="" ;; esac # the file read straight from the repository

AGENT_USER=aiedge-agent
BIN=/usr/local/bin/node-agent
CONF_DIR=/etc/aiedge-agent
ENV_FILE=$CONF_DIR/agent.env
STATE_DIR=/var/lib/aiedge-agent
STATE_FILE=$STATE_DIR/node-agent-state.json
UNIT_NAME=aiedge-agent.service
UNIT_FILE=/etc/systemd/system/$UNIT_NAME

TOKEN=""
NAME=""
MAX_JOBS=""
ACTION=install
START=yes

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
Installs the AI on the Edge node agent as a service, enrolled with a one-time token.

usage: install.sh [--server URL] --token TOKEN [--name NAME] [--max-jobs N] [--no-start]
       install.sh --uninstall
       install.sh --print-unit

  --server URL    the AI on the Edge server${SERVER:+ (default: $SERVER)}
  --token TOKEN   the one-time token from "Add node" (not needed when this machine is
                  already enrolled: re-running upgrades in place and keeps the node)
  --name NAME     the node's name on the server (default: the server picks the hostname)
  --max-jobs N    jobs this node runs at once (default 1, or what the last install set)
  --no-start      install and enrol, but do not start the service
  --uninstall     stop the agent and remove the binary, user, unit, configuration and the
                  node's credentials (the node then shows as dead on the server: remove it there)
  --print-unit    print the systemd unit this script installs, and exit
EOF
}

# The unit. Hardening: everything the agent's script sandbox still allows. Scripts run in user
# and network namespaces of their own with Landlock and resource limits, so namespaces stay
# allowed (no RestrictNamespaces) and /proc/self/uid_map stays writable.
unit_text() {
  cat <<EOF
[Unit]
Description=AI on the Edge node agent
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=$AGENT_USER
Group=$AGENT_USER
EnvironmentFile=$ENV_FILE
ExecStart=$BIN run
Restart=on-failure
RestartSec=5
# Exit code 3: the token was refused or the node was removed on the server. Restarting
# cannot help; enrol again with a new token.
RestartPreventExitStatus=3
# SIGTERM drains: running jobs get AIEDGE_DRAIN_TIMEOUT (30 s) to finish, the rest go back to
# the server, which runs them elsewhere.
KillMode=mixed
TimeoutStopSec=45
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ReadWritePaths=$STATE_DIR
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --server) SERVER="${2:?--server needs a URL}"; shift 2 ;;
    --server=*) SERVER="${1#*=}"; shift ;;
    --token) TOKEN="${2:?--token needs a value}"; shift 2 ;;
    --token=*) TOKEN="${1#*=}"; shift ;;
    --name) NAME="${2:?--name needs a value}"; shift 2 ;;
    --name=*) NAME="${1#*=}"; shift ;;
    --max-jobs) MAX_JOBS="${2:?--max-jobs needs a number}"; shift 2 ;;
    --max-jobs=*) MAX_JOBS="${1#*=}"; shift ;;
    --no-start) START=no; shift ;;
    --uninstall) ACTION=uninstall; shift ;;
    --print-unit) ACTION=print-unit; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

if [ "$ACTION" = print-unit ]; then
  unit_text
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run this as root: curl -fsSL …/install.sh | sudo sh -s -- --token …"
[ "$(uname -s)" = Linux ] || die "the agent runs on Linux; this is $(uname -s)"

has() { command -v "$1" >/dev/null 2>&1; }
systemd_running() { [ -d /run/systemd/system ] && has systemctl; }

# Runs a command as the agent's user (runuser from util-linux, else su).
as_agent() {
  if has runuser; then
    runuser -u "$AGENT_USER" -- "$@"
  elif has setpriv; then
    setpriv --reuid="$AGENT_USER" --regid="$AGENT_USER" --init-groups -- "$@"
  else
    # su: the arguments are quoted into one command line.
    cmd=""
    for arg in "$@"; do cmd="$cmd '$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")'"; done
    su -s /bin/sh "$AGENT_USER" -c "$cmd"
  fi
}

stop_agent() {
  if systemd_running && systemctl is-active --quiet "$UNIT_NAME" 2>/dev/null; then
    say "stopping $UNIT_NAME (running jobs are handed back to the server)"
    systemctl stop "$UNIT_NAME"
  elif has pkill && id "$AGENT_USER" >/dev/null 2>&1 && pkill -TERM -u "$AGENT_USER" -x node-agent 2>/dev/null; then
    say "stopping the running agent"
    i=0
    while pgrep -u "$AGENT_USER" -x node-agent >/dev/null 2>&1 && [ $i -lt 45 ]; do sleep 1; i=$((i + 1)); done
    pkill -KILL -u "$AGENT_USER" -x node-agent 2>/dev/null || true
  fi
}

if [ "$ACTION" = uninstall ]; then
  stop_agent
  if [ -f "$UNIT_FILE" ]; then
    if systemd_running; then systemctl disable --quiet "$UNIT_NAME" 2>/dev/null || true; fi
    rm -f "$UNIT_FILE"
    if systemd_running; then systemctl daemon-reload; fi
    say "removed $UNIT_FILE"
  fi
  [ -e "$BIN" ] && rm -f "$BIN" && say "removed $BIN"
  [ -d "$CONF_DIR" ] && rm -rf "$CONF_DIR" && say "removed $CONF_DIR"
  [ -d "$STATE_DIR" ] && rm -rf "$STATE_DIR" && say "removed $STATE_DIR (the node's credentials: remove the node on the server too)"
  if id "$AGENT_USER" >/dev/null 2>&1; then
    if has userdel; then userdel "$AGENT_USER"; else deluser "$AGENT_USER"; fi
    say "removed the user $AGENT_USER"
  fi
  say "the agent is uninstalled"
  exit 0
fi

[ -n "$SERVER" ] || die "no server given: pass --server http://SERVER:3000"
SERVER="${SERVER%/}"
if [ ! -f "$STATE_FILE" ] && [ -z "$TOKEN" ]; then
  die "this machine is not enrolled yet: pass --token (from \"Add node\" on $SERVER/nodes)"
fi
case "$MAX_JOBS" in "" | *[!0-9]* | 0) [ -z "$MAX_JOBS" ] || die "--max-jobs must be a whole number of at least 1" ;; esac

# Which build runs here. A 64-bit kernel under a 32-bit userland (Raspberry Pi OS 32-bit on a
# Pi 4) says aarch64 but runs only 32-bit programs: ask the userland.
machine=$(uname -m)
if [ "$machine" = aarch64 ] && [ "$(getconf LONG_BIT 2>/dev/null || echo 64)" = 32 ]; then machine=armv7l; fi
case "$machine" in
  x86_64 | amd64) TARGET=x86_64-unknown-linux-musl ;;
  aarch64 | arm64) TARGET=aarch64-unknown-linux-musl ;;
  armv7l | armv8l)
    TARGET=armv7-unknown-linux-gnueabihf
    [ -e /lib/ld-linux-armhf.so.3 ] || die "this 32-bit ARM system has no glibc (/lib/ld-linux-armhf.so.3): the armv7 agent needs it (Raspberry Pi OS, Debian and Ubuntu have it)"
    ;;
  armv6l) die "ARMv6 (Raspberry Pi 1 and Zero) is not supported: the agent needs ARMv7 or newer" ;;
  *) die "no agent is built for this machine ($machine); the server offers x86_64, aarch64 and armv7l" ;;
esac
FILE=node-agent-$TARGET

if has curl; then
  fetch() { curl -fsSL --retry 3 -o "$2" "$1"; }
elif has wget; then
  fetch() { wget -q -O "$2" "$1"; }
else
  die "neither curl nor wget is installed"
fi
if has sha256sum; then
  sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif has shasum; then
  sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
elif has openssl; then
  sha256() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }
else
  die "no SHA-256 tool (sha256sum, shasum or openssl) to check the download with"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

say "asking $SERVER for the $TARGET agent"
fetch "$SERVER/agent/v1/checksums" "$tmp/checksums" || die "cannot reach $SERVER/agent/v1/checksums"
expected=$(awk -v f="$FILE" '$2 == f { print $1 }' "$tmp/checksums")
[ -n "$expected" ] || die "$SERVER has no agent for $TARGET (it has: $(awk '{ printf "%s ", $2 }' "$tmp/checksums"))"
fetch "$SERVER/agent/v1/download/$TARGET" "$tmp/node-agent" || die "downloading $FILE failed"
actual=$(sha256 "$tmp/node-agent")
[ "$actual" = "$expected" ] || die "the download's SHA-256 is $actual, but the server lists $expected: not installing it"
# Tried beside its final place: /tmp may be mounted noexec.
install -d -m 0755 "$(dirname "$BIN")"
install -m 0755 "$tmp/node-agent" "$BIN.new"
version=$("$BIN.new" --version 2>&1) || { rm -f "$BIN.new"; die "the downloaded agent does not run here: $version"; }
say "downloaded $version ($TARGET), SHA-256 $expected verified"

created_user=no
if ! id "$AGENT_USER" >/dev/null 2>&1; then
  created_user=yes
  nologin=$(command -v nologin || echo /bin/false)
  if has useradd; then
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell "$nologin" "$AGENT_USER"
  else
    addgroup -S "$AGENT_USER" && adduser -S -D -H -h "$STATE_DIR" -s "$nologin" -G "$AGENT_USER" "$AGENT_USER"
  fi
  say "created the system user $AGENT_USER"
fi
install -d -m 0700 -o "$AGENT_USER" -g "$AGENT_USER" "$STATE_DIR"
install -d -m 0755 "$CONF_DIR"

upgrade=no
[ -e "$BIN" ] && upgrade=yes
stop_agent
# A rename on one file system: a running agent keeps its old file, nobody sees half a file.
mv -f "$BIN.new" "$BIN"
if [ "$upgrade" = yes ]; then say "upgraded $BIN"; else say "installed $BIN"; fi

# Enrol once; the token travels in the environment, not on a command line `ps` shows.
if [ -f "$STATE_FILE" ]; then
  say "already enrolled: keeping this node's identity ($STATE_FILE)"
else
  set +e
  enrolled=$(
    cd "$STATE_DIR" || exit 1
    export AIEDGE_TOKEN="$TOKEN" AIEDGE_SERVER="$SERVER"
    [ -z "$NAME" ] || export AIEDGE_NODE_NAME="$NAME"
    as_agent "$BIN" enrol --work-dir "$STATE_DIR" 2>&1
  )
  code=$?
  set -e
  if [ $code -ne 0 ] && [ "$upgrade" = no ]; then
    # A first install that cannot enrol leaves nothing behind.
    rm -f "$BIN"
    rm -rf "$STATE_DIR"
    rmdir "$CONF_DIR" 2>/dev/null || true
    if [ "$created_user" = yes ]; then
      if has userdel; then userdel "$AGENT_USER"; else deluser "$AGENT_USER"; fi
    fi
  fi
  case $code in
    0) say "$enrolled" ;;
    3) die "the server refused the token: it is wrong, already used or expired. \"Add node\" on $SERVER/nodes gives a new one" ;;
    *) die "enrolling failed: $enrolled" ;;
  esac
fi

# Keep what an earlier install set unless told otherwise.
if [ -z "$MAX_JOBS" ] && [ -f "$ENV_FILE" ]; then MAX_JOBS=$(sed -n 's/^AIEDGE_MAX_JOBS=//p' "$ENV_FILE"); fi
umask 022
cat >"$ENV_FILE" <<EOF
# The agent's settings (see node-agent run --help); read by $UNIT_NAME.
AIEDGE_SERVER=$SERVER
AIEDGE_WORK_DIR=$STATE_DIR
AIEDGE_MAX_JOBS=${MAX_JOBS:-1}
EOF
say "wrote $ENV_FILE"
unit_text >"$UNIT_FILE"
say "wrote $UNIT_FILE"

if systemd_running; then
  systemctl daemon-reload
  systemctl enable --quiet "$UNIT_NAME"
  if [ "$START" = yes ]; then
    systemctl restart "$UNIT_NAME"
    sleep 2
    systemctl is-active --quiet "$UNIT_NAME" || die "$UNIT_NAME did not stay up: journalctl -u $UNIT_NAME"
    say "started $UNIT_NAME; logs: journalctl -u $UNIT_NAME -f"
  else
    say "enabled $UNIT_NAME (not started: --no-start); start it with: systemctl start $UNIT_NAME"
  fi
else
  say "systemd is not running here, so nothing starts the agent at boot. Run it with:"
  printf "    sh -c 'set -a; . %s; exec runuser -u %s -- %s run'\n" "$ENV_FILE" "$AGENT_USER" "$BIN"
fi
say "done: the node appears on $SERVER/nodes once its first heartbeat arrives"
