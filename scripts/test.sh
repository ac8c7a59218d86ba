#!/usr/bin/env bash
# The whole test suite: unit and integration tests (real SQLite, PostgreSQL, RabbitMQ), then the
# release build, the browser journeys in Chromium and Schemathesis against the JSON API. Installs
# and starts what is missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust_tools
ensure_node_packages
ensure_chromium
ensure_python3
ensure_schemathesis
ensure_prometheus
ensure_postgres
ensure_rabbitmq
ensure_cross_tools

say "formatting (rustfmt.toml)"
cargo fmt --all --check || die "the tree is not formatted: run cargo fmt --all"

say "lints (clippy, warnings are errors)"
cargo clippy --tests --examples -p aiedge-core -p aiedge-store -p aiedge-services -p shared -p runner -p node-agent -p server -p app \
  -- -D warnings

say "ONNX model zoo: scikit-learn and PyTorch-style models with onnxruntime's outputs"
scripts/zoo.sh

# One profile for everything, so the tests and the browser run the same build.
say "unit and integration tests (release profile)"
# `app` is selected together with `server`, so it builds with the `ssr` feature the server
# turns on, and nothing compiles twice.
cargo test --release --no-fail-fast -p aiedge-core -p aiedge-store -p aiedge-services -p shared -p runner -p node-agent -p server -p app

say "building the site (server + WASM)"
cargo leptos build --release --precompress

say "agents for the edge: x86-64 and aarch64 (musl, static) and armv7 (glibc 2.31)"
scripts/build-agents.sh

say "the ARM agents under qemu: probe, and predict on the model zoo against x86-64"
scripts/agents_qemu_test.sh

say "edge deployment: a qemu aarch64 node runs a job, the one-line installer, the Ansible playbook"
scripts/edge_test.sh

say "deployment files, statically (no container engine here): Dockerfile, compose, systemd units"
scripts/check_deploy.sh

say "browser journeys (Playwright + Chromium)"
(cd end2end && npx playwright test)

say "API contract (Schemathesis against the release server's OpenAPI document)"
scripts/schemathesis.sh
say "all tests passed"
