# Shared set-up steps for quickstart.sh, test.sh and .ci/run. Each step checks first and does
# only what is missing, so a warm machine skips the slow parts. Sourced, not run.

# Versions that must match each other (see docs/toolchain notes in README).
CARGO_LEPTOS_VERSION=0.3.10
WASM_BINDGEN_VERSION=0.2.130

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export PATH="$HOME/.cargo/bin:$ROOT/end2end/node_modules/.bin:$PATH"

say() { printf '\033[1;36m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} (apt)"
  if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust_tools() {
  command -v cargo >/dev/null || die "Rust is not installed (https://rustup.rs), then run this again"
  if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown || die "cannot add the wasm32 target (rustup needs the network once)"
  fi
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt || die "cannot add rustfmt"
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy || die "cannot add clippy"
  if [ "$(cargo leptos --version 2>/dev/null | awk '{print $2}')" != "$CARGO_LEPTOS_VERSION" ]; then
    say "installing cargo-leptos $CARGO_LEPTOS_VERSION (about 12 minutes on 2 cores, once)"
    cargo install cargo-leptos@"$CARGO_LEPTOS_VERSION" --locked
  fi
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
    # Not --locked: its lock file names a crate version the registry no longer serves.
    cargo install wasm-bindgen-cli@"$WASM_BINDGEN_VERSION"
  fi
}

ensure_node_packages() {
  command -v npm >/dev/null || apt_install nodejs npm
  if [ ! -x "$ROOT/end2end/node_modules/.bin/wasm-opt" ] || [ ! -d "$ROOT/end2end/node_modules/@playwright/test" ] \
     || [ "$ROOT/end2end/package-lock.json" -nt "$ROOT/end2end/node_modules/.package-lock.json" ]; then
    say "installing npm packages (Playwright, binaryen's wasm-opt)"
    (cd "$ROOT/end2end" && npm ci --no-audit --no-fund >/dev/null)
  fi
}

# Script jobs in the tests run `python3` inside the sandbox, whose PATH is /usr/local/bin:/usr/bin:/bin.
ensure_python3() {
  [ -x /usr/bin/python3 ] || [ -x /usr/local/bin/python3 ] || apt_install python3
  # The ONNX model zoo (scripts/zoo.sh) builds in a virtual environment.
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
}

# Schemathesis, for the JSON API's contract run (scripts/schemathesis.sh), in a virtual
# environment of its own. Pinned: a new release brings new checks, which would fail a build that
# changed nothing.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  ensure_python3
  command -v curl >/dev/null || apt_install curl
  SCHEMATHESIS_VENV="${AIEDGE_ST_VENV:-/var/tmp/aiedge-schemathesis}"
  SCHEMATHESIS="$SCHEMATHESIS_VENV/bin/schemathesis"
  if [ "$("$SCHEMATHESIS" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
    say "installing schemathesis $SCHEMATHESIS_VERSION in $SCHEMATHESIS_VENV"
    [ -x "$SCHEMATHESIS_VENV/bin/pip" ] || python3 -m venv "$SCHEMATHESIS_VENV"
    "$SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
}

# Prometheus and promtool: server/tests/metrics.rs starts a real Prometheus that scrapes a
# test server, and checks the exposition with promtool. Only the binaries: the package's own
# service is not needed (nor started, without systemd).
ensure_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  apt_install prometheus
}

ensure_chromium() {
  [ -x /usr/bin/chromium ] || apt_install chromium
}

wait_port() {
  local host=$1 port=$2 what=$3
  for _ in $(seq 1 120); do port_open "$host" "$port" && return 0; sleep 0.5; done
  die "$what did not come up on $host:$port"
}

ensure_rabbitmq() {
  if ! port_open 127.0.0.1 5672; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    say "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_port 127.0.0.1 5672 RabbitMQ
  fi
  # Each node gets a broker user of its own through the management API (server/src/broker_users.rs).
  if ! port_open 127.0.0.1 15672; then
    say "enabling RabbitMQ's management plugin (a broker user per node)"
    as_root rabbitmq-plugins enable rabbitmq_management >/dev/null \
      || die "cannot enable rabbitmq_management: run 'rabbitmq-plugins enable rabbitmq_management' as root"
    wait_port 127.0.0.1 15672 "RabbitMQ's management API"
  fi
}

ensure_postgres() {
  port_open 127.0.0.1 5432 && return 0
  ls /etc/postgresql/*/main >/dev/null 2>&1 || apt_install postgresql
  say "starting PostgreSQL"
  local version
  version=$(ls /etc/postgresql | sort -V | tail -1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 127.0.0.1 5432 PostgreSQL
  # Tests connect as postgres over TCP without a password (trust), as on the dev machines.
  if ! psql -h 127.0.0.1 -U postgres -c 'select 1' >/dev/null 2>&1; then
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    say "allowing trust auth on 127.0.0.1 for tests"
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
}

# Cross-building the agent (scripts/build-agents.sh): the Rust targets, and cargo-zigbuild with
# Zig as the C cross-compiler for ring and tract's assembly, from PyPI in a venv of their own.
# Running the ARM builds (scripts/agents_qemu_test.sh) takes qemu-user. Pinned, so a new Zig
# cannot break a build that changed nothing.
AGENT_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
CARGO_ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.17.1
ensure_cross_tools() {
  ensure_python3
  local installed
  installed=$(rustup target list --installed 2>/dev/null)
  for t in "${AGENT_TARGETS[@]}"; do
    grep -qx "$t" <<<"$installed" || { say "adding the $t target"; rustup target add "$t"; }
  done
  CROSS_VENV="${AIEDGE_CROSS_VENV:-/var/tmp/aiedge-cross}"
  local want="cargo-zigbuild==$CARGO_ZIGBUILD_VERSION ziglang==$ZIGLANG_VERSION"
  if [ "$(cat "$CROSS_VENV/.aiedge-packages" 2>/dev/null)" != "$want" ]; then
    say "installing $want in $CROSS_VENV"
    [ -x "$CROSS_VENV/bin/pip" ] || python3 -m venv "$CROSS_VENV"
    # shellcheck disable=SC2086
    "$CROSS_VENV/bin/pip" install --quiet --disable-pip-version-check $want
    echo "$want" > "$CROSS_VENV/.aiedge-packages"
  fi
  export PATH="$CROSS_VENV/bin:$PATH"
  command -v qemu-aarch64 >/dev/null && command -v qemu-arm >/dev/null || apt_install qemu-user
}
