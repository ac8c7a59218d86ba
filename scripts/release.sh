#!/usr/bin/env bash
# A release in dist/: the server binary, the site it serves, the agents for every target, the
# systemd units and examples, and SHA256SUMS over all of it.
#
#   scripts/release.sh          # then copy dist/ to the server, or build the image (deploy/)
#
# dist/
#   aiedge-server                       the server (glibc, x86-64: the build machine's)
#   site/                               the pages' files (LEPTOS_SITE_ROOT / --site-root)
#   agents/node-agent-<target>          what /install.sh downloads (--agents-dir), VERSION
#   deploy/                             install.sh, the systemd units and env examples
#   SHA256SUMS
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_rust_tools
ensure_node_packages

dist="$ROOT/dist"
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
say "building the server and the site"
cargo leptos build --release --precompress
say "building the agents"
AIEDGE_AGENTS_OUT="$dist/agents" scripts/build-agents.sh

say "assembling $dist"
rm -rf "$dist/site" "$dist/deploy"
install -m 0755 "$target_dir/release/server" "$dist/aiedge-server"
strip "$dist/aiedge-server"
# cargo-leptos writes the site under target/site (the workspace's site-root).
cp -r "$ROOT/target/site" "$dist/site"
mkdir -p "$dist/deploy/systemd"
install -m 0755 deploy/install.sh "$dist/deploy/install.sh"
install -m 0644 deploy/systemd/* "$dist/deploy/systemd/"
(cd "$dist" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)
say "release $(cat "$dist/agents/VERSION") in $dist ($(du -sh "$dist" | cut -f1)); verify with: (cd dist && sha256sum -c SHA256SUMS)"
