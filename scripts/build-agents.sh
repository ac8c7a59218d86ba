#!/usr/bin/env bash
# Builds node-agent for the machines people own, with the size-tuned `agent` profile, into
# dist/agents (or $AIEDGE_AGENTS_OUT): one file per target, VERSION and SHA256SUMS. The server
# hands these out (`--agents-dir`, /install.sh, /agent/v1/download/{target}).
#
#   scripts/build-agents.sh                      # all three targets
#   scripts/build-agents.sh aarch64-unknown-linux-musl
#
# x86_64 and aarch64 are static (musl): one file runs on any Linux. armv7 (Raspberry Pi 2/3/4
# with a 32-bit OS) links glibc 2.31, so it runs on Raspberry Pi OS bullseye and newer: Rust's
# installer serves no armv7 musl standard library here. Zig (through cargo-zigbuild) is the C
# cross-compiler for ring and tract's assembly.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_cross_tools

out="${AIEDGE_AGENTS_OUT:-$ROOT/dist/agents}"
# A target directory of their own (CI keeps it outside the clone): cross builds share nothing
# with the host's, and a separate lock lets them run beside a host build.
target_dir="${AIEDGE_AGENTS_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${AGENT_TARGETS[@]}")
mkdir -p "$out"

for target in "${targets[@]}"; do
  case "$target" in
    x86_64-unknown-linux-musl | aarch64-unknown-linux-musl) zig_target="$target" ;;
    # The suffix is the glibc version zig links against (Raspberry Pi OS bullseye has 2.31).
    armv7-unknown-linux-gnueabihf) zig_target="$target.2.31" ;;
    *) die "unknown target $target (known: ${AGENT_TARGETS[*]})" ;;
  esac
  say "building node-agent for $target"
  CARGO_TARGET_DIR="$target_dir" cargo zigbuild --locked --profile agent -p node-agent --target "$zig_target"
  install -m 0755 "$target_dir/$target/agent/node-agent" "$out/node-agent-$target"
done

# The agent's version: the workspace's, as the server compares it with the nodes' reports.
cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="node-agent"))' \
  > "$out/VERSION"
(cd "$out" && sha256sum node-agent-* > SHA256SUMS)
say "agents in $out (version $(cat "$out/VERSION")):"
(cd "$out" && for f in node-agent-*; do awk -v f="$f" -v s="$(stat -c %s "$f")" 'BEGIN { printf "  %-44s %6.1f MB\n", f, s / 1e6 }'; done)
