#!/usr/bin/env bash
# Sets up a fresh machine and runs every check and test outband has.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing dependencies"
bash scripts/install-deps.sh

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (the binaries the end-to-end tests start; same command as their harness)"
cargo build --locked -p outband-agent -p outband-gateway --bins

step "static appliance agent (x86_64 and aarch64 musl)"
cargo xtask dist --check-size

step "tests"
cargo nextest run --workspace --locked --profile "${NEXTEST_PROFILE:-ci}" --no-tests=fail
