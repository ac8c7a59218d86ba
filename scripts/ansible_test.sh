#!/usr/bin/env bash
# End-to-end test of the Ansible enrolment (deploy/ansible) against a running server: enrols
# this machine as a node through the role, as a fleet would be, then runs the playbook again
# and checks the node kept its identity (an upgrade in place).
#
#   scripts/ansible_test.sh SERVER_URL API_TOKEN [--cleanup]
#
# SERVER_URL must be reachable from this machine (the installer and the agent use it too);
# API_TOKEN is a personal API token (`server token create --email … | tail -1`). Runs as root
# (or with sudo): the real installer installs /usr/local/bin/node-agent, the user aiedge-agent
# and /etc/aiedge-agent. Without systemd as PID 1 (CI, containers) the role starts the agent in
# the background (aiedge_start_without_systemd=true); it is left running (pid in
# /run/aiedge-agent.pid, log /var/log/aiedge-agent.log) unless --cleanup is given, which stops
# it and uninstalls (`sh deploy/install.sh --uninstall`).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/deploy_tools.sh"
cd "$ROOT"

[ $# -ge 2 ] || die "usage: scripts/ansible_test.sh SERVER_URL API_TOKEN [--cleanup]"
SERVER="${1%/}"
TOKEN=$2
CLEANUP=no
[ "${3:-}" != --cleanup ] || CLEANUP=yes
NODE_NAME="${AIEDGE_NODE_NAME:-ansible-$(hostname)}"
STATE_FILE=/var/lib/aiedge-agent/node-agent-state.json
PIDFILE=/run/aiedge-agent.pid

if [ "$(id -u)" = 0 ]; then
  become=false # root already; and root here often has no sudo
else
  command -v sudo >/dev/null || die "run as root, or install sudo: the installer needs root"
  become=true
fi

command -v curl >/dev/null || apt_install curl
ensure_ansible
PY="$ANSIBLE_VENV/bin/python"
export PYTHONWARNINGS=ignore ANSIBLE_NOCOLOR=1

say "checking $SERVER"
curl -fsS --max-time 10 "$SERVER/healthz" >/dev/null || die "$SERVER/healthz does not answer 200: start the server first"

# api PATH: GET on the JSON API; prints the HTTP status, the body goes to $WORK/body.
WORK="$(mktemp -d /tmp/aiedge-ansible-test.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
api() { curl -sS --max-time 10 -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$SERVER$1"; }
node_id() { as_root cat "$STATE_FILE" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["node_id"])'; }

# A state file from an earlier run against another server (or a database since reset) names a
# node this server does not know: the role would take it as enrolled and wait in vain. Set it
# aside, loudly, so the role enrols afresh.
if as_root test -f "$STATE_FILE"; then
  old=$(node_id)
  code=$(api "/api/v1/nodes/$old")
  if [ "$code" = 404 ]; then
    say "WARNING: $STATE_FILE names node $old, which $SERVER does not know: moving it aside"
    as_root mv "$STATE_FILE" "$STATE_FILE.stale-$(date +%s)"
  elif [ "$code" != 200 ]; then
    die "GET /api/v1/nodes/$old answered $code: $(cat "$WORK/body")"
  fi
fi

printf 'localhost ansible_connection=local ansible_python_interpreter=%s ansible_become=%s\n' \
  "$PY" "$become" >"$WORK/inventory.ini"
play() {
  AIEDGE_API_TOKEN="$TOKEN" "$ANSIBLE_VENV/bin/ansible-playbook" -i "$WORK/inventory.ini" deploy/ansible/enrol.yml \
    -e aiedge_hosts=all -e "aiedge_server=$SERVER" -e "aiedge_node_name=$NODE_NAME" \
    -e aiedge_start_without_systemd=true
}

say "ansible (ansible-core $ANSIBLE_CORE_VERSION): enrolling this machine as $NODE_NAME"
play || die "the playbook failed (above); the agent's log: /var/log/aiedge-agent.log"
first=$(node_id)

say "ansible again: the node must keep its identity"
play || die "the second run of the playbook failed (above)"
second=$(node_id)
[ "$first" = "$second" ] || die "the second run changed the node's id: $first, then $second"

code=$(api "/api/v1/nodes/$second")
[ "$code" = 200 ] || die "GET /api/v1/nodes/$second answered $code: $(cat "$WORK/body")"
status=$("$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d.get("node", d)["status"])' "$WORK/body")
say "node $second ($NODE_NAME) is $status on $SERVER, enrolled by Ansible and upgraded in place"

if [ "$CLEANUP" = yes ]; then
  say "cleaning up: stopping the agent and uninstalling it"
  if as_root test -f "$PIDFILE"; then as_root kill -TERM "$(as_root cat "$PIDFILE")" 2>/dev/null || true; fi
  as_root sh deploy/install.sh --uninstall
else
  say "the agent keeps running: pid $(as_root cat "$PIDFILE" 2>/dev/null || echo '?'), log /var/log/aiedge-agent.log"
fi
echo "ansible enrolment: 1 passed, 0 failed"
